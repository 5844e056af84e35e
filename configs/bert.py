r"""BERT encoder pretrained with masked LM (15%, 80/10/10).

Variants: tiny (seconds on a CPU), small (the benchmark shape), base (BERT-base),
large (BERT-large, 340M: the handout's size; vocab 30522 as released).  base and large
train in bfloat16 with float32 master weights, scanned layers, remat 'dots' and the state
sharded over all devices (config_lib._fit_defaults).

  python -m ptlm_jax.main --config=configs/bert.py:tiny --workdir=runs/bert
  python -m ptlm_jax.main --config=configs/bert.py:small --workdir=runs/bert-small --config.optim.lr=3e-4
  python -m ptlm_jax.main.estimate --config=configs/bert.py:large --accelerator=tpu-v4 --tokens=137e9
"""
from ptlm_jax import config_lib

# Reference sizes beyond base: (model overrides), vocabularies as released.
REFERENCE = {
    'large': dict(d_model=1024, num_layers=24, num_heads=16, head_dim=64, d_ff=4096,
                  vocab_size=30522, max_len=512),
}


def get_config(variant: str = 'tiny'):
  if variant in REFERENCE:
    return config_lib.reference_config('bert', REFERENCE[variant])
  return config_lib.base_config('bert', variant)
