"""Tiny model configs and packed batches shared by the tests/test_models_*.py files."""
import functools

import flax.linen as nn
import jax
import numpy as np

from ptlm_jax import config_lib, models
from ptlm_jax.models import stack


def tiny_config(family: str, **overrides):
  """A 2-layer, d_model 32 model config: compiles in about a second on one core."""
  m = config_lib.base_config(family, 'tiny').model
  m.update(vocab_size=128, d_model=32, num_heads=2, head_dim=16, d_ff=64, num_layers=2,
           num_decoder_layers=2, max_len=32, relative_buckets=8, relative_max_distance=16)
  m.update(overrides)
  return m


def init_params(model_config, seed: int = 0):
  """(model, unboxed params); init is jitted (one compile beats op-by-op dispatch)."""
  model = models.build_model(model_config)
  init = jax.jit(lambda rng: model.init(rng, **models.dummy_inputs(model_config, 2, 8)))
  return model, nn.unbox(init(jax.random.key(seed))['params'])


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


@functools.lru_cache(maxsize=None)
def family_params(family: str):
  """Unrolled params of `tiny_config(family)`, made once per test session.

  Params do not depend on attention_impl, remat or dtype, and scan_layers only stacks
  them (`stack.stack_layers`), so most tests build their variant's module and reuse these.
  """
  return init_params(tiny_config(family))[1]


def model_and_params(family: str, **overrides):
  """A jitted apply of the variant `overrides` with the family's shared params."""
  config = tiny_config(family, **overrides)
  params = family_params(family)
  if config.scan_layers:
    params = stack.stack_layers(params)
  model = models.build_model(config)
  return model, jax.jit(model.apply, static_argnames=('method', 'mutable', 'decode',
                                                        'deterministic')), params
