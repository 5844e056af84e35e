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

`projected_cross_entropy(h, table, bias, targets, weights, ...)` is the same sums for
logits = h @ table.T + bias, computed a chunk of target positions at a time without
ever holding the [B, T, V] logits, and with the gradient computed in the same pass (the
train step's fused LM head, see the function).

Legend: B batch, T target length, V vocabulary, D d_model, C target positions per chunk,
N chunks.
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ptlm_jax.models import layers


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
  correct_BxT = first_argmax(logits) == targets_BxT
  return {
      'loss': jnp.sum(weights * (ce_BxT + z_BxT)),
      'z_loss': jnp.sum(weights * z_BxT),
      'nll': jnp.sum(weights * nll_BxT),
      'correct': jnp.sum(weights * correct_BxT),
      'weight': jnp.sum(weights),
  }


def first_argmax(logits_BxTxV: jax.Array) -> jax.Array:
  """jnp.argmax over the last axis (the first index of the maximum) as two plain reductions.

  XLA:CPU lowers argmax to a variadic reduce that took 4 % of a GPT training step here;
  max, then the smallest index holding it, is the same answer (NaN rows aside).
  """
  vocab = logits_BxTxV.shape[-1]
  max_BxTx1 = jnp.max(logits_BxTxV, axis=-1, keepdims=True)
  ids_V = jnp.arange(vocab, dtype=jnp.int32)
  return jnp.min(jnp.where(logits_BxTxV == max_BxTx1, ids_V, vocab), axis=-1)


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


# ---------------------------------------------------------------------------
# The fused LM head: vocabulary projection + cross-entropy, chunk by chunk.

def chunk_positions(batch: int, length: int, chunk_tokens: int) -> int:
  """C: the largest divisor of `length` with batch * C <= chunk_tokens (at least 1)."""
  fits = [c for c in range(1, length + 1) if length % c == 0 and batch * c <= chunk_tokens]
  return max(fits, default=1)


def batch_shards() -> int:
  """Into how many parts the device mesh in scope splits the logical 'batch' axis.

  Under jit with a mesh (`jax.set_mesh` and flax's logical axis rules, as the train step
  runs in `parallel.mode=mesh`) the loss sees the global batch but each device holds
  batch / shards rows; under pmap or without a mesh the batch seen is the device's (1).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return 1
  axes = nn.logical_to_mesh_axes(('batch',))[0]
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  return math.prod(mesh.shape[a] for a in axes if a in mesh.shape)


def _chunk_sums(h_BxCxD, table_VxD, bias_V, targets_BxC, weights_BxC, z_loss, label_smoothing,
                with_grads: bool):
  """The loss sums of one chunk and, with_grads, d(loss sum) / d(h, table.T, bias)."""
  vocab = table_VxD.shape[0]
  table_VxD = table_VxD.astype(h_BxCxD.dtype)
  logits_BxCxV = layers.einsum_f32('bcd,vd->bcv', h_BxCxD, table_VxD)
  if bias_V is not None:
    logits_BxCxV = logits_BxCxV + bias_V.astype(jnp.float32)
  targets_BxC = targets_BxC.astype(jnp.int32)
  weights_BxC = weights_BxC.astype(jnp.float32)
  max_BxCx1 = jnp.max(logits_BxCxV, axis=-1, keepdims=True)
  exp_BxCxV = jnp.exp(logits_BxCxV - max_BxCx1)
  sum_BxCx1 = jnp.sum(exp_BxCxV, axis=-1, keepdims=True)
  log_z_BxC = (max_BxCx1 + jnp.log(sum_BxCx1))[..., 0]
  target_logit_BxC = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
  nll_BxC = log_z_BxC - target_logit_BxC
  on, off = 1.0, 0.0  # the target distribution q: `on` + `off` at the target, `off` elsewhere
  if label_smoothing:
    confidence = 1.0 - label_smoothing
    off = label_smoothing / (vocab - 1)
    on = confidence - off
    normalizing = -(confidence * np.log(confidence) + (vocab - 1) * off * np.log(off + 1e-20))
    ce_BxC = (log_z_BxC - on * target_logit_BxC - off * jnp.sum(logits_BxCxV, axis=-1)
              - normalizing)
  else:
    ce_BxC = nll_BxC
  z_BxC = z_loss * jnp.square(log_z_BxC)
  ids_V = jnp.arange(vocab, dtype=jnp.int32)
  first_max_BxC = jnp.min(jnp.where(logits_BxCxV == max_BxCx1, ids_V, vocab), axis=-1)
  sums = {'loss': jnp.sum(weights_BxC * (ce_BxC + z_BxC)),
          'z_loss': jnp.sum(weights_BxC * z_BxC),
          'nll': jnp.sum(weights_BxC * nll_BxC),
          'correct': jnp.sum(weights_BxC * (first_max_BxC == targets_BxC)),
          'weight': jnp.sum(weights_BxC)}
  if not with_grads:
    return sums, None
  # d/dlogits of w * (ce + z_loss log_z^2) = w * (softmax * (1 + 2 z_loss log_z) - q)
  scale_BxCx1 = (weights_BxC * (1.0 + 2.0 * z_loss * log_z_BxC))[..., None] / sum_BxCx1
  q_BxCxV = jnp.where(ids_V == targets_BxC[..., None], on, 0.0) + off
  g_BxCxV = exp_BxCxV * scale_BxCx1 - weights_BxC[..., None] * q_BxCxV
  dbias_V = None if bias_V is None else jnp.sum(g_BxCxV, axis=(0, 1))
  # The two gradient matmuls take the model's compute dtype and accumulate in float32, as
  # the models' own matmuls (models/layers.matmul); dh returns in the compute dtype, the
  # chunks' table gradients add up in float32.
  g_BxCxV = g_BxCxV.astype(h_BxCxD.dtype)
  dh_BxCxD = layers.einsum_f32('bcv,vd->bcd', g_BxCxV, table_VxD).astype(h_BxCxD.dtype)
  # table.T's gradient, D x V: h.T @ g reads g in its own row-major order (g.T @ h made
  # XLA:CPU transpose the whole [B*C, V] block first).
  dtable_DxV = layers.einsum_f32('bcd,bcv->dv', h_BxCxD, g_BxCxV)
  return sums, (dh_BxCxD, dtable_DxV, dbias_V)


def _chunked(h_BxTxD, table_VxD, bias_V, targets_BxT, weights_BxT, z_loss, label_smoothing,
             chunk_tokens, with_grads):
  """Sums (and gradients) over every chunk of C target positions, all rows at once."""
  b, t, d = h_BxTxD.shape
  # Sized by the rows one device holds: from the global batch, GPT-2's 512 x 1024 recipe
  # on 8 devices would give 2-position chunks (a 512-trip loop) instead of 16.
  shards = batch_shards()
  c = chunk_positions(-(-b // shards), t, chunk_tokens)
  run = lambda h_BxCxD, targets_BxC, weights_BxC: _chunk_sums(
      h_BxCxD, table_VxD, bias_V, targets_BxC, weights_BxC, z_loss, label_smoothing, with_grads)
  if c == t:
    return run(h_BxTxD, targets_BxT, weights_BxT)
  # Chunks split the target axis, so the batch axis (sharded over data) stays whole.
  split = lambda x: jnp.moveaxis(x.reshape((b, t // c, c) + x.shape[2:]), 1, 0)
  zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(
      lambda: run(h_BxTxD[:, :c], targets_BxT[:, :c], weights_BxT[:, :c])[0]))
  zero_grads = (None if not with_grads else
                (jnp.zeros(table_VxD.shape[::-1], jnp.float32),
                 None if bias_V is None else jnp.zeros(bias_V.shape, jnp.float32)))

  def body(carry, xs):
    sums, grads = run(*xs)
    total = jax.tree.map(jnp.add, carry[0], sums)
    if not with_grads:
      return (total, None), None
    dh_BxCxD, dtable_DxV, dbias_V = grads
    dparams = (carry[1][0] + dtable_DxV, None if dbias_V is None else carry[1][1] + dbias_V)
    return (total, dparams), dh_BxCxD

  (sums, dparams), dh_NxBxCxD = jax.lax.scan(
      body, (zero_sums, zero_grads), (split(h_BxTxD), split(targets_BxT), split(weights_BxT)))
  if not with_grads:
    return sums, None
  dh_BxTxD = jnp.moveaxis(dh_NxBxCxD, 0, 1).reshape(h_BxTxD.shape)
  return sums, (dh_BxTxD,) + dparams


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _projected(h_BxTxD, table_VxD, bias_V, targets_BxT, weights_BxT, z_loss, label_smoothing,
               chunk_tokens):
  return _chunked(h_BxTxD, table_VxD, bias_V, targets_BxT, weights_BxT, z_loss, label_smoothing,
                  chunk_tokens, with_grads=False)[0]


def _projected_fwd(h_BxTxD, table_VxD, bias_V, targets_BxT, weights_BxT, z_loss, label_smoothing,
                   chunk_tokens):
  sums, (dh, dtable_DxV, dbias) = _chunked(h_BxTxD, table_VxD, bias_V, targets_BxT, weights_BxT,
                                           z_loss, label_smoothing, chunk_tokens, with_grads=True)
  grads = (dh, dtable_DxV.T.astype(table_VxD.dtype),
           None if dbias is None else dbias.astype(bias_V.dtype))
  return sums, (grads, targets_BxT, weights_BxT)


def _projected_bwd(z_loss, label_smoothing, chunk_tokens, residuals, ct_sums):
  del z_loss, label_smoothing, chunk_tokens
  (dh, dtable, dbias), targets_BxT, weights_BxT = residuals
  ct = ct_sums['loss']  # only 'loss' carries a gradient (see projected_cross_entropy)
  scaled = lambda g: None if g is None else g * ct.astype(g.dtype)
  return (scaled(dh), scaled(dtable), scaled(dbias),
          np.zeros(targets_BxT.shape, jax.dtypes.float0), jnp.zeros_like(weights_BxT))


_projected.defvjp(_projected_fwd, _projected_bwd)


def projected_cross_entropy(h_BxTxD: jax.Array, table_VxD: jax.Array, bias_V: jax.Array | None,
                            targets_BxT: jax.Array, weights_BxT: jax.Array, z_loss: float = 0.0,
                            label_smoothing: float = 0.0, chunk_tokens: int = 1024
                            ) -> dict[str, jax.Array]:
  """`weighted_cross_entropy(h @ table.T + bias, targets, weights, ...)`, the same sums.

  The vocabulary projection and the loss run together, C target positions (all B rows)
  at a time, C the largest divisor of T with B * C <= `chunk_tokens` (B the rows one
  device holds, `batch_shards`): the float32
  [B, C, V] logits of one chunk stay in cache and the [B, T, V] logits never exist.
  Under `jax.grad` the same pass also computes d(loss)/d(h, table, bias) (softmax - q
  from the chunk's logits, then the two matmuls), so nothing is recomputed and no
  logits are kept for the backward pass; the backward pass only scales them.  Only
  the `loss` sum has a gradient (the other sums are metrics).  The matmuls run in
  h's dtype with float32 accumulation, as the models' own output projection.
  """
  return _projected(h_BxTxD, table_VxD, bias_V, targets_BxT, weights_BxT, float(z_loss),
                    float(label_smoothing), int(chunk_tokens))
