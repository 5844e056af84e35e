r"""T5 (v1.1 by default) encoder-decoder pretrained with span corruption.

Variants: tiny (seconds on a CPU), small (the benchmark shape), base (the reference size).

  python -m ptlm_jax.main --config=configs/t5.py:tiny --workdir=runs/t5
  python -m ptlm_jax.main --config=configs/t5.py:small --workdir=runs/t5-small --config.optim.lr=3e-4
"""
from ptlm_jax import config_lib


def get_config(variant: str = 'tiny'):
  return config_lib.base_config('t5', variant)
