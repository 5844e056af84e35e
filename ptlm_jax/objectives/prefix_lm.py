"""Prefix language modelling, for the decoder (gpt) and the encoder-decoder (t5).

Both follow T5's `prefix_lm` (`t5/data/preprocessors.py`, Raffel et al. 2020 sec.
3.2.3): each document's content (its tokens without the EOS that ends it) is split at
a point p drawn uniformly from [1, n-1] (`random_prefix_noise_mask`; p = 0 when the
content has fewer than 2 tokens).  T5 applies it to single documents, not to
concatenated text, so here it runs per document (segment) of the packed row.

- encoder-decoder (`encoder_decoder_prefix_lm`): prefix + EOS -> encoder, suffix + EOS
  -> decoder targets; the k-th document of the row is segment k on both sides, so a
  model that masks cross-attention by segment sees each pair on its own.  Every
  document fits: its encoder part is p+1 and its decoder part n-p+1 tokens, each at
  most the document's length (one pathological case, a 1-token document cut by the
  row end without its EOS, can push the last decoder EOS off a full row).
- decoder only (`decoder_prefix_lm`): the row keeps its layout; `prefix_mask` marks
  the first p tokens of each document, which attend bidirectionally among
  themselves, and the loss is taken only on predictions of suffix tokens (the first
  from the last prefix position), the document's EOS included.  T5X's decoder-only
  feature converter puts the prefix's EOS between prefix and suffix; there is no room
  for it in a fixed-length row, so the split is marked by the mask alone.

Legend: B batch, L row length, S encoder length, T decoder length.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ptlm_jax.data import vocab
from ptlm_jax.objectives import rows


def document_split(rng, tokens_L, segments_L, strip_eos: bool = True):
  """Per position: content length n and split point p of its document, and its index.

  Returns (content_len_L, split_L, position_L) where position is the index within the
  document.  With strip_eos a document's final EOS is not content.
  """
  size = tokens_L.shape[0] + 1  # segment ids are < L + 1
  real = segments_L > 0
  position_L = rows.positions_from_segments(segments_L)
  doc_len = rows.segment_sum(real.astype(jnp.int32), segments_L, size)
  ends_eos = rows.segment_sum(
      (rows.last_in_segment(segments_L) & (tokens_L == vocab.EOS_ID)).astype(jnp.int32),
      segments_L, size)
  content = doc_len - ends_eos * int(strip_eos)
  hi = jnp.maximum(content - 1, 0)
  lo = jnp.minimum(hi, 1)
  split = jax.random.randint(rng, (size,), lo, hi + 1)
  return content[segments_L], split[segments_L], position_L


def decoder_prefix_lm(batch, rng):
  """gpt prefix LM: (inputs with prefix_mask, targets_BxL, weights_BxL)."""
  tokens_BxL = jnp.asarray(batch['tokens'])
  segments_BxL = jnp.asarray(batch['segment_ids'])

  def one_row(key, tokens_L, segments_L):
    _, split_L, pos_L = document_split(key, tokens_L, segments_L)
    real = segments_L > 0
    prefix_mask_L = real & (pos_L < split_L)
    nxt_tokens = jnp.concatenate([tokens_L[1:], jnp.zeros((1,), tokens_L.dtype)])
    nxt_segments = jnp.concatenate([segments_L[1:], jnp.zeros((1,), segments_L.dtype)])
    same_doc = real & (nxt_segments == segments_L)
    # position i predicts token i+1: a suffix token when i+1 >= split
    weights_L = same_doc & (pos_L + 1 >= split_L)
    return prefix_mask_L, jnp.where(same_doc, nxt_tokens, 0), weights_L.astype(jnp.float32)

  keys = rows.per_row_keys(rng, tokens_BxL.shape[0])
  prefix_mask_BxL, targets_BxL, weights_BxL = jax.vmap(one_row)(keys, tokens_BxL, segments_BxL)
  inputs = {'tokens': tokens_BxL, 'segment_ids': segments_BxL,
            'positions': jnp.asarray(batch['positions']), 'prefix_mask': prefix_mask_BxL}
  return inputs, targets_BxL.astype(jnp.int32), weights_BxL


def split_row(tokens_L, segments_L, content_L, split_L, pos_L, inputs_length: int,
              targets_length: int):
  """Prefix + EOS of each document to the encoder, suffix + EOS to the decoder.

  Slots per position: [EOS before it (encoder), the token, EOS after it (decoder)].
  Returns (enc_tokens_S, enc_segments_S, targets_T, dec_segments_T).
  """
  real = segments_L > 0
  eos = jnp.full_like(tokens_L, vocab.EOS_ID)
  values = jnp.stack([eos, tokens_L, eos], axis=1)
  segs = jnp.stack([segments_L] * 3, axis=1)
  # encoder: the prefix, then EOS where the suffix starts (that position always exists:
  # split <= content - 1, or split = 0 and the document is its EOS alone)
  enc_keep = jnp.stack([real & (pos_L == split_L), real & (pos_L < split_L),
                        jnp.zeros_like(real)], axis=1)
  dec_keep = jnp.stack([jnp.zeros_like(real), real & (pos_L >= split_L) & (pos_L < content_L),
                        rows.last_in_segment(segments_L)], axis=1)
  enc_S, _ = rows.compact(values, enc_keep, inputs_length)
  enc_seg_S, _ = rows.compact(segs, enc_keep, inputs_length)
  tgt_T, _ = rows.compact(values, dec_keep, targets_length)
  dec_seg_T, _ = rows.compact(segs, dec_keep, targets_length)
  return enc_S, enc_seg_S, tgt_T, dec_seg_T


def encoder_decoder_prefix_lm(batch, rng, *, inputs_length: int, targets_length: int):
  """t5 prefix LM: (t5 inputs, targets_BxT, weights_BxT), one segment per document."""
  tokens_BxL = jnp.asarray(batch['tokens'])
  segments_BxL = jnp.asarray(batch['segment_ids'])

  def one_row(key, tokens_L, segments_L):
    content_L, split_L, pos_L = document_split(key, tokens_L, segments_L)
    parts = split_row(tokens_L, segments_L, content_L, split_L, pos_L, inputs_length,
                      targets_length)
    return rows.encoder_decoder_example(*parts)

  keys = rows.per_row_keys(rng, tokens_BxL.shape[0])
  return jax.vmap(one_row)(keys, tokens_BxL, segments_BxL)
