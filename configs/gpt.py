r"""GPT-2 style decoder pretrained with causal LM.

Variants: tiny (seconds on a CPU), small (the benchmark shape), base (GPT-2 124M shape,
our 32k vocabulary), gpt2 (GPT-2 124M as released), medium (GPT-2 355M), xl (GPT-2 XL,
1.5B: the handout's size) and gpt3 (GPT-3 175B, for the estimator); reference sizes use the
released vocabulary (50257).  base and larger train in bfloat16 with float32 master weights,
scanned layers, remat 'dots' and the state sharded over all devices (config_lib._fit_defaults).

  python -m ptlm_jax.main --config=configs/gpt.py:tiny --workdir=runs/gpt
  python -m ptlm_jax.main --config=configs/gpt.py:small --workdir=runs/gpt-small --config.optim.lr=3e-4
  python -m ptlm_jax.main.estimate --config=configs/gpt.py:xl --num_devices=16 --compile  # fit check
  python -m ptlm_jax.main.estimate --config=configs/gpt.py:gpt3 --accelerator=v100 --num_devices=10000 \
      --tokens=300e9 --mfu=0.197
"""
from ptlm_jax import config_lib

REFERENCE = {
    'gpt2': dict(d_model=768, num_layers=12, num_heads=12, head_dim=64, d_ff=3072,
                 vocab_size=50257, max_len=1024),
    'medium': dict(d_model=1024, num_layers=24, num_heads=16, head_dim=64, d_ff=4096,
                   vocab_size=50257, max_len=1024),
    'xl': dict(d_model=1600, num_layers=48, num_heads=25, head_dim=64, d_ff=6400,
               vocab_size=50257, max_len=1024),
    'gpt3': dict(d_model=12288, num_layers=96, num_heads=96, head_dim=128, d_ff=49152,
                 vocab_size=50257, max_len=2048, seq_len=2048, scan_layers=True),
}


def get_config(variant: str = 'tiny'):
  if variant in REFERENCE:
    return config_lib.reference_config('gpt', REFERENCE[variant])
  return config_lib.base_config('gpt', variant)
