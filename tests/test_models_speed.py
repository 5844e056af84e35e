"""The train-step speed reformulations compute what the plain formulations compute.

- `layers.LayerNorm` (a written-out backward): forward bit-identical to flax's
  `nn.LayerNorm(use_fast_variance=False)`, gradients equal to autodiff through it;
- attention with the mask carried by an additive bias built once (q scaled first; T5:
  relative bias folded in): outputs and gradients of the select-after-scale formulation;
- T5's relative bias from slot indices (training) is the bias from positions wherever
  the mask allows a real (non-padding) query to attend, on packed rows.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptlm_jax.models import attention, layers, t5
from ptlm_jax.objectives import rows
from models_testing import tiny_config


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_layer_norm_equals_flax_forward_and_gradients(dtype):
  rng = np.random.default_rng(0)
  # A large offset and spread per row: the regime where the two-pass variance matters.
  x = jnp.asarray(rng.normal(size=(3, 5, 48)) * 7.0 + 40.0, dtype)
  g = jnp.asarray(rng.normal(size=(3, 5, 48)), jnp.float32)
  kwargs = dict(epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32)
  ref = nn.LayerNorm(use_fast_variance=False, **kwargs)
  ours = layers.LayerNorm(**kwargs)
  params = ref.init(jax.random.PRNGKey(0), x)['params']
  params = jax.tree.map(lambda p: p + jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  assert jax.tree.structure(nn.unbox(ours.init(jax.random.PRNGKey(0), x)['params'])) == (
      jax.tree.structure(params))
  y_ref = jax.jit(ref.apply)({'params': params}, x)
  y = jax.jit(ours.apply)({'params': params}, x)
  assert y.dtype == y_ref.dtype == dtype
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_ref, np.float32))

  loss = lambda m: jax.jit(jax.grad(
      lambda p, x: jnp.sum(m.apply({'params': p}, x).astype(jnp.float32) * g), argnums=(0, 1)))
  (gp_ref, gx_ref), (gp, gx) = loss(ref)(params, x), loss(ours)(params, x)
  tol = dict(rtol=1e-5, atol=1e-5) if dtype == jnp.float32 else dict(rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(np.asarray(gx, np.float32), np.asarray(gx_ref, np.float32), **tol)
  for k in gp_ref:
    np.testing.assert_allclose(gp[k], gp_ref[k], rtol=1e-5, atol=1e-4, err_msg=k)


def _select_after_scale(q, k, v, mask, bias, scale):
  """The formulation before: scale the logits, add the bias, then select the mask."""
  logits = jnp.einsum('bthk,bshk->bhts', q, k) * scale
  if bias is not None:
    logits = logits + bias
  weights = jax.nn.softmax(jnp.where(mask, logits, attention.NEG_INF), axis=-1)
  return jnp.einsum('bhts,bshk->bthk', weights, v)


@pytest.mark.parametrize('with_bias, impl', [(False, 'einsum'), (True, 'einsum'),
                                             (False, 'auto'), (True, 'xla')])
def test_additive_bias_attention_equals_select_after_scale(with_bias, impl):
  c = tiny_config('gpt', attention_impl=impl)
  rng = np.random.default_rng(1)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 6, 3, 8)), jnp.float32) for _ in range(3))
  segs = jnp.asarray([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]])
  slots = jnp.broadcast_to(jnp.arange(6), (2, 6))
  mask = attention.decoder_mask(segs, segs, slots, slots)
  rel = jnp.asarray(rng.normal(size=(2, 3, 6, 6)), jnp.float32) if with_bias else None
  scale = 0.3  # not a power of two: scaling q first rounds differently, within 1 ulp or so

  def ours(q, k, v, rel):
    return attention.dot_product_attention(c, q, k, v, attention.additive_bias(mask, rel),
                                           scale=scale)

  def ref(q, k, v, rel):
    return _select_after_scale(q, k, v, mask, rel, scale)

  g = jnp.asarray(rng.normal(size=(2, 6, 3, 8)), jnp.float32)
  args = (q, k, v, rel)
  np.testing.assert_allclose(jax.jit(ours)(*args), ref(*args), rtol=1e-5, atol=1e-6)
  # A boolean mask given directly computes the same.
  np.testing.assert_allclose(
      attention.dot_product_attention(c, q, k, v, mask, rel, scale=scale), ref(*args),
      rtol=1e-5, atol=1e-6)
  argnums = (0, 1, 2, 3) if with_bias else (0, 1, 2)
  grad = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * g), argnums=argnums))(*args)
  for got, want in zip(grad(ours), grad(ref)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('bidirectional', [True, False])
def test_t5_slot_relative_bias_is_the_position_bias_where_attended(bidirectional):
  c = tiny_config('t5', relative_max_distance=16, relative_buckets=8)
  segs = jnp.asarray([[1] * 3 + [2] * 30 + [3] * 5 + [0] * 2,
                      [1] * 20 + [2] * 20])  # distances past max_distance too
  positions = jax.vmap(rows.positions_from_segments)(segs)
  slots = jnp.broadcast_to(jnp.arange(40), segs.shape)
  mask = (attention.segment_mask(segs, segs) if bidirectional
          else attention.decoder_mask(segs, segs, slots, slots))

  class Stack(nn.Module):  # a stack's bias either way, from the same `relpos` table
    by_slot: bool

    @nn.compact
    def __call__(self, positions):
      if self.by_slot:
        return t5.slot_relative_bias(c, bidirectional, 40, 40)
      return layers.RelativePositionBias(c, bidirectional, name='relpos')(positions, positions)

  params = Stack(False).init(jax.random.PRNGKey(0), positions)
  by_slot = Stack(True).apply(params, positions)
  by_position = Stack(False).apply(params, positions)
  assert by_slot.shape == (1, c.num_heads, 40, 40)
  # Padding (segment 0, position 0) attends padding: those rows are nobody's output.
  allowed = jnp.broadcast_to(mask & (segs != 0)[:, None, :, None], by_position.shape)
  np.testing.assert_array_equal(jnp.broadcast_to(by_slot, by_position.shape)[allowed],
                                by_position[allowed])
  assert np.abs(np.asarray(by_slot - by_position)).max() > 0  # masked pairs do differ
