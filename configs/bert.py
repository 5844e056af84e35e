r"""BERT encoder pretrained with masked LM (15%, 80/10/10).

Variants: tiny (seconds on a CPU), small (the benchmark shape), base (the reference size).

  python -m ptlm_jax.main --config=configs/bert.py:tiny --workdir=runs/bert
  python -m ptlm_jax.main --config=configs/bert.py:small --workdir=runs/bert-small --config.optim.lr=3e-4
"""
from ptlm_jax import config_lib


def get_config(variant: str = 'tiny'):
  return config_lib.base_config('bert', variant)
