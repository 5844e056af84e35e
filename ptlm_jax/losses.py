"""Token-weighted cross-entropy as sums, and the metrics derived from them.

The train step never averages per device: each device (and each microbatch) returns
sums, the step adds them up across microbatches and `psum`s them across the data
axis, and divides once:

    sums = losses.weighted_cross_entropy(logits, targets, weights, z_loss=1e-4)
    sums = jax.lax.psum(sums, 'data')        # or a sum over microbatches
    loss = sums['loss'] / sums['weight']     # what the gradient follows
    metrics = losses.metrics_from_sums(sums)  # loss, accuracy, perplexity, z_loss

Semantics follow T5X (`t5x/losses.py`): z-loss adds `z_loss * log(Z)^2` per token
(T5X uses 1e-4); label smoothing puts 1 - s on the target and s / (V - 1) on every
other id and subtracts the entropy of that distribution, so a perfect model scores 0
(optax's `smooth_labels` instead spreads s over all V ids and subtracts nothing).
V is the logits' last axis (the model's padded vocabulary), as in T5X.

All arithmetic is float32 whatever the logits' dtype (bf16 logits are upcast first),
and log Z is a max-shifted logsumexp.

Legend: B batch, T target length, V vocabulary.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def weighted_cross_entropy(logits_BxTxV: jax.Array, targets_BxT: jax.Array,
                           weights_BxT: jax.Array, z_loss: float = 0.0,
                           label_smoothing: float = 0.0) -> dict[str, jax.Array]:
  """Sums over tokens, each token counted with its weight.

  Returns float32 scalars:
    loss     sum of w * (cross-entropy [smoothed] + z-loss): the training loss numerator
    z_loss   sum of w * z_loss * log(Z)^2 (already inside `loss`)
    nll      sum of w * -log p(target) (unsmoothed, no z-loss): for perplexity
    correct  sum of w * [argmax == target]
    weight   sum of w: the one denominator of all of the above
  """
  logits = logits_BxTxV.astype(jnp.float32)
  weights = weights_BxT.astype(jnp.float32)
  vocab_size = logits.shape[-1]
  log_z_BxT = jax.nn.logsumexp(logits, axis=-1)
  target_logit_BxT = jnp.take_along_axis(logits, targets_BxT[..., None].astype(jnp.int32),
                                         axis=-1)[..., 0]
  nll_BxT = log_z_BxT - target_logit_BxT
  if label_smoothing:
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab_size - 1)
    normalizing = -(confidence * jnp.log(confidence) +
                    (vocab_size - 1) * low * jnp.log(low + 1e-20))
    # sum_v q_v * (log Z - logit_v) without a one-hot [B, T, V]
    ce_BxT = (log_z_BxT - (confidence - low) * target_logit_BxT -
              low * jnp.sum(logits, axis=-1)) - normalizing
  else:
    ce_BxT = nll_BxT
  z_BxT = z_loss * jnp.square(log_z_BxT)
  correct_BxT = jnp.argmax(logits, axis=-1) == targets_BxT
  return {
      'loss': jnp.sum(weights * (ce_BxT + z_BxT)),
      'z_loss': jnp.sum(weights * z_BxT),
      'nll': jnp.sum(weights * nll_BxT),
      'correct': jnp.sum(weights * correct_BxT),
      'weight': jnp.sum(weights),
  }


def metrics_from_sums(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Divides the (already summed) numerators by the one token weight.

  perplexity = exp(token-weighted mean negative log-likelihood).
  """
  weight = jnp.maximum(sums['weight'], 1e-9)  # an all-padding batch reports 0, not NaN
  return {
      'loss': sums['loss'] / weight,
      'z_loss': sums['z_loss'] / weight,
      'accuracy': sums['correct'] / weight,
      'perplexity': jnp.exp(sums['nll'] / weight),
      'tokens': sums['weight'],
  }
