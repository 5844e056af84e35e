"""Tiny model configs and packed batches shared by the tests/test_models_*.py files."""
import flax.linen as nn
import jax
import numpy as np

from ptlm_jax import config_lib, models


def tiny_config(family: str, **overrides):
  """A 2-layer, d_model 32 model config: compiles in about a second on one core."""
  m = config_lib.base_config(family, 'tiny').model
  m.update(vocab_size=128, d_model=32, num_heads=2, head_dim=16, d_ff=64, num_layers=2,
           num_decoder_layers=2, max_len=32, relative_buckets=8, relative_max_distance=16)
  m.update(overrides)
  return m


def init_params(model_config, seed: int = 0):
  model = models.build_model(model_config)
  variables = model.init(jax.random.key(seed), **models.dummy_inputs(model_config, 2, 8))
  return model, nn.unbox(variables['params'])


def packed_row(lengths, total: int, seed: int = 0, vocab: int = 128):
  """tokens, segment_ids, positions [1, total] for documents of `lengths`, then padding."""
  rng = np.random.RandomState(seed)
  tokens, segs, pos = (np.zeros((1, total), np.int32) for _ in range(3))
  start = 0
  for i, n in enumerate(lengths):
    tokens[0, start:start + n] = rng.randint(7, vocab, n)
    segs[0, start:start + n] = i + 1
    pos[0, start:start + n] = np.arange(n)
    start += n
  return tokens, segs, pos


def arange_positions(batch: int, length: int):
  return np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length)).copy()
