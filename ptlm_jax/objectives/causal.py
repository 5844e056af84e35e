"""Causal language modelling (GPT; Radford et al. 2018/2019) on packed rows.

Position i predicts token i+1 of the same document.  No loss is taken where the
prediction would cross into the next document or land in padding, and the model's
attention is limited to the document by its segment ids, so a packed row trains
exactly as its documents would one by one.

The EOS that ends a document *is* a target (predicted from the document's last token):
the model must learn to stop.  The EOS position itself predicts nothing (the next
token belongs to another document).  There is no BOS, so a document's first token is
never predicted, as in GPT-2's <|endoftext|>-separated training without a BOS.

Legend: B batch, L row length.
"""
from __future__ import annotations

import jax.numpy as jnp


def causal_lm(batch, rng):
  """(gpt inputs, targets_BxL, weights_BxL); deterministic (rng unused)."""
  del rng
  tokens_BxL = jnp.asarray(batch['tokens'])
  segments_BxL = jnp.asarray(batch['segment_ids'])
  pad_Bx1 = jnp.zeros_like(tokens_BxL[:, :1])
  next_tokens_BxL = jnp.concatenate([tokens_BxL[:, 1:], pad_Bx1], axis=1)
  next_segments_BxL = jnp.concatenate([segments_BxL[:, 1:], pad_Bx1], axis=1)
  same_doc_BxL = (segments_BxL > 0) & (next_segments_BxL == segments_BxL)
  inputs = {'tokens': tokens_BxL, 'segment_ids': segments_BxL,
            'positions': jnp.asarray(batch['positions'])}
  targets_BxL = jnp.where(same_doc_BxL, next_tokens_BxL, 0).astype(jnp.int32)
  return inputs, targets_BxL, same_doc_BxL.astype(jnp.float32)
