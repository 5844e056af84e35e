"""The shared layer library: embeddings, norms, MLPs, T5 relative position bias, inits.

BERT, GPT-2 and T5 are built from these pieces (plus `attention.py` and `stack.py`), so a
change here reaches all three families.  Every parameter is created with
`nn.with_logical_partitioning`, so `init` returns boxed params whose logical axis names a
device mesh can map to data / fsdp / tensor axes.  Parameters are `model.param_dtype`
(float32); computation runs in `model.dtype` (float32 or bfloat16); norms and softmax
compute their statistics in float32.

  embed = layers.embedding(config, config.vocab_size, ('vocab', 'embed'), name='token_embed')
  x_BxLxD = embed(tokens_BxL)

Legend: B batch, L length, D d_model, H heads, K head_dim, F d_ff, V vocab, A adapter width.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

ACTIVATIONS = {
    'gelu': functools.partial(jax.nn.gelu, approximate=False),  # BERT: exact erf GELU
    'gelu_tanh': functools.partial(jax.nn.gelu, approximate=True),  # GPT-2 / HF gelu_new
    'relu': jax.nn.relu,  # T5 v1.0
}


def dtype(config) -> Any:
  """The compute dtype of a model config."""
  return jnp.dtype(config.dtype)


def param_dtype(config) -> Any:
  return jnp.dtype(config.param_dtype)


def init(std: float, names: tuple[str, ...]):
  """A normal(std) initializer whose parameter carries logical axis names."""
  return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def init_std(config, role: str) -> float:
  """Init std of a weight by its role, per family.

  BERT / GPT-2: `init_std` everywhere (HF `initializer_range`); GPT-2 scales the two
  residual output projections by 1/sqrt(2 * layers) (the GPT-2 paper's residual init).
  T5: the Mesh-TensorFlow fan-in scaling (HF `T5PreTrainedModel._init_weights`), which is
  also why T5 attention needs no 1/sqrt(head_dim) on its logits.
  """
  if config.family != 't5':
    if config.family == 'gpt' and role in ('attention_out', 'mlp_out'):
      return config.init_std / math.sqrt(2 * config.num_layers)
    return config.init_std
  d, h, k, f = config.d_model, config.num_heads, config.head_dim, config.d_ff
  return {
      'query': (d * k) ** -0.5, 'key': d ** -0.5, 'value': d ** -0.5,
      'attention_out': (h * k) ** -0.5, 'mlp_in': d ** -0.5, 'mlp_out': f ** -0.5,
      'embed': 1.0, 'lm_head': d ** -0.5, 'relpos': d ** -0.5, 'dense': d ** -0.5,
  }[role]


# Names of the matmul outputs for remat policies (`stack.REMAT_POLICIES`): in bfloat16 the
# matmuls are custom_vjp calls, which `checkpoint_dots` cannot see.
PROJECTION = 'projection'   # activations x weights: no batch dimension in the contraction
ATTENTION = 'attention'     # q k^T and weights v: batched over rows and heads


# Backends whose bf16 x bf16 -> f32 dots are computed as f32 x f32 dots of the same (exactly
# representable) values.  XLA:CPU (jax 0.10) runs that dot only inside its YNNPACK fusions;
# one it leaves outside (a decode step's attention, some weight gradients) fails at run
# time: "Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32".
F32_OPERAND_BACKENDS = ('cpu',)


def einsum_f32(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """jnp.einsum of a and b (one dtype) accumulated and returned in float32; no custom vjp.

  bf16 operands stay bf16 (bf16 x bf16 -> f32), except on F32_OPERAND_BACKENDS, where they
  are upcast first: every product of two bf16 values is exact in f32, so the result is
  the same, only the kernel differs.
  """
  if a.dtype != jnp.float32 and jax.default_backend() in F32_OPERAND_BACKENDS:
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _einsum_f32_accumulate(spec: str, a, b, out_dtype):
  return einsum_f32(spec, a, b).astype(out_dtype)


def _einsum_fwd(spec, a, b, out_dtype):
  return _einsum_f32_accumulate(spec, a, b, out_dtype), (a, b)


def _einsum_bwd(spec, out_dtype, residuals, g):
  # For 'A,B->O': dA = einsum('O,B->A', g, b), dB = einsum('O,A->B', g, a) (every index of
  # A is in O or B, checked in `matmul`).  g goes to the inputs' dtype first, so the
  # backward matmuls are bf16 x bf16 -> f32 too (autodiff would multiply the float32
  # cotangent with an upcast copy of the other operand: float32 matmuls).
  del out_dtype
  a, b = residuals
  inputs, out = spec.split('->')
  sa, sb = inputs.split(',')
  g = g.astype(a.dtype)
  da = einsum_f32(f'{out},{sb}->{sa}', g, b)
  db = einsum_f32(f'{out},{sa}->{sb}', g, a)
  return da.astype(a.dtype), db.astype(b.dtype)


_einsum_f32_accumulate.defvjp(_einsum_fwd, _einsum_bwd)


def matmul(spec: str, a: jax.Array, b: jax.Array, compute_dtype, out_dtype=None, *,
           name: str = PROJECTION) -> jax.Array:
  """`jnp.einsum(spec, a, b)` on `compute_dtype` inputs, accumulated in float32, forward and
  backward, returned as `out_dtype` (default: the compute dtype).

  Every matmul of the models goes through here.  In bfloat16 a plain einsum (or flax's
  `Dense(dtype=bfloat16)`) is a bf16 x bf16 -> bf16 dot: rounded partial sums, and on
  XLA:CPU a slow path.  GPUs and TPUs accumulate bf16 in float32 natively.  The bf16
  backward is written out (`_einsum_bwd`) so that its matmuls take bf16 inputs too.  On
  F32_OPERAND_BACKENDS (CPU) the bf16 values are multiplied as float32 (`einsum_f32`):
  the same numbers, a float32 kernel.  float32 compute is a plain einsum.
  """
  compute_dtype = jnp.dtype(compute_dtype)
  out_dtype = compute_dtype if out_dtype is None else jnp.dtype(out_dtype)
  a, b = a.astype(compute_dtype), b.astype(compute_dtype)
  inputs, out = spec.split('->')
  sa, sb = inputs.split(',')
  if not (set(sa) <= set(out) | set(sb) and set(sb) <= set(out) | set(sa)):
    raise ValueError(f'matmul {spec!r}: an index summed within one operand')
  if compute_dtype == jnp.float32 or jax.default_backend() in F32_OPERAND_BACKENDS:
    # Autodiff's backward of this einsum is float32 matmuls already.
    y = einsum_f32(spec, a, b).astype(out_dtype)
  else:
    y = _einsum_f32_accumulate(spec, a, b, out_dtype)
  return checkpoint_name(y, name)


class DenseGeneral(nn.Module):
  """y = x · kernel (+ bias), contracting `axis` of x with the leading kernel axes.

  Like `nn.DenseGeneral`, but the kernel is created in its full shape (e.g. D x H x K):
  flax's version initialises a flattened 2-D kernel and reshapes it, which applies the
  3-axis logical sharding constraint to a 2-D array and fails under a device mesh.  The
  product is `matmul` (compute dtype inputs, float32 accumulation).
  """
  features: tuple[int, ...]
  axis: tuple[int, ...]
  use_bias: bool
  dtype: Any
  param_dtype: Any
  kernel_init: Any
  bias_init: Any
  float32_out: bool = False

  @nn.compact
  def __call__(self, x):
    axis = tuple(sorted(a % x.ndim for a in self.axis))
    kernel = self.param('kernel', self.kernel_init,
                        tuple(x.shape[a] for a in axis) + self.features, self.param_dtype)
    if axis != tuple(range(x.ndim - len(axis), x.ndim)):
      raise ValueError(f'DenseGeneral contracts trailing axes only, got {self.axis}')
    n_batch, n_in, n_out = x.ndim - len(axis), len(axis), len(self.features)
    batch, contract, out = 'abcdefgh'[:n_batch], 'ijkl'[:n_in], 'mnop'[:n_out]
    y = matmul(f'{batch}{contract},{contract}{out}->{batch}{out}', x, kernel, self.dtype,
               jnp.float32 if self.float32_out else self.dtype)
    if self.use_bias:
      bias = self.param('bias', self.bias_init, self.features, self.param_dtype)
      y = y + bias.astype(y.dtype)
    return y


def dense(config, features, names: tuple[str, ...], role: str, *, axis=-1,
          use_bias: bool | None = None, float32_out: bool = False,
          name: str | None = None) -> DenseGeneral:
  """A DenseGeneral with logical names on its kernel (and bias): the one projection used.

  `names` name every kernel axis, inputs first (e.g. ('embed', 'heads', 'kv')).  T5 has
  no biases; BERT and GPT-2 do.  `float32_out` accumulates and returns float32 (logits).
  """
  features = features if isinstance(features, tuple) else (features,)
  axis = axis if isinstance(axis, tuple) else (axis,)
  if use_bias is None:
    use_bias = config.family != 't5'
  bias_names = names[-len(features):]
  return DenseGeneral(
      features=features, axis=axis, use_bias=use_bias, dtype=dtype(config),
      param_dtype=param_dtype(config), kernel_init=init(init_std(config, role), names),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, bias_names),
      float32_out=float32_out, name=name)


def embedding(config, num: int, names: tuple[str, ...], role: str = 'embed',
              name: str | None = None) -> nn.Embed:
  return nn.Embed(num_embeddings=num, features=config.d_model, dtype=dtype(config),
                  param_dtype=param_dtype(config), embedding_init=init(init_std(config, role), names),
                  name=name)


def attend(x_BxLxD: jax.Array, table_VxD: jax.Array) -> jax.Array:
  """Tied output projection: logits against an embedding table, accumulated in float32."""
  return matmul('bld,vd->blv', x_BxLxD, table_VxD, x_BxLxD.dtype, jnp.float32)


def _norm_stats(x_BxLxD, epsilon: float):
  """(x - mean, mean, 1 / sqrt(var + eps)) in float32, with the exact two-pass variance."""
  x_BxLxD = x_BxLxD.astype(jnp.promote_types(x_BxLxD.dtype, jnp.float32))
  mean_BxLx1 = x_BxLxD.mean(-1, keepdims=True)
  xc_BxLxD = x_BxLxD - mean_BxLx1
  rstd_BxLx1 = jax.lax.rsqrt(jnp.mean(jnp.square(xc_BxLxD), -1, keepdims=True) + epsilon)
  return xc_BxLxD, mean_BxLx1, rstd_BxLx1


def _layer_norm_fwd(x_BxLxD, scale_D, bias_D, epsilon, out_dtype):
  xc_BxLxD, mean_BxLx1, rstd_BxLx1 = _norm_stats(x_BxLxD, epsilon)
  y_BxLxD = xc_BxLxD * (rstd_BxLx1 * scale_D) + bias_D
  # The residuals are the input and the [B, L, 1] statistics, not a float32 normalised
  # copy: the backward recomputes xhat in the pass that reads the incoming gradient.
  return y_BxLxD.astype(out_dtype), (x_BxLxD, mean_BxLx1, rstd_BxLx1, scale_D, bias_D)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm(x_BxLxD, scale_D, bias_D, epsilon: float, out_dtype):
  """LayerNorm over the last axis, statistics in float32, with a written-out backward.

  The forward is flax's `LayerNorm(use_fast_variance=False)` operation for operation,
  so outputs are bit-identical.  Autodiff through the two-pass variance made XLA
  recompute the normalisation inside every consumer of the gradient (the QKV matmuls
  and their transposes): GPT's step at base-ish moved 12.5 GB, with this 10.3 GB.
  """
  return _layer_norm_fwd(x_BxLxD, scale_D, bias_D, epsilon, out_dtype)[0]


def _layer_norm_bwd(epsilon, out_dtype, res, g_BxLxD):
  del epsilon, out_dtype
  x_BxLxD, mean_BxLx1, rstd_BxLx1, scale_D, bias_D = res
  xhat_BxLxD = (x_BxLxD.astype(rstd_BxLx1.dtype) - mean_BxLx1) * rstd_BxLx1
  g_BxLxD = g_BxLxD.astype(xhat_BxLxD.dtype)
  rows = tuple(range(g_BxLxD.ndim - 1))
  g_scale_D = jnp.sum(g_BxLxD * xhat_BxLxD, rows).astype(scale_D.dtype)
  g_bias_D = jnp.sum(g_BxLxD, rows).astype(bias_D.dtype)
  gs_BxLxD = g_BxLxD * scale_D.astype(g_BxLxD.dtype)
  # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g the gradient of xhat.
  dx_BxLxD = rstd_BxLx1 * (gs_BxLxD - jnp.mean(gs_BxLxD, -1, keepdims=True)
                           - xhat_BxLxD * jnp.mean(gs_BxLxD * xhat_BxLxD, -1, keepdims=True))
  return dx_BxLxD.astype(x_BxLxD.dtype), g_scale_D, g_bias_D


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
  """`layer_norm` with parameters `scale` and `bias`, named and shaped as flax's
  `nn.LayerNorm` makes them, so checkpoints and the HF mapping see the same tree."""
  epsilon: float
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    d = x_BxLxD.shape[-1]
    scale_D = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
                         (d,), self.param_dtype)
    bias_D = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)),
                        (d,), self.param_dtype)
    return layer_norm(x_BxLxD, scale_D, bias_D, self.epsilon, jnp.dtype(self.dtype))


def norm(config, name: str | None = None) -> nn.Module:
  """LayerNorm (BERT post-LN, GPT-2 pre-LN; exact two-pass variance, as torch computes it:
  GPT-2's residual stream is large) or T5's RMSNorm (scale only, no mean).

  T5 keeps flax's RMSNorm: the same written-out backward for it measured more bytes
  accessed per step (14.84 vs 14.63 GB at base-ish), the plain one fuses well already.
  """
  if config.family == 't5':
    return nn.RMSNorm(epsilon=config.layer_norm_eps, dtype=dtype(config),
                      param_dtype=param_dtype(config),
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
                      name=name)
  return LayerNorm(epsilon=config.layer_norm_eps, dtype=dtype(config),
                   param_dtype=param_dtype(config), name=name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dropout(x, rng, rate: float):
  """x / (1 - rate) where bernoulli(rng, 1 - rate) keeps it, else 0 (flax's masks exactly).

  The backward reads the mask packed 8 per byte.  Plain autodiff leaves the choice of
  residual to XLA, which keeps the two uint32 threefry words of every element (8 bytes)
  and redoes the compare in the backward: at GPT small on 8 devices that was +26% of the
  step's temp memory; packed it is +1%.
  """
  return _dropout_fwd(x, rng, rate)[0]


def _dropout_fwd(x, rng, rate):
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  y = jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))
  return y, jnp.packbits(keep, axis=-1)


def _dropout_bwd(rate, packed_keep, g):
  keep = jnp.unpackbits(packed_keep, axis=-1, count=g.shape[-1]).astype(bool)
  return jnp.where(keep, g / jnp.asarray(1.0 - rate, g.dtype), jnp.zeros((), g.dtype)), None


dropout.defvjp(_dropout_fwd, _dropout_bwd)


class Dropout(nn.Dropout):
  """`nn.Dropout` (same rng stream and masks) whose backward keeps a packed mask (`dropout`)."""

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.broadcast_dims or self.rate == 1.0:
      return super().__call__(inputs, deterministic, rng)
    return dropout(inputs, self.make_rng(self.rng_collection) if rng is None else rng, self.rate)


class Mlp(nn.Module):
  """Position-wise feed-forward: act(x W_in) W_out, or T5 v1.1's gelu(x W_0) * (x W_1) W_out.

  T5 applies dropout on the hidden activation too (`inner_dropout`); BERT and GPT-2 only
  drop the output, which the block does (and then its `adapter`, if any).
  """
  config: Any
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    c = self.config
    if c.activation == 'gated-gelu':
      gate_BxLxF = dense(c, c.d_ff, ('embed', 'mlp'), 'mlp_in', name='wi_0')(x_BxLxD)
      linear_BxLxF = dense(c, c.d_ff, ('embed', 'mlp'), 'mlp_in', name='wi_1')(x_BxLxD)
      h_BxLxF = ACTIVATIONS['gelu_tanh'](gate_BxLxF) * linear_BxLxF
    else:
      h_BxLxF = ACTIVATIONS[c.activation](
          dense(c, c.d_ff, ('embed', 'mlp'), 'mlp_in', name='wi')(x_BxLxD))
    h_BxLxF = nn.with_logical_constraint(h_BxLxF, ('batch', 'length', 'mlp'))
    if c.family == 't5':
      h_BxLxF = Dropout(c.dropout_rate)(h_BxLxF, deterministic=self.deterministic)
    return dense(c, c.d_model, ('mlp', 'embed'), 'mlp_out', name='wo')(h_BxLxF)


class Adapter(nn.Module):
  """Houlsby et al. (2019) bottleneck adapter: x + up(act(down(x))), D -> A -> D.

  `up` starts at zero, so a model with fresh adapters computes exactly what the model
  without them computes; `down` starts like the model's other dense layers.  The
  nonlinearity is the family's (T5's gated-gelu -> gelu_tanh).
  """
  config: Any

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    c = self.config
    down = dense(c, c.adapter_dim, ('embed', 'mlp'), 'dense', use_bias=True, name='down')
    h_BxLxA = down(x_BxLxD)
    h_BxLxA = ACTIVATIONS.get(c.activation, ACTIVATIONS['gelu_tanh'])(h_BxLxA)
    zeros = lambda names: nn.with_logical_partitioning(nn.initializers.zeros, names)
    up = DenseGeneral(features=(c.d_model,), axis=(-1,), use_bias=True, dtype=dtype(c),
                      param_dtype=param_dtype(c), kernel_init=zeros(('mlp', 'embed')),
                      bias_init=zeros(('embed',)), name='up')
    return x_BxLxD + up(h_BxLxA)


def adapter(config, name: str):
  """The block's adapter `name` when `model.adapter_dim` > 0, else the identity.

  Blocks wrap each attention and MLP sublayer's output (after its dropout, before the
  residual sum), the two places of Houlsby et al.
  """
  if not config.adapter_dim:
    return lambda h: h
  return Adapter(config, name=name)


def relative_position_bucket(relative_position, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
  """T5's bucketing of key_position - query_position (HF `_relative_position_bucket`).

  Exact buckets for small distances, log-spaced up to `max_distance`; the bidirectional
  (encoder) variant spends half the buckets on each sign, the causal (decoder) variant
  maps every future key to bucket 0.
  """
  buckets = 0
  n = relative_position
  if bidirectional:
    num_buckets //= 2
    buckets += (n > 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = -jnp.minimum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  # float32 log and truncation toward zero, as the reference computes it.
  large = max_exact + (
      jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact)
      / math.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, n, large)


class RelativePositionBias(nn.Module):
  """T5 attention bias from bucketed relative positions; one table per layer stack.

  Distances come from `positions`, not array indices, so a packed document (positions
  restarting at 0) and a cached decode step see exactly the bias they would see alone.
  """
  config: Any
  bidirectional: bool

  @nn.compact
  def __call__(self, q_positions_BxT: jax.Array, k_positions_BxS: jax.Array) -> jax.Array:
    c = self.config
    table_RxH = self.param('embedding', init(init_std(c, 'relpos'), ('relpos_buckets', 'heads')),
                           (c.relative_buckets, c.num_heads), param_dtype(c))
    relative_BxTxS = k_positions_BxS[:, None, :] - q_positions_BxT[:, :, None]
    bucket_BxTxS = relative_position_bucket(relative_BxTxS, self.bidirectional,
                                            c.relative_buckets, c.relative_max_distance)
    bias_BxTxSxH = jnp.take(table_RxH.astype(jnp.float32), bucket_BxTxS, axis=0)
    return jnp.transpose(bias_BxTxSxH, (0, 3, 1, 2))
