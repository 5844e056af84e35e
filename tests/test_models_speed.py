"""The train-step speed reformulations compute what the plain formulations compute.

- `layers.LayerNorm` (a written-out backward): forward bit-identical to flax's
  `nn.LayerNorm(use_fast_variance=False)`, gradients equal to autodiff through it;
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptlm_jax.models import layers


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
