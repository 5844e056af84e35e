r"""GPT-2 style decoder pretrained with causal LM.

Variants: tiny (seconds on a CPU), small (the benchmark shape), base (the reference size).

  python -m ptlm_jax.main --config=configs/gpt.py:tiny --workdir=runs/gpt
  python -m ptlm_jax.main --config=configs/gpt.py:small --workdir=runs/gpt-small --config.optim.lr=3e-4
"""
from ptlm_jax import config_lib


def get_config(variant: str = 'tiny'):
  return config_lib.base_config('gpt', variant)
