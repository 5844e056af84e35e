r"""T5 encoder-decoder pretrained with span corruption (v1.1 by default).

Variants: tiny (seconds on a CPU), small (the benchmark shape), base (T5 v1.1-base),
large (T5 v1.1-large, 783M), 11b (the original T5 11B, v1.0: ReLU, tied embeddings: the
handout's size).  base and larger train in bfloat16 with float32 master weights, scanned
layers, remat 'dots' and the state sharded over all devices (config_lib._fit_defaults).

  python -m ptlm_jax.main --config=configs/t5.py:tiny --workdir=runs/t5
  python -m ptlm_jax.main --config=configs/t5.py:tiny --workdir=runs/t5-v10 \
      --config.model.activation=relu --config.model.tie_embeddings=True      # T5 v1.0
  python -m ptlm_jax.main.estimate --config=configs/t5.py:11b --accelerator=tpu-v4 --tokens=1e12
"""
from ptlm_jax import config_lib

REFERENCE = {
    'large': dict(d_model=1024, num_layers=24, num_decoder_layers=24, num_heads=16,
                  head_dim=64, d_ff=2816, vocab_size=32128),
    '11b': dict(d_model=1024, num_layers=24, num_decoder_layers=24, num_heads=128,
                head_dim=128, d_ff=65536, vocab_size=32128, activation='relu',
                tie_embeddings=True, scan_layers=True),
}


def get_config(variant: str = 'tiny'):
  if variant in REFERENCE:
    return config_lib.reference_config('t5', REFERENCE[variant])
  return config_lib.base_config('t5', variant)
