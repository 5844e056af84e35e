"""Task heads: a family backbone plus a small float32 output layer, for fine-tuning.

Every head is one module with parameters under `backbone/...` (exactly the family
model's tree, so pretrained params drop in: `params['backbone'] = pretrained`) and
`head/...`, which makes freezing / LoRA rules by path pattern simple.  Inputs are the
family's encoder inputs (T5: the encoder alone runs):

  model = models.build_model(config.model)   # config.model.head = 'sequence_classification'
  logits_BxC = model.apply({'params': p}, tokens, segment_ids, positions, token_types=None,
                           deterministic=True)

  sequence_classification  logits_BxC: pooled hidden state -> dropout -> dense.  Pooling
      (`model.pooling`): cls = BERT's pooler (dense + tanh on [CLS]; the first token for
      GPT / T5), last = hidden state of each row's last non-pad token (GPT), mean = mean
      over non-pad tokens (T5 encoder).
  token_classification     logits_BxLxC per token.
  question_answering       (start_logits_BxL, end_logits_BxL), extractive spans.

Legend: B batch, L length, D d_model, C classes.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ptlm_jax import families
from ptlm_jax.models import bert, gpt, layers, t5

BACKBONES = {'bert': bert.Bert, 'gpt': gpt.Gpt, 't5': t5.T5}


def _encode(backbone, family, tokens, segment_ids, positions, token_types, deterministic):
  if families.get(family).bidirectional:
    return backbone.encode(tokens, segment_ids, positions, token_types, deterministic)
  if families.get(family).decoder_only:
    return backbone.encode(tokens, segment_ids, positions, deterministic=deterministic)
  return backbone.encode(tokens, segment_ids, positions, deterministic)


def last_token_index(segment_ids_BxL: jax.Array) -> jax.Array:
  """Index of each row's last non-pad token (0 for an all-pad row)."""
  length = segment_ids_BxL.shape[1]
  positions_BxL = jnp.arange(length)[None, :]
  return jnp.max(jnp.where(segment_ids_BxL != 0, positions_BxL, 0), axis=1)


def mean_pool(h_BxLxD: jax.Array, segment_ids_BxL: jax.Array) -> jax.Array:
  weights_BxL = (segment_ids_BxL != 0).astype(h_BxLxD.dtype)
  total_BxD = layers.matmul('bld,bl->bd', h_BxLxD, weights_BxL, h_BxLxD.dtype)
  return total_BxD / jnp.maximum(weights_BxL.sum(axis=1, keepdims=True), 1.0)


class _Head(nn.Module):
  """Runs the backbone; subclasses turn hidden states into logits."""
  config: Any

  def hidden(self, tokens, segment_ids, positions, token_types, deterministic):
    c = self.config
    backbone = BACKBONES[c.family](c, name='backbone')
    h_BxLxD = _encode(backbone, c.family, tokens, segment_ids, positions, token_types,
                      deterministic)
    return backbone, h_BxLxD

  def output(self, features: int):
    c = self.config
    return layers.dense(c, features, ('embed', 'classes'), 'dense', use_bias=True,
                        float32_out=True, name='head')


class SequenceClassifier(_Head):

  @nn.compact
  def __call__(self, tokens, segment_ids, positions, token_types=None, deterministic=True):
    c = self.config
    backbone, h_BxLxD = self.hidden(tokens, segment_ids, positions, token_types, deterministic)
    if c.pooling == 'cls':
      pooled_BxD = backbone.pool(h_BxLxD) if families.get(c.family).bidirectional else h_BxLxD[:, 0]
    elif c.pooling == 'last':
      index_B = last_token_index(segment_ids)
      pooled_BxD = jnp.take_along_axis(h_BxLxD, index_B[:, None, None], axis=1)[:, 0]
    else:
      pooled_BxD = mean_pool(h_BxLxD, segment_ids)
    pooled_BxD = layers.Dropout(c.dropout_rate)(pooled_BxD, deterministic=deterministic)
    return self.output(c.num_classes)(pooled_BxD)


class TokenClassifier(_Head):

  @nn.compact
  def __call__(self, tokens, segment_ids, positions, token_types=None, deterministic=True):
    c = self.config
    _, h_BxLxD = self.hidden(tokens, segment_ids, positions, token_types, deterministic)
    h_BxLxD = layers.Dropout(c.dropout_rate)(h_BxLxD, deterministic=deterministic)
    return self.output(c.num_classes)(h_BxLxD)


class QuestionAnswering(_Head):

  @nn.compact
  def __call__(self, tokens, segment_ids, positions, token_types=None, deterministic=True):
    _, h_BxLxD = self.hidden(tokens, segment_ids, positions, token_types, deterministic)
    logits_BxLx2 = self.output(2)(h_BxLxD)
    return logits_BxLx2[..., 0], logits_BxLx2[..., 1]


HEADS = {
    'sequence_classification': SequenceClassifier,
    'token_classification': TokenClassifier,
    'question_answering': QuestionAnswering,
}
