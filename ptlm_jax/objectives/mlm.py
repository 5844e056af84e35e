"""Masked language modelling: BERT (Devlin et al. 2019) and RoBERTa (Liu et al. 2019).

Follows `create_masked_lm_predictions` in google-research/bert
`create_pretraining_data.py`, moved on device:

- candidates are ordinary pieces only (ids in [FIRST_ORDINARY_ID, piece_count), or an HF
  tokenizer's `VocabInfo.ordinary_ids`): never padding, EOS, [CLS]/[SEP]/[MASK] or other
  specials, never a sentinel.
- `fixed` count mode (BERT): exactly min(max_predictions, max(1, round(n * rate)))
  positions per row, n = candidates in the row, uniformly at random (Python's
  round-half-to-even, as BERT under Python 3).  Differs from BERT in what n counts:
  BERT counts every token of the instance, [CLS] and [SEP] included.
- `bernoulli` mode (RoBERTa's dynamic masking): each candidate independently with
  probability `rate`.
- whole-word masking: a word is an ordinary piece that starts a word
  (`VocabInfo.word_start`, SentencePiece's '▁') with the non-starting pieces after
  it, never crossing a special token or a document.  Fixed mode fills the count the
  way BERT does: words in random order, each taken if it still fits, else skipped.
- of the chosen positions, `mask_token_rate` (0.8) become [MASK] (the tokenizer's:
  103 for an HF BERT), `random_token_rate` (0.1) a token uniform over the ordinary pieces
  (BERT draws from the whole vocabulary, specials included), the rest stay; decided per
  token.
- the loss counts exactly the chosen positions, through weights.

Static masking (original BERT): BERT writes `dupe_factor` copies of the data, each
masked once, and trains several epochs over them.  Here a row's mask comes from a key
derived from the row's content and a dupe index drawn in [0, dupe_factor): each time
the same row comes back it gets one of its dupe_factor fixed masks (dupe_factor = 1:
the same mask every epoch).  Rows recur only if the pipeline packs the same documents
into the same rows each epoch.  Dynamic masking (the default) draws a new mask each
time.

With `predict_positions` the objective also returns `predict_positions_BxP` (the
chosen positions, ascending, padded with 0 and weight 0), so BERT computes logits
only there; targets and weights are then [B, P], P = max_predictions.  In bernoulli
mode more than P may be chosen: a random P of them are kept (the rest stay unmasked).

Legend: B batch, L row length, P max predictions.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ptlm_jax.data import vocab
from ptlm_jax.objectives import rows


@dataclasses.dataclass(frozen=True)
class MlmSettings:
  """The MLM knobs (from config.objective) and vocabulary sizes."""
  piece_count: int
  rate: float = 0.15
  count_mode: str = 'fixed'          # fixed | bernoulli
  max_predictions: int = 20
  whole_word: bool = False
  predict_positions: bool = True
  mask_token_rate: float = 0.8
  random_token_rate: float = 0.1
  static: bool = False
  dupe_factor: int = 1
  seed: int = 0                      # static masking: base of the content-derived keys
  word_start: np.ndarray | None = dataclasses.field(default=None, compare=False)
  mask_id: int = vocab.MASK_ID
  # Sorted ids to mask and draw from; None: [FIRST_ORDINARY_ID, piece_count).
  ordinary_ids: np.ndarray | None = dataclasses.field(default=None, compare=False)


def _is_candidate(tokens_L, s: MlmSettings):
  if s.ordinary_ids is None:
    return (tokens_L >= vocab.FIRST_ORDINARY_ID) & (tokens_L < s.piece_count)
  table = np.zeros(s.piece_count + 1, bool)  # the last entry: every id past the pieces
  table[np.asarray(s.ordinary_ids)] = True
  return jnp.asarray(table)[jnp.clip(tokens_L, 0, s.piece_count)]


def _random_tokens(key, tokens_L, s: MlmSettings):
  if s.ordinary_ids is None:
    return jax.random.randint(key, tokens_L.shape, vocab.FIRST_ORDINARY_ID, s.piece_count,
                              tokens_L.dtype)
  ids = jnp.asarray(s.ordinary_ids, tokens_L.dtype)
  return ids[jax.random.randint(key, tokens_L.shape, 0, ids.shape[0])]


def fixed_counts(row_length: int, rate: float, max_predictions: int) -> np.ndarray:
  """BERT's num_to_predict for every candidate count 0..row_length (0 when none)."""
  return np.array([0] + [min(max_predictions, max(1, int(round(n * rate))), n)
                         for n in range(1, row_length + 1)], np.int32)


def row_hash(tokens_L: jax.Array) -> jax.Array:
  """A uint32 hash of a row's tokens (order-sensitive), for static masking keys."""
  x = tokens_L.astype(jnp.uint32) * jnp.uint32(0x9E3779B1)
  x = x + jnp.arange(tokens_L.shape[0], dtype=jnp.uint32) * jnp.uint32(0x85EBCA77)
  for shift, mult in ((16, 0x7FEB352D), (15, 0x846CA68B)):  # murmur-style finaliser
    x = (x ^ (x >> shift)) * jnp.uint32(mult)
  return jnp.sum(x ^ (x >> 16), dtype=jnp.uint32)


def _word_ids(tokens_L, segments_L, candidate_L, word_start):
  """1, 2, ... per word (a candidate run starting at a word-start piece), 0 elsewhere."""
  prev_cand = jnp.concatenate([jnp.array([False]), candidate_L[:-1]])
  prev_seg = jnp.concatenate([jnp.zeros((1,), segments_L.dtype), segments_L[:-1]])
  if word_start is None:
    starts = candidate_L
  else:
    table = jnp.asarray(word_start, bool)
    is_start = table[jnp.clip(tokens_L, 0, table.shape[0] - 1)]
    starts = candidate_L & (is_start | ~prev_cand | (prev_seg != segments_L))
  return jnp.where(candidate_L, jnp.cumsum(starts), 0)


def _greedy_words(key, word_id_L, count):
  """BERT's whole-word fill: words in random order, each taken if it still fits."""
  size = word_id_L.shape[0] + 1
  word_len = rows.segment_sum(jnp.ones_like(word_id_L), word_id_L, size)
  valid = (jnp.arange(size) > 0) & (word_len > 0)
  order = jnp.argsort(jnp.where(valid, jax.random.uniform(key, (size,)), 2.0))

  def step(total, w):
    take = valid[w] & (total + word_len[w] <= count)
    return total + jnp.where(take, word_len[w], 0), take

  # sequential by nature (a word fits or not given the ones taken before it); unrolled
  # so that an accelerator pays the per-iteration loop overhead L / 16 times, not L
  _, take_in_order = jax.lax.scan(step, jnp.int32(0), order, unroll=16)
  taken = jnp.zeros((size,), bool).at[order].set(take_in_order)
  return taken[word_id_L] & (word_id_L > 0)


def _choose(key, tokens_L, segments_L, s: MlmSettings, counts):
  """Bool [L]: the positions to predict."""
  candidate_L = _is_candidate(tokens_L, s)
  word_id_L = _word_ids(tokens_L, segments_L, candidate_L, s.word_start if s.whole_word else None)
  pick_key, cap_key = jax.random.split(key)
  if s.count_mode == 'fixed':
    count = counts[candidate_L.sum()]
    if s.whole_word:
      chosen_L = _greedy_words(pick_key, word_id_L, count)
    else:
      keys_L = jnp.where(candidate_L, jax.random.uniform(pick_key, tokens_L.shape), 2.0)
      chosen_L = candidate_L & (jnp.argsort(jnp.argsort(keys_L)) < count)
  else:
    word_u = jax.random.uniform(pick_key, (tokens_L.shape[0] + 1,))
    chosen_L = candidate_L & (word_u[word_id_L] < s.rate)
  if s.predict_positions:  # keep a random max_predictions of them
    keys_L = jnp.where(chosen_L, jax.random.uniform(cap_key, tokens_L.shape), 2.0)
    chosen_L &= jnp.argsort(jnp.argsort(keys_L)) < s.max_predictions
  return chosen_L


def masked_lm(batch, rng, *, settings: MlmSettings):
  """(bert inputs, targets, weights): [B, P] with predict_positions, else [B, L]."""
  s = settings
  tokens_BxL = jnp.asarray(batch['tokens'])
  segments_BxL = jnp.asarray(batch['segment_ids'])
  counts = jnp.asarray(fixed_counts(tokens_BxL.shape[1], s.rate, s.max_predictions))
  base_key = jax.random.PRNGKey(s.seed)

  def one_row(key, tokens_L, segments_L):
    if s.static:
      dupe = jax.random.randint(key, (), 0, s.dupe_factor)
      key = jax.random.fold_in(jax.random.fold_in(base_key, row_hash(tokens_L)), dupe)
    choose_key, kind_key, random_key = jax.random.split(key, 3)
    chosen_L = _choose(choose_key, tokens_L, segments_L, s, counts)
    u_L = jax.random.uniform(kind_key, tokens_L.shape)
    random_L = _random_tokens(random_key, tokens_L, s)
    masked_L = jnp.where(u_L < s.mask_token_rate, s.mask_id,
                         jnp.where(u_L < s.mask_token_rate + s.random_token_rate, random_L,
                                   tokens_L))
    inputs_L = jnp.where(chosen_L, masked_L, tokens_L)
    if not s.predict_positions:
      return inputs_L, None, jnp.where(chosen_L, tokens_L, 0), chosen_L.astype(jnp.float32)
    num_chosen = chosen_L.sum()
    valid_P = jnp.arange(s.max_predictions) < num_chosen
    order_L = jnp.argsort(~chosen_L, stable=True)
    if s.max_predictions > order_L.shape[0]:  # more predictions allowed than positions
      order_L = jnp.pad(order_L, (0, s.max_predictions - order_L.shape[0]))
    positions_P = order_L[:s.max_predictions]
    positions_P = jnp.where(valid_P, positions_P, 0)
    targets_P = jnp.where(valid_P, tokens_L[positions_P], 0)
    return inputs_L, positions_P, targets_P, valid_P.astype(jnp.float32)

  keys = rows.per_row_keys(rng, tokens_BxL.shape[0])
  inputs_BxL, positions_BxP, targets, weights = jax.vmap(one_row)(keys, tokens_BxL, segments_BxL)
  inputs = {'tokens': inputs_BxL.astype(jnp.int32), 'segment_ids': segments_BxL,
            'positions': jnp.asarray(batch['positions'])}
  if s.predict_positions:
    inputs['predict_positions'] = positions_BxP.astype(jnp.int32)
  return inputs, targets.astype(jnp.int32), weights
