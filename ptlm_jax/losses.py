"""Weighted cross-entropy as sums, so that microbatches and devices add up exactly.

  sums = losses.weighted_cross_entropy(logits_BxTxV, targets_BxT, weights_BxT, z_loss=1e-4)
  loss = sums['loss'] / sums['weight']

Returns sums (never means): `loss` (cross-entropy, label smoothing included, z-loss
excluded), `z_loss` (z_loss * logsumexp(logits)^2, weighted), `weight` (sum of
weights) and `correct` (weighted count of argmax == target).  The train step
minimises (loss + z_loss) / weight; evaluation reports loss / weight, so perplexity
is exp(loss / weight) whatever z_loss is.

Legend: B batch, T target positions, V vocabulary.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def weighted_cross_entropy(logits_BxTxV: jax.Array, targets_BxT: jax.Array,
                           weights_BxT: jax.Array, z_loss: float = 0.0,
                           label_smoothing: float = 0.0) -> dict[str, jax.Array]:
  logits_BxTxV = logits_BxTxV.astype(jnp.float32)
  weights_BxT = weights_BxT.astype(jnp.float32)
  vocab = logits_BxTxV.shape[-1]
  log_z_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
  log_probs_BxTxV = logits_BxTxV - log_z_BxT[..., None]
  target_log_prob_BxT = jnp.take_along_axis(log_probs_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  if label_smoothing:
    # Cross-entropy against (1 - s) one-hot + s uniform, minus its minimum (the entropy of
    # that distribution) so that a perfect model scores 0, as in T5X.
    confidence, low = 1.0 - label_smoothing, label_smoothing / (vocab - 1)
    ce_BxT = -(confidence - low) * target_log_prob_BxT - low * log_probs_BxTxV.sum(-1)
    ce_BxT -= -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
  else:
    ce_BxT = -target_log_prob_BxT
  correct_BxT = (jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT).astype(jnp.float32)
  return {
      'loss': jnp.sum(ce_BxT * weights_BxT),
      'z_loss': jnp.sum(z_loss * jnp.square(log_z_BxT) * weights_BxT),
      'weight': jnp.sum(weights_BxT),
      'correct': jnp.sum(correct_BxT * weights_BxT),
  }
