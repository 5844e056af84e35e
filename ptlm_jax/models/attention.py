"""Multi-head attention shared by every family: masks from segment ids, two kernels, KV cache.

Masks are boolean [B, 1, T, S] and come from segment ids only (0 = padding): a query
attends a key when both carry the same segment id; causal attention adds key slot <=
query slot; a prefix-LM prefix attends bidirectionally inside its own document; cross
attention matches decoder and encoder segment ids.  A packed row therefore never
attends across documents.  Masked logits get a large finite negative (not -inf), so
fully masked rows (padding) give finite outputs and gradients.

Two kernels behind one call (`dot_product_attention`): the plain einsum path (q scaled
first, + bias, float32 softmax; also the one with attention-probability dropout) and
`jax.nn.dot_product_attention`, whose `implementation` follows `model.attention_impl`
(auto: cuDNN flash attention on a GPU in bf16/fp16 with head_dim % 8 == 0 and <= 128,
the einsum path otherwise: the XLA implementation of `jax.nn.dot_product_attention`
adds [B, H, T, S] transposes).  Each stack builds what its layers get once
(`stack_mask`):
  * einsum path: an additive float32 bias (`additive_bias`: 0 where allowed, NEG_INF where
    masked; T5 folds its relative-position bias in too).  A per-layer select after the
    scaled matmul cost a pass over [B, H, T, S] in every layer, forward and backward; an
    added bias fuses with the softmax's max / subtract / exp (as HF does).
  * fused kernel: the boolean mask itself (segment ids), with `is_causal=True` for causal
    rows outside decoding (the kernel's own causal mask), and as `bias` only T5's learned
    relative-position bias.  A float bias carrying the mask would make cuDNN compute a
    bias gradient in every layer.

Decode mode (a `cache` collection):
  * `DecodeState` lives once per decoder stack: `index` (next slot to write, a scalar),
    `segment_ids` and `positions` of every slot ([B, L]).  It builds the mask (and T5's
    relative positions) of the current chunk against all L slots.
  * each self-attention layer keeps `cached_key` / `cached_value` ([B, H, L, K]: heads
    first, see `_self_cache`) and writes the chunk's keys at `index`; each
    cross-attention layer keeps the encoder's ([B, H, S, K]), computed once when the
    encoder output is passed in.
A chunk may hold several tokens (a prompt) or one (a step).  Slots never written keep
segment id 0 and are masked, so right-padded prompts of different lengths share one
cache: each row simply continues at its own position.

Prefix tuning (`model.prefix_length` E > 0; Li & Liang 2021): every self-attention layer
(BERT, GPT, both T5 stacks; not cross-attention) owns E learned key/value slots that are
joined in front of its keys/values and attended by every query (mask True, no causal
limit, T5 relative bias 0: the slots have no position).  They are parameters, not cache
entries, so decoding joins them to the cached keys/values on every call unchanged.  With
`model.prefix_hidden` > 0 they are reparameterised as MLP(embedding) (a per-layer
E x D table -> dense -> tanh -> dense to 2 x H x K), which trains more stably.

Legend: B batch, T query length, S key length, L cache length, D d_model, H heads,
K head_dim, E prefix slots, G prefix MLP width.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ptlm_jax.models import layers

PREFIX_INIT_STD = 0.02  # prefix slots start as small as the models' own weights
# Large finite negative for masked logits: exp() underflows to 0, but a fully masked row
# stays finite (uniform weights) instead of producing NaN as -inf would.
NEG_INF = -1e10


def segment_mask(q_segment_ids_BxT: jax.Array, k_segment_ids_BxS: jax.Array) -> jax.Array:
  """Query attends key iff both are in the same segment (padding pairs with padding)."""
  return (q_segment_ids_BxT[:, None, :, None] == k_segment_ids_BxS[:, None, None, :])


def causal_mask(q_slots_BxT: jax.Array, k_slots_BxS: jax.Array) -> jax.Array:
  """Key slot <= query slot (slots: index in the row, or in the KV cache)."""
  return q_slots_BxT[:, None, :, None] >= k_slots_BxS[:, None, None, :]


def decoder_mask(q_segment_ids_BxT, k_segment_ids_BxS, q_slots_BxT, k_slots_BxS,
                 q_prefix_BxT=None, k_prefix_BxS=None) -> jax.Array:
  """Causal mask within documents; prefix positions also see the rest of their prefix."""
  allowed_Bx1xTxS = causal_mask(q_slots_BxT, k_slots_BxS)
  if q_prefix_BxT is not None:
    allowed_Bx1xTxS |= (q_prefix_BxT[:, None, :, None] & k_prefix_BxS[:, None, None, :])
  return allowed_Bx1xTxS & segment_mask(q_segment_ids_BxT, k_segment_ids_BxS)


def additive_bias(mask_Bx1xTxS: jax.Array, bias_BxHxTxS: jax.Array | None = None) -> jax.Array:
  """A float32 bias carrying the mask: `bias` (or 0) where allowed, NEG_INF where masked.

  Stacks call this once and pass the result to every layer in place of the mask.
  """
  allowed = jnp.zeros((), jnp.float32) if bias_BxHxTxS is None else bias_BxHxTxS.astype(
      jnp.float32)
  return jnp.where(mask_Bx1xTxS, allowed, NEG_INF)


def _sum_bias(mask_bias_Bx1xTxS, bias_BxHxTxS):
  mask_bias_Bx1xTxS = mask_bias_Bx1xTxS.astype(jnp.float32)
  if bias_BxHxTxS is None:
    return mask_bias_Bx1xTxS
  return mask_bias_Bx1xTxS + bias_BxHxTxS.astype(jnp.float32)


def fused_implementation(config, deterministic: bool = True) -> str | None:
  """jax.nn.dot_product_attention's `implementation` for this config and platform (None:
  the einsum path).  Attention dropout in training takes the einsum path (the fused
  kernels have no dropout)."""
  dropout = not deterministic and config.attention_dropout_rate > 0
  if config.attention_impl == 'einsum' or dropout:
    return None
  if config.attention_impl in ('xla', 'cudnn'):
    return config.attention_impl
  cudnn_ok = (jax.default_backend() == 'gpu'
              and jnp.dtype(config.dtype) in (jnp.bfloat16, jnp.float16)
              and config.head_dim % 8 == 0 and config.head_dim <= 128)
  return 'cudnn' if cudnn_ok else None


def stack_mask(config, allowed_Bx1xTxS: jax.Array, deterministic: bool,
               bias_BxHxTxS: jax.Array | None = None) -> jax.Array:
  """What a stack passes its layers as the mask, computed once per stack.

  The fused kernel gets the boolean mask itself (cuDNN then computes no gradient for it;
  a float bias carrying the mask would get one in every layer); the einsum path gets the
  additive float32 bias (`additive_bias`, with `bias` folded in when given).
  """
  if fused_implementation(config, deterministic) is not None:
    return allowed_Bx1xTxS
  return additive_bias(allowed_Bx1xTxS, bias_BxHxTxS)


def dot_product_attention(config, q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_Bx1xTxS,
                          bias_BxHxTxS=None, *, scale: float, dropout_rng=None,
                          deterministic: bool = True, is_causal: bool = False) -> jax.Array:
  """softmax(scale * q k^T + bias, masked) v, in float32 softmax; returns [B, T, H, K].

  `mask_Bx1xTxS` is a boolean mask, or a float additive bias that already carries it
  (`additive_bias`), to which `bias_BxHxTxS` (if any) is added.  `is_causal` (boolean
  masks only) adds key slot <= query slot, slots counted from 0 on both sides (no cache).
  Uses `jax.nn.dot_product_attention` when `fused_implementation` picks one.
  """
  rate = config.attention_dropout_rate
  use_dropout = not deterministic and rate > 0.0
  is_mask = mask_Bx1xTxS.dtype == jnp.bool_
  implementation = fused_implementation(config, deterministic)
  if is_causal and not (is_mask and implementation is not None):
    if not is_mask:
      raise ValueError('is_causal needs a boolean mask')
    t, s = q_BxTxHxK.shape[1], k_BxSxHxK.shape[1]
    mask_Bx1xTxS = mask_Bx1xTxS & jnp.tril(jnp.ones((t, s), bool))
    is_causal = False
  if implementation is not None:
    if is_mask:  # the mask stays boolean; only a learned bias (T5's) is a float bias
      mask = mask_Bx1xTxS
      bias = None if bias_BxHxTxS is None else bias_BxHxTxS.astype(q_BxTxHxK.dtype)
    else:
      mask, bias = None, _sum_bias(mask_Bx1xTxS, bias_BxHxTxS).astype(q_BxTxHxK.dtype)
    call = lambda impl: jax.nn.dot_product_attention(
        q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, bias=bias, mask=mask, scale=scale,
        is_causal=is_causal, implementation=impl)
    if config.attention_impl == 'auto' and implementation == 'cudnn':
      try:  # cuDNN rejects some shapes at trace time; XLA takes every shape.
        return call('cudnn')
      except (ValueError, NotImplementedError, RuntimeError):
        implementation = 'xla'
    return call(implementation)

  bias_BxHxTxS = (additive_bias(mask_Bx1xTxS, bias_BxHxTxS) if is_mask
                  else _sum_bias(mask_Bx1xTxS, bias_BxHxTxS))
  # Scale q (B T H K) rather than the logits (B H T S), and add the float32 bias that
  # carries the mask: XLA fuses the add into the softmax's max / subtract / exp.
  q_BxTxHxK = q_BxTxHxK * jnp.asarray(scale, q_BxTxHxK.dtype)
  # Both matmuls take compute-dtype inputs and accumulate in float32 (layers.matmul).
  logits_BxHxTxS = layers.matmul('bthk,bshk->bhts', q_BxTxHxK, k_BxSxHxK, q_BxTxHxK.dtype,
                                 jnp.float32, name=layers.ATTENTION) + bias_BxHxTxS
  weights_BxHxTxS = jax.nn.softmax(logits_BxHxTxS, axis=-1)
  if use_dropout:
    weights_BxHxTxS = layers.dropout(weights_BxHxTxS, dropout_rng, rate)
  return layers.matmul('bhts,bshk->bthk', weights_BxHxTxS, v_BxSxHxK, v_BxSxHxK.dtype,
                       name=layers.ATTENTION)


class Attention(nn.Module):
  """Multi-head attention: query / key / value / out projections around the kernel.

  Self-attention passes `kv_BxSxD=x_BxTxD`; cross-attention passes the encoder output.
  In decode mode, self-attention writes this chunk's keys/values into the cache at
  `cache_index` and attends over all cached slots; cross-attention caches the encoder's
  keys/values when `kv_BxSxD` is given and reads them back when it is None.
  With `prefix_length` > 0, self-attention joins its learned `Prefix` slots to `k`/`v`
  (and the mask, and the bias) right before `dot_product_attention`.  The stacks pass
  `additive_bias(...)` (float, [B, 1, T, S] or T5's [B, H, T, S]) as the mask and no bias.
  """
  config: Any
  cross: bool = False
  deterministic: bool = True
  decode: bool = False
  is_causal: bool = False  # the (boolean) mask still lacks key slot <= query slot

  @nn.compact
  def __call__(self, x_BxTxD, kv_BxSxD, mask_Bx1xTxS, bias_BxHxTxS=None, cache_index=None):
    c = self.config
    is_causal = self.is_causal
    proj = lambda role, name: layers.dense(c, (c.num_heads, c.head_dim), ('embed', 'heads', 'kv'),
                                           role, name=name)
    q_BxTxHxK = proj('query', 'query')(x_BxTxD)
    if self.decode and self.cross:
      k_BxSxHxK, v_BxSxHxK = self._cross_cache(proj, kv_BxSxD)
    else:
      k_BxSxHxK = proj('key', 'key')(kv_BxSxD)
      v_BxSxHxK = proj('value', 'value')(kv_BxSxD)
      if self.decode:
        k_BxSxHxK, v_BxSxHxK = self._self_cache(k_BxSxHxK, v_BxSxHxK, cache_index)
    if c.prefix_length and not self.cross:
      if is_causal:  # before the prefix slots shift the key slots
        t = x_BxTxD.shape[1]
        mask_Bx1xTxS, is_causal = mask_Bx1xTxS & jnp.tril(jnp.ones((t, t), bool)), False
      k_BxSxHxK, v_BxSxHxK, mask_Bx1xTxS, bias_BxHxTxS = join_prefix(
          *Prefix(c, name='prefix')(), k_BxSxHxK, v_BxSxHxK, mask_Bx1xTxS, bias_BxHxTxS)
    q_BxTxHxK = nn.with_logical_constraint(q_BxTxHxK, ('batch', 'length', 'heads', 'kv'))
    k_BxSxHxK = nn.with_logical_constraint(k_BxSxHxK, ('batch', 'length', 'heads', 'kv'))
    v_BxSxHxK = nn.with_logical_constraint(v_BxSxHxK, ('batch', 'length', 'heads', 'kv'))
    # T5 folds 1/sqrt(head_dim) into its query init; BERT and GPT-2 scale the logits.
    scale = 1.0 if c.family == 't5' else c.head_dim ** -0.5
    needs_rng = not self.deterministic and c.attention_dropout_rate > 0.0
    out_BxTxHxK = dot_product_attention(
        c, q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_Bx1xTxS, bias_BxHxTxS, scale=scale,
        dropout_rng=self.make_rng('dropout') if needs_rng else None,
        deterministic=self.deterministic, is_causal=is_causal)
    return layers.dense(c, c.d_model, ('heads', 'kv', 'embed'), 'attention_out', axis=(-2, -1),
                        name='out')(out_BxTxHxK)

  # The caches hold keys and values heads-first, [B, H, L, K]: a decode step's query-key
  # and weights-value products are then matmuls over contiguous [L, K] blocks.  Stored
  # [B, L, H, K], XLA copied every layer's whole cache into that order at every step
  # (most of a small model's decode step on a CPU).  Callers see [B, L, H, K] views; XLA
  # folds the swap into the matmuls.
  def _self_cache(self, k_BxTxHxK, v_BxTxHxK, cache_index):
    # At init the cache is created with the input's shape: init on [B, L] sizes it.
    b, t, h, k = k_BxTxHxK.shape
    cached_k = self.variable('cache', 'cached_key', jnp.zeros, (b, h, t, k), k_BxTxHxK.dtype)
    cached_v = self.variable('cache', 'cached_value', jnp.zeros, (b, h, t, k), v_BxTxHxK.dtype)
    start = (0, 0, cache_index, 0)
    cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, jnp.swapaxes(k_BxTxHxK, 1, 2),
                                                  start)
    cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, jnp.swapaxes(v_BxTxHxK, 1, 2),
                                                  start)
    return jnp.swapaxes(cached_k.value, 1, 2), jnp.swapaxes(cached_v.value, 1, 2)

  def _cross_cache(self, proj, encoded_BxSxD):
    if encoded_BxSxD is None:  # a decode step: the encoder's keys/values are cached
      return (jnp.swapaxes(self.get_variable('cache', 'cached_key'), 1, 2),
              jnp.swapaxes(self.get_variable('cache', 'cached_value'), 1, 2))
    k_BxSxHxK = proj('key', 'key')(encoded_BxSxD)
    v_BxSxHxK = proj('value', 'value')(encoded_BxSxD)
    self.put_variable('cache', 'cached_key', jnp.swapaxes(k_BxSxHxK, 1, 2))
    self.put_variable('cache', 'cached_value', jnp.swapaxes(v_BxSxHxK, 1, 2))
    return k_BxSxHxK, v_BxSxHxK


class Prefix(nn.Module):
  """The E learned key and value slots of one self-attention layer (prefix tuning).

  Direct: `key`, `value` ExHxK.  Reparameterised (`prefix_hidden` G > 0): an ExD
  `embedding` -> `hidden` dense (DxG) -> tanh -> `project` dense (G x 2 x H x K).
  Initialised small (normal 0.02, like the models' weights), so the frozen model's own
  keys keep most of the attention at the start.
  """
  config: Any

  @nn.compact
  def __call__(self):
    c = self.config
    shape = (c.prefix_length, c.num_heads, c.head_dim)
    if not c.prefix_hidden:
      init = layers.init(PREFIX_INIT_STD, (None, 'heads', 'kv'))
      key_ExHxK = self.param('key', init, shape, layers.param_dtype(c))
      value_ExHxK = self.param('value', init, shape, layers.param_dtype(c))
      return key_ExHxK, value_ExHxK
    table_ExD = self.param('embedding', layers.init(PREFIX_INIT_STD, (None, 'embed')),
                           (c.prefix_length, c.d_model), layers.param_dtype(c))
    hidden_ExG = jnp.tanh(layers.dense(c, c.prefix_hidden, ('embed', 'mlp'), 'dense',
                                       use_bias=True, name='hidden')(table_ExD))
    kv_Ex2xHxK = layers.dense(c, (2,) + shape[1:], ('mlp', None, 'heads', 'kv'), 'dense',
                              use_bias=True, name='project')(hidden_ExG)
    return kv_Ex2xHxK[:, 0], kv_Ex2xHxK[:, 1]


def join_prefix(key_ExHxK, value_ExHxK, k_BxSxHxK, v_BxSxHxK, mask_Bx1xTxS, bias_BxHxTxS):
  """Keys/values with the E prefix slots in front; every query may attend them."""
  batch, e = k_BxSxHxK.shape[0], key_ExHxK.shape[0]
  expand = lambda p_ExHxK, x: jnp.broadcast_to(p_ExHxK.astype(x.dtype)[None],
                                               (batch,) + p_ExHxK.shape)
  k_BxSxHxK = jnp.concatenate([expand(key_ExHxK, k_BxSxHxK), k_BxSxHxK], axis=1)
  v_BxSxHxK = jnp.concatenate([expand(value_ExHxK, v_BxSxHxK), v_BxSxHxK], axis=1)
  allowed = jnp.ones if mask_Bx1xTxS.dtype == jnp.bool_ else jnp.zeros  # a mask, or a bias
  mask_Bx1xTxS = jnp.concatenate(
      [allowed(mask_Bx1xTxS.shape[:-1] + (e,), mask_Bx1xTxS.dtype), mask_Bx1xTxS], axis=-1)
  if bias_BxHxTxS is not None:
    bias_BxHxTxS = jnp.concatenate(
        [jnp.zeros(bias_BxHxTxS.shape[:-1] + (e,), bias_BxHxTxS.dtype), bias_BxHxTxS], axis=-1)
  return k_BxSxHxK, v_BxSxHxK, mask_Bx1xTxS, bias_BxHxTxS


class DecodeState(nn.Module):
  """Per-stack cache bookkeeping: which slot holds which document and position.

  Returns the write index for this chunk, and the segment ids, positions and slot
  numbers of the keys (all L slots) and of the queries (this chunk).
  """

  @nn.compact
  def __call__(self, segment_ids_BxT: jax.Array, positions_BxT: jax.Array):
    shape, t = segment_ids_BxT.shape, segment_ids_BxT.shape[1]
    index = self.variable('cache', 'index', lambda: jnp.zeros((), jnp.int32))
    segs = self.variable('cache', 'segment_ids', jnp.zeros, shape, jnp.int32)
    pos = self.variable('cache', 'positions', jnp.zeros, shape, jnp.int32)
    i = index.value
    segs.value = jax.lax.dynamic_update_slice(segs.value, segment_ids_BxT.astype(jnp.int32), (0, i))
    pos.value = jax.lax.dynamic_update_slice(pos.value, positions_BxT.astype(jnp.int32), (0, i))
    index.value = i + t
    batch, length = segs.value.shape
    k_slots_BxL = jnp.broadcast_to(jnp.arange(length), (batch, length))
    q_slots_BxT = jnp.broadcast_to(i + jnp.arange(t), (batch, t))
    return i, segs.value, pos.value, q_slots_BxT, k_slots_BxL
