"""Fixed-shape operations on packed token rows, shared by the objectives.

Every objective runs per row under `jax.vmap` inside the jitted train step, so a
"variable-length" operation (drop these tokens, insert a sentinel there, append EOS)
is written as a compaction into a fixed-size output: each input position offers a few
*slots* (e.g. [token, EOS after it]), a keep flag per slot says which survive, and the
survivors are scattered to the front of the output in order.  Everything past the
kept count is padding (0) with segment id 0.

Legend: L packed row length, S encoder length, T decoder length; `x3` = slots per
position.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ptlm_jax.data import vocab


def compact(values_LxK: jax.Array, keep_LxK: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
  """Moves kept slots (in row-major order) to the front of a [size] array.

  Returns (out_size, count).  Slots that would land at or past `size` are dropped;
  callers size their outputs so that this never happens (see each objective).
  """
  values, keep = values_LxK.reshape(-1), keep_LxK.reshape(-1)
  dest = jnp.cumsum(keep) - 1
  dest = jnp.where(keep, dest, size)  # an out-of-range index: dropped by the scatter
  out = jnp.zeros((size,), values.dtype).at[dest].set(values, mode='drop')
  return out, jnp.minimum(jnp.sum(keep), size)


def positions_from_segments(segment_ids_L: jax.Array) -> jax.Array:
  """0, 1, ... restarting wherever the segment id changes; 0 on padding (segment 0)."""
  idx_L = jnp.arange(segment_ids_L.shape[0])
  starts_L = jnp.concatenate([jnp.array([True]), segment_ids_L[1:] != segment_ids_L[:-1]])
  start_idx_L = jax.lax.cummax(jnp.where(starts_L, idx_L, 0))
  return jnp.where(segment_ids_L > 0, idx_L - start_idx_L, 0).astype(jnp.int32)


def shift_right(targets_T: jax.Array, segment_ids_T: jax.Array) -> jax.Array:
  """Decoder inputs: targets shifted right behind start id 0, restarting per segment."""
  prev_T = jnp.concatenate([jnp.zeros((1,), targets_T.dtype), targets_T[:-1]])
  prev_seg_T = jnp.concatenate([jnp.zeros((1,), segment_ids_T.dtype), segment_ids_T[:-1]])
  same = (segment_ids_T > 0) & (prev_seg_T == segment_ids_T)
  return jnp.where(same, prev_T, vocab.PAD_ID)


def segment_sum(values_L: jax.Array, segment_ids_L: jax.Array, num_segments: int) -> jax.Array:
  """Sums values per segment id: result[s] = sum of values where segment_ids == s."""
  return jnp.zeros((num_segments,), values_L.dtype).at[segment_ids_L].add(values_L)


def last_in_segment(segment_ids_L: jax.Array) -> jax.Array:
  """True at the last real position of each segment."""
  nxt_L = jnp.concatenate([segment_ids_L[1:], jnp.zeros((1,), segment_ids_L.dtype)])
  return (segment_ids_L > 0) & (nxt_L != segment_ids_L)


def left_align(tokens_L: jax.Array, segment_ids_L: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Real tokens moved to the front in order (padding after them) and their count."""
  real_L = segment_ids_L > 0
  order_L = jnp.argsort(~real_L, stable=True)
  return jnp.where(jnp.arange(tokens_L.shape[0]) < real_L.sum(), tokens_L[order_L], 0), real_L.sum()


def encoder_decoder_example(enc_tokens_S, enc_segments_S, targets_T, dec_segments_T):
  """Model inputs, targets and weights of a packed encoder-decoder example (one row)."""
  inputs = {
      'encoder_tokens': enc_tokens_S.astype(jnp.int32),
      'encoder_segment_ids': enc_segments_S.astype(jnp.int32),
      'encoder_positions': positions_from_segments(enc_segments_S),
      'decoder_tokens': shift_right(targets_T, dec_segments_T).astype(jnp.int32),
      'decoder_segment_ids': dec_segments_T.astype(jnp.int32),
      'decoder_positions': positions_from_segments(dec_segments_T),
  }
  return inputs, targets_T.astype(jnp.int32), (dec_segments_T > 0).astype(jnp.float32)


def per_row_keys(rng: jax.Array, batch_size: int) -> jax.Array:
  """One independent key per row, so a row's randomness does not depend on sharding."""
  return jax.random.split(rng, batch_size)
