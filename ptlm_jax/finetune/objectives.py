"""Fine-tuning objectives: task feature rows -> (model inputs, targets, weights), and losses.

The same interface as the pretraining objectives (INTERFACES.md, "Objectives"): pure,
jittable, `raw_length` = the feature row length, called by the loop once per row inside
`jax.vmap` (they work for any number of rows).  The rows come from `data/tasks.py`:

  Head('classification')  inputs tokens, segment_ids, positions, token_types; targets
                          label [B, 1], weight 1 per real row
  Head('ner')             same inputs; targets tags [B, L], weights tag_mask (first sub-words)
  Head('qa')              same inputs; targets spans [B, 2] (start, end), weights 1 per real row
  TextToText              encoder_* = the row, decoder_* = targets shifted right behind 0;
                          targets [B, T], weights target_segment_ids
  Continuation            tokens, segment_ids, positions; targets the next token [B, L],
                          weights loss_mask (the target part)

Head outputs that are not [B, T, V] logits get a loss for the loop's `Components.loss`
hook: `classification_loss` (logits [B, C] as one target position) and `span_loss`
(start and end logits as two target positions, so the loss is the mean of the two
cross-entropies, as BERT's SQuAD loss).

The loop initialises the model from a batch that has only tokens, segment_ids and
positions (`train.make_state_spec`); task fields missing from a batch read as zeros,
which gives that call the right shapes.

Legend: B rows, L row length, T target length, C classes.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ptlm_jax import families
from ptlm_jax.training import losses


def _field(batch, name: str, width: int | None = None) -> jax.Array:
  """batch[name], or zeros of [B, width] (default: the batch's row width, which
  data.length_buckets may make shorter than data.seq_len)."""
  if name in batch:
    return batch[name]
  return jnp.zeros((batch['tokens'].shape[0], width or batch['tokens'].shape[1]), jnp.int32)


def _real_rows_B(batch) -> jax.Array:
  return (batch['segment_ids'][:, 0] > 0).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Head:
  """A task head: classification (label), ner (tags) or qa (start and end)."""
  kind: str
  length: int

  @property
  def raw_length(self) -> int:
    return self.length

  inputs_length = raw_length

  @property
  def targets_length(self) -> int:
    return {'classification': 1, 'ner': self.length, 'qa': 2}[self.kind]

  def __call__(self, batch, rng):
    del rng  # deterministic
    inputs = {k: batch[k] for k in ('tokens', 'segment_ids', 'positions')}
    inputs['token_types'] = _field(batch, 'token_types')
    if self.kind == 'classification':
      return inputs, _field(batch, 'label', 1), _real_rows_B(batch)[:, None]
    if self.kind == 'ner':
      tag_mask_BxL = _field(batch, 'tag_mask').astype(jnp.float32)
      return inputs, _field(batch, 'tags'), tag_mask_BxL
    weights_Bx2 = jnp.repeat(_real_rows_B(batch)[:, None], 2, axis=1)
    return inputs, _field(batch, 'spans', 2), weights_Bx2


@dataclasses.dataclass(frozen=True)
class TextToText:
  """T5: the row is the encoder input; the decoder reads the targets shifted right."""
  length: int
  targets_length: int

  @property
  def raw_length(self) -> int:
    return self.length

  inputs_length = raw_length

  def __call__(self, batch, rng):
    del rng
    targets_BxT = _field(batch, 'targets', self.targets_length)
    segments_BxT = _field(batch, 'target_segment_ids', self.targets_length)
    start_Bx1 = jnp.zeros_like(targets_BxT[:, :1])  # decoder start id 0 (pad), as T5
    decoder_tokens_BxT = jnp.concatenate([start_Bx1, targets_BxT[:, :-1]], axis=1) * segments_BxT
    positions_BxT = jnp.arange(self.targets_length)[None, :] * segments_BxT
    inputs = dict(encoder_tokens=batch['tokens'], encoder_segment_ids=batch['segment_ids'],
                  encoder_positions=batch['positions'], decoder_tokens=decoder_tokens_BxT,
                  decoder_segment_ids=segments_BxT, decoder_positions=positions_BxT)
    return inputs, targets_BxT, segments_BxT.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Continuation:
  """GPT: prompt and target in one row; the loss is taken on the target tokens only."""
  length: int

  @property
  def raw_length(self) -> int:
    return self.length

  inputs_length = targets_length = raw_length

  def __call__(self, batch, rng):
    del rng
    tokens_BxL = batch['tokens']
    next_BxL = jnp.concatenate([tokens_BxL[:, 1:], jnp.zeros_like(tokens_BxL[:, :1])], axis=1)
    inputs = {k: batch[k] for k in ('tokens', 'segment_ids', 'positions')}
    return inputs, next_BxL, _field(batch, 'loss_mask').astype(jnp.float32)


def classification_loss(logits_BxC, targets_Bx1, weights_Bx1, **kwargs) -> dict:
  return losses.weighted_cross_entropy(logits_BxC[:, None, :], targets_Bx1, weights_Bx1, **kwargs)


def span_loss(outputs, targets_Bx2, weights_Bx2, **kwargs) -> dict:
  start_logits_BxL, end_logits_BxL = outputs
  logits_Bx2xL = jnp.stack([start_logits_BxL, end_logits_BxL], axis=1)
  return losses.weighted_cross_entropy(logits_Bx2xL, targets_Bx2, weights_Bx2, **kwargs)


def get_task_objective(config):
  """(objective, loss or None) for config.task and the model family."""
  t, length = config.task, config.data.seq_len
  if t.format == 'text':
    if families.get(config.model.family).encoder_decoder:
      return TextToText(length, t.target_length), None
    return Continuation(length), None
  loss = {'classification': classification_loss, 'qa': span_loss}.get(t.name)
  return Head(t.name, length), loss
