"""The model families (BERT, GPT-2, T5) and task heads, built from one `model` config group.

  model = models.build_model(config.model)
  variables = model.init({'params': rng}, **models.dummy_inputs(config.model))
  logits = model.apply({'params': nn.unbox(variables['params'])}, **inputs,
                       deterministic=False, rngs={'dropout': rng})

`param_count(config.model)` counts parameters without allocating them; `init_cache` and
`gather_cache` are what a generation loop needs (see INTERFACES.md, "Decoding");
`hf_import.from_pretrained(path)` loads HF checkpoints.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ptlm_jax import config_lib, families
from ptlm_jax.models import bert, gpt, heads, t5

FAMILIES = {'bert': bert.Bert, 'gpt': gpt.Gpt, 't5': t5.T5}


def build_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  """The family module (head 'lm' or 'none'), or the task head wrapping it.

  Raises ConfigError on an invalid config before anything is traced.
  """
  config_lib.validate_model(model_config)
  frozen = ml_collections.FrozenConfigDict(model_config)  # hashable module attribute
  if model_config.head in heads.HEADS:
    return heads.HEADS[model_config.head](frozen)
  return FAMILIES[model_config.family](frozen)


def dummy_inputs(model_config, batch_size: int = 1, length: int = 8,
                 encoder_length: int | None = None) -> dict:
  """Keyword inputs of the right structure for `init` / `eval_shape` (int32 ones)."""
  ones = lambda n: jnp.ones((batch_size, n), jnp.int32)
  if families.get(model_config.family).encoder_decoder and model_config.head in ('lm', 'none'):
    s = encoder_length or length
    return dict(encoder_tokens=ones(s), encoder_segment_ids=ones(s), encoder_positions=ones(s),
                decoder_tokens=ones(length), decoder_segment_ids=ones(length),
                decoder_positions=ones(length))
  return dict(tokens=ones(length), segment_ids=ones(length), positions=ones(length))


def abstract_params(model_config) -> dict:
  """Boxed ShapeDtypeStruct params of the model (nothing allocated)."""
  model = build_model(model_config)
  init = functools.partial(model.init, **dummy_inputs(model_config, length=2))
  return jax.eval_shape(init, jax.random.key(0))['params']


def param_count(model_config) -> int:
  """Number of parameters, counting tied embeddings once (as HF `num_parameters()`)."""
  leaves = jax.tree.leaves(nn.unbox(abstract_params(model_config)))
  return int(sum(np.prod(x.shape) for x in leaves))


def init_cache(model: nn.Module, batch_size: int, max_length: int,
               encoder_length: int | None = None) -> dict:
  """An empty decode cache for `batch_size` rows of up to `max_length` decoder tokens.

  T5 also needs `encoder_length` (S) for the cached cross-attention keys/values.  All
  arrays are zero and `index` is 0; every array except the scalar indices has its batch
  axis first (also with scan_layers).
  """
  inputs = dummy_inputs(model.config, batch_size, max_length, encoder_length)
  init = functools.partial(model.init, **inputs, decode=True)
  shapes = jax.eval_shape(init, jax.random.key(0))['cache']
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def gather_cache(cache: dict, rows: jax.Array) -> dict:
  """The cache of rows `rows` (e.g. to repeat rows into beams or to reorder beams)."""
  return jax.tree.map(lambda x: x if x.ndim == 0 else jnp.take(x, rows, axis=0), cache)
