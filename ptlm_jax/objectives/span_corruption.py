"""T5 span corruption (Raffel et al. 2020, sec. 3.1.4), as a fixed-shape jax function.

Follows `t5/data/preprocessors.py` of google-research/text-to-text-transfer-transformer:

- `random_spans_noise_mask`: num_noise = round(n * density) clipped to [1, n-1];
  num_spans = max(1, round(num_noise / mean)); noise and non-noise lengths are two
  uniformly random segmentations (T5's `_random_segmentation`), interleaved starting
  with non-noise; optional `random_roll` by an offset uniform in [0, max(n, 2)).
  The counts use float32 arithmetic with round-half-to-even exactly as T5's TF code
  does; they are precomputed into tables so that no device arithmetic can differ.
- `noise_span_to_unique_sentinel`: each noise span becomes one sentinel in the
  inputs, counting down from the top of the vocabulary (`VocabInfo.sentinel(i)`).
- targets: sentinel i followed by the tokens of noise span i, for every span.  This
  is T5's `nonnoise_span_to_unique_sentinel` whenever the mask starts with non-noise
  (always, without random_roll).  With random_roll the mask may start with noise;
  T5's function would then put the first span before sentinel 0 and shift every
  later sentinel by one against the inputs, so here sentinel i always names span i.
- EOS is appended to inputs and targets; `span_corruption_lengths` is T5's
  `random_spans_helper` (512 inputs -> 568 raw tokens, 114 targets).

Where it differs from T5's pipeline: T5 concatenates documents without separators
(`reduce_concat_tokens`) and corrupts each `split_tokens` chunk.  Here the chunk is
one packed row: its real tokens, in order, are one stretch of text (the EOS between
documents stays in the text and may be noised; the row's segment ids are not used),
so encoder and decoder each get a single segment (id 1) followed by padding.  Rows
shorter than the raw length (the pipeline's `pack` mode pads them) are corrupted at
their real length, like T5's short final chunks.

Legend: B batch, L raw row length, S encoder length, T decoder length.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ptlm_jax.data import vocab
from ptlm_jax.objectives import rows


def span_corruption_lengths(inputs_length: int, noise_density: float,
                            mean_span_length: float) -> tuple[int, int]:
  """(raw_length, targets_length) for encoder inputs of `inputs_length` tokens.

  T5's `random_spans_helper` with one sentinel per span on each side and EOS counted:
  the longest raw row whose corrupted inputs fit `inputs_length`, and the length of
  its targets.  (568, 114) for (512, 0.15, 3.0).
  """
  def lengths(tokens_length):
    num_noise = int(round(tokens_length * noise_density))
    num_spans = int(round(num_noise / mean_span_length))
    return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

  tokens_length = inputs_length - 1
  while lengths(tokens_length + 1)[0] <= inputs_length:
    tokens_length += 1
  _, targets_length = lengths(tokens_length)
  if noise_density == 0.5 and targets_length > inputs_length:  # T5's own adjustment
    tokens_length -= 1
    targets_length -= 1
  return tokens_length, targets_length


def noise_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
  """(num_noise, num_spans) for a row of `length` real tokens, in T5's float32 arithmetic."""
  length = max(length, 2)  # T5: "increase length to avoid degeneracy"
  num_noise = int(np.round(np.float32(length) * np.float32(noise_density)))
  num_noise = min(max(num_noise, 1), length - 1)
  num_spans = int(np.round(np.float32(num_noise) / np.float32(mean_span_length)))
  return num_noise, max(num_spans, 1)


@dataclasses.dataclass(frozen=True)
class SpanShapes:
  """Static sizes of one span-corruption setting (see `span_shapes`)."""
  raw_length: int       # real tokens a row may use
  inputs_length: int    # longest corrupted inputs, EOS included
  targets_length: int   # longest targets, EOS included
  max_spans: int        # most sentinels a row needs
  counts: np.ndarray    # int32 [raw_length + 1, 2]: (num_noise, num_spans) per real length


def span_shapes(inputs_budget: int, noise_density: float, mean_span_length: float,
                random_roll: bool) -> SpanShapes:
  """Raw length and output sizes that hold for every row length up to the raw length.

  Starts from T5's helper (float64 arithmetic) and checks it against the float32
  counts the mask actually uses; a roll can split one span in two at the row's ends,
  so with random_roll one more sentinel is allowed for on both sides.
  """
  raw, _ = span_corruption_lengths(inputs_budget, noise_density, mean_span_length)
  extra = int(random_roll)

  def sizes(n):
    if n == 0:
      return 0, 0, 0
    num_noise, num_spans = noise_counts(n, noise_density, mean_span_length)
    num_noise = min(num_noise, n)  # n == 1: T5 masks a length-2 row, keeps one position
    spans = num_spans + extra
    return n - num_noise + spans + 1, num_noise + spans + 1, spans

  while raw > 1 and sizes(raw)[0] > inputs_budget:
    raw -= 1
  all_sizes = np.array([sizes(n) for n in range(raw + 1)])
  counts = np.array([noise_counts(n, noise_density, mean_span_length) for n in range(raw + 1)],
                    np.int32)
  return SpanShapes(raw, int(all_sizes[:, 0].max()), int(all_sizes[:, 1].max()),
                    int(all_sizes[:, 2].max()), counts)


# ---------------------------------------------------------------------------
# The noise mask, one row at a time.

def segment_lengths(first_in_segment: jax.Array, num_items: jax.Array) -> jax.Array:
  """T5's segment lengths from its padded `first_in_segment` indicator.

  first_in_segment: int [N], 1 where an item starts a new segment (index 0 is the
  pad T5 adds, always 0).  Returns int32 [N]: lengths of segments 0, 1, ...; 0 after.
  """
  size = first_in_segment.shape[0]
  segment_id = jnp.cumsum(first_in_segment)
  return rows.segment_sum((jnp.arange(size) < num_items).astype(jnp.int32), segment_id, size)


def random_segmentation(rng: jax.Array, num_items: jax.Array, num_segments: jax.Array,
                        size: int) -> jax.Array:
  """Splits num_items into num_segments non-empty segments, all splits equally likely.

  T5 shuffles a vector with (num_segments - 1) ones among (num_items - 1) cut slots;
  ranking uniform keys picks the same uniformly random subset of slots.
  """
  keys = jax.random.uniform(rng, (size - 1,))
  keys = jnp.where(jnp.arange(size - 1) < num_items - 1, keys, 2.0)
  rank = jnp.argsort(jnp.argsort(keys))
  is_cut = (rank < num_segments - 1).astype(jnp.int32)
  return segment_lengths(jnp.concatenate([jnp.zeros((1,), jnp.int32), is_cut]), num_items)


def spans_to_mask(nonnoise_lengths: jax.Array, noise_lengths: jax.Array, size: int) -> jax.Array:
  """T5's interleave: non-noise span 0, noise span 0, non-noise span 1, ... -> bool [size].

  Lengths past the last span are 0; positions past the row's end are meaningless
  (callers mask them off).
  """
  interleaved = jnp.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
  span_starts = jnp.cumsum(interleaved)[:-1]
  indicator = jnp.zeros((size,), jnp.int32).at[span_starts].add(1, mode='drop')
  return jnp.cumsum(indicator) % 2 == 1


def random_spans_noise_mask(rng: jax.Array, length: jax.Array, size: int, num_noise: jax.Array,
                            num_spans: jax.Array, random_roll: bool) -> jax.Array:
  """T5's `random_spans_noise_mask` for a row of `length` real tokens, as bool [size].

  num_noise, num_spans: from `noise_counts(length, ...)` (looked up by the caller).
  Positions at or past `length` are never noise.
  """
  size2 = max(size, 2)
  padded_length = jnp.maximum(length, 2)
  noise_rng, nonnoise_rng, roll_rng = jax.random.split(rng, 3)
  noise_lengths = random_segmentation(noise_rng, num_noise, num_spans, size2)
  nonnoise_lengths = random_segmentation(nonnoise_rng, padded_length - num_noise, num_spans, size2)
  mask = spans_to_mask(nonnoise_lengths, noise_lengths, size2)[:size]
  idx = jnp.arange(size)
  mask &= idx < length
  if random_roll:
    offset = jax.random.randint(roll_rng, (), 0, padded_length)
    source = (idx - offset) % jnp.maximum(length, 1)
    mask = mask[source] & (idx < length)
  return mask


# ---------------------------------------------------------------------------
# Inputs and targets of one row.

def sentinel_inputs_targets(tokens_L, noise_L, length, top_id: int, inputs_length: int,
                            targets_length: int):
  """Inputs (noise spans -> one sentinel each, + EOS) and targets (sentinel i + span i
  for each span, + EOS), left-aligned in [inputs_length] and [targets_length].

  top_id: id of sentinel 0 (sentinel i is top_id - i), or an int array of the ids of
  span 0, 1, ... (`sentinel_ids`).  Returns (inputs_S, inputs_count, targets_T,
  targets_count).
  """
  idx = jnp.arange(tokens_L.shape[0])
  prev_noise = jnp.concatenate([jnp.array([False]), noise_L[:-1]])
  first_noise = noise_L & ~prev_noise
  if isinstance(top_id, (int, np.integer)):
    sentinel = top_id + 1 - jnp.cumsum(first_noise)
  else:
    ids = jnp.asarray(top_id, tokens_L.dtype)
    sentinel = ids[jnp.clip(jnp.cumsum(first_noise) - 1, 0, ids.shape[0] - 1)]
  real = idx < length
  eos_here = idx == length - 1
  eos = jnp.full_like(tokens_L, vocab.EOS_ID)
  # inputs: [token or sentinel, EOS after the last real token]
  in_values = jnp.stack([jnp.where(first_noise, sentinel, tokens_L), eos], axis=1)
  in_keep = jnp.stack([real & (~noise_L | first_noise), eos_here], axis=1)
  # targets: [sentinel before a span, noise token, EOS after the last real token]
  tg_values = jnp.stack([sentinel, tokens_L, eos], axis=1)
  tg_keep = jnp.stack([first_noise, noise_L, eos_here], axis=1)
  inputs_S, n_in = rows.compact(in_values, in_keep, inputs_length)
  targets_T, n_tg = rows.compact(tg_values, tg_keep, targets_length)
  return inputs_S, n_in, targets_T, n_tg


def sentinel_ids(vocab_info: vocab.VocabInfo, spans: int, skip: tuple[int, ...] = ()) -> np.ndarray:
  """int32 [spans]: the id span k is replaced by, sentinels in order, those in `skip` left out."""
  indices = [i for i in range(spans + len(skip)) if i not in skip][:spans]
  return np.array([vocab_info.sentinel(i) for i in indices], np.int32)


def corrupt_row(rng, tokens_L, length, num_noise, num_spans, *, top_id, random_roll: bool,
                inputs_length: int, targets_length: int):
  """Span-corrupts the first `length` tokens of a left-aligned row."""
  noise_L = random_spans_noise_mask(rng, length, tokens_L.shape[0], num_noise, num_spans,
                                    random_roll)
  return sentinel_inputs_targets(tokens_L, noise_L, length, top_id, inputs_length,
                                 targets_length)


def span_corruption(batch, rng, *, vocab_info: vocab.VocabInfo, shapes: SpanShapes,
                    random_roll: bool, inputs_length: int, targets_length: int):
  """The objective: packed batch [B, L] -> (t5 inputs, targets_BxT, weights_BxT)."""
  tokens_BxL = jnp.asarray(batch['tokens'])[:, :shapes.raw_length]
  segments_BxL = jnp.asarray(batch['segment_ids'])[:, :shapes.raw_length]
  counts = jnp.asarray(shapes.counts)

  def one_row(key, tokens_L, segments_L):
    tokens_L, length = rows.left_align(tokens_L, segments_L)
    num_noise, num_spans = counts[length, 0], counts[length, 1]
    inputs_S, n_in, targets_T, n_tg = corrupt_row(
        key, tokens_L, length, num_noise, num_spans,
        top_id=sentinel_ids(vocab_info, max(shapes.max_spans, 1)),
        random_roll=random_roll, inputs_length=inputs_length, targets_length=targets_length)
    return rows.encoder_decoder_example(
        inputs_S, (jnp.arange(inputs_length) < n_in).astype(jnp.int32),
        targets_T, (jnp.arange(targets_length) < n_tg).astype(jnp.int32))

  keys = rows.per_row_keys(rng, tokens_BxL.shape[0])
  return jax.vmap(one_row)(keys, tokens_BxL, segments_BxL)
