"""LoRA on every family: fresh factors change nothing, merged equals an unmerged reference.

The reference forward never merges: a flax method interceptor adds s * (x . a) . b to the
output of every adapted DenseGeneral (what HF peft's LoRA layers compute), so it shares
nothing with `lora.merge` but the factors.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models_testing
from ptlm_jax import config_lib, errors, models
from ptlm_jax.models import layers, stack
from ptlm_jax.peft import lora as lora_lib, partitions as peft

TARGETS = '(query|key|value|out|wi|wi_0|wi_1|wo)/kernel$'  # every attention and MLP matrix


def _peft(**fields):
  f = config_lib.base_config('gpt', 'tiny').peft
  f.update(method='lora', lora_rank=4, lora_alpha=8.0, lora_targets=TARGETS)
  f.update(fields)
  return f


def _unmerged_apply(model, params, lora, scale, inputs):
  """model.apply on the base params, with the LoRA branch added beside each adapted kernel."""
  pairs = lora_lib.pairs(lora)

  def add_branch(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    module = context.module
    path = '/'.join(module.path) + '/kernel'
    if context.method_name != '__call__' or not isinstance(module, layers.DenseGeneral) or (
        path not in pairs):
      return y
    x, a, b = args[0], pairs[path]['a'], pairs[path]['b']
    axis = tuple(i % x.ndim for i in module.axis)
    x_a = jax.lax.dot_general(x.astype(jnp.float32), a, ((axis, tuple(range(len(axis)))), ((), ())))
    return y + (scale * jnp.tensordot(x_a, b, axes=1)).astype(y.dtype)

  with nn.intercept_methods(add_branch):
    return model.apply({'params': params}, **inputs)


@pytest.mark.parametrize('family', ['bert', 'gpt', 't5'])
def test_lora_starts_at_the_base_model_and_merges_like_the_unmerged_forward(family):
  model_config = models_testing.tiny_config(family, num_layers=1, num_decoder_layers=1)
  base_model, params = models_testing.init_params(model_config)
  f = _peft()
  model = lora_lib.LoraModel(base_model, f)
  inputs = models.dummy_inputs(model_config, 2, 8)
  inputs = jax.tree.map(lambda x: (x * jnp.arange(3, 3 + x.shape[1])) % 100, inputs)
  lora = nn.unbox(lora_lib.init_factors(models.abstract_params(model_config), f, jax.random.key(0)))

  # b = 0 at init: merging gives back the base weights bit for bit.
  jax.tree.map(np.testing.assert_array_equal, lora_lib.merged({**params, 'lora': lora}, f), params)

  keys = iter(jax.random.split(jax.random.key(1), 100))
  lora = jax.tree.map(lambda x: 0.2 * jax.random.normal(next(keys), x.shape), lora)
  base, merged, reference = jax.jit(lambda p, l: (
      base_model.apply({'params': p}, **inputs),
      model.apply({'params': {**p, 'lora': l}}, **inputs),
      _unmerged_apply(base_model, p, l, lora_lib.scale(f), inputs)))(params, lora)
  # Non-zero b: the merged model equals the unmerged reference; both differ from the base.
  assert float(jnp.max(jnp.abs(merged - base))) > 1e-2
  np.testing.assert_allclose(merged, reference, atol=1e-5, rtol=1e-5)


def test_factor_shapes_follow_the_kernel_axes():
  model_config = models_testing.tiny_config('gpt')
  lora = lora_lib.init_factors(models.abstract_params(model_config), _peft(), jax.random.key(0))
  attention = lora['decoder']['layers_0']['attention']
  # query D x H x K: a is D x r, b is r x H x K; out H x K x D: a is H x K x r, b is r x D.
  assert attention['query']['kernel']['a'].value.shape == (32, 4)
  assert attention['query']['kernel']['b'].names == (None, 'heads', 'kv')
  assert attention['out']['kernel']['a'].value.shape == (2, 16, 4)
  assert attention['out']['kernel']['b'].value.shape == (4, 32)
  a = np.asarray(lora['decoder']['layers_1']['mlp']['wo']['kernel']['a'].value)  # F x r
  bound = 1 / np.sqrt(64)  # HF peft's kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), ..)
  assert np.abs(a).max() <= bound and np.abs(a).max() > 0.8 * bound
  with pytest.raises(errors.ConfigError, match='peft.lora_targets'):
    lora_lib.init_factors(models.abstract_params(model_config), _peft(lora_targets='nothing'),
                   jax.random.key(0))


def test_scanned_factors_merge_layer_by_layer_and_unmerge_restores():
  rng = np.random.default_rng(0)
  box = lambda shape, names: nn.LogicallyPartitioned(
      rng.normal(size=shape).astype(np.float32), names)
  layer = lambda: {'attention': {'query': {'kernel': box((4, 2, 3), ('embed', 'heads', 'kv'))},
                                 'out': {'kernel': box((2, 3, 4), ('heads', 'kv', 'embed'))}},
                   'mlp': {'wi': {'kernel': box((4, 5), ('embed', 'mlp'))}}}
  boxed = {'encoder': {'layers_0': layer(), 'layers_1': layer()}}
  unrolled = nn.unbox(boxed)
  lora = nn.unbox(lora_lib.init_factors(boxed, _peft(), jax.random.key(0)))
  assert lora['encoder']['layers_0']['attention']['out']['kernel']['a'].shape == (2, 3, 4)
  lora = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), lora)
  merged = lora_lib.merge(unrolled, lora, 2.0)
  merged_scanned = lora_lib.merge(stack.stack_layers(unrolled), stack.stack_layers(lora), 2.0)
  # By hand: the attention output's update is the (H*K) x r . r x D product, reshaped.
  a, b = (lora['encoder']['layers_1']['attention']['out']['kernel'][k] for k in 'ab')
  expected = unrolled['encoder']['layers_1']['attention']['out']['kernel'] + 2.0 * np.einsum(
      'hkr,rd->hkd', a, b)
  np.testing.assert_allclose(merged['encoder']['layers_1']['attention']['out']['kernel'],
                             expected, rtol=1e-5, atol=1e-5)
  for path, value in peft.flatten(stack.stack_layers(merged)).items():
    np.testing.assert_allclose(peft.flatten(merged_scanned)[path], value, rtol=1e-6, atol=1e-6)
  restored = lora_lib.unmerge(merged, lora, 2.0)
  for path, value in peft.flatten(unrolled).items():
    assert not np.array_equal(peft.flatten(merged)[path], value)
    np.testing.assert_allclose(peft.flatten(restored)[path], value, rtol=0, atol=1e-5)


@pytest.mark.parametrize('family, scan', [('bert', False), ('gpt', True), ('t5', False),
                                          ('t5', True)])
def test_run_time_branch_equals_the_merged_kernels_in_outputs_and_gradients(family, scan):
  """LoraModel computes x W + s (x a) b without merging; the merged model is the reference."""
  model_config = models_testing.tiny_config(family, num_layers=2, num_decoder_layers=2,
                                            scan_layers=scan)
  params = models_testing.family_params(family)
  params = stack.stack_layers(params) if scan else params
  base_model = models.build_model(model_config)
  f = _peft()
  model = lora_lib.LoraModel(base_model, f)
  inputs = models.dummy_inputs(model_config, 2, 8)
  inputs = jax.tree.map(lambda x: (x * jnp.arange(3, 3 + x.shape[1])) % 100, inputs)
  lora = nn.unbox(lora_lib.init_factors(models.abstract_params(model_config), f, jax.random.key(0)))
  keys = iter(jax.random.split(jax.random.key(1), 100))
  lora = jax.tree.map(lambda x: 0.2 * jax.random.normal(next(keys), x.shape), lora)
  weights = jax.random.normal(jax.random.key(2), (2, 8, model_config.vocab_size))

  def run_time(p, l):
    return (model.apply({'params': {**p, 'lora': l}}, **inputs) * weights).sum()

  def merged(p, l):
    return (base_model.apply({'params': lora_lib.merged({**p, 'lora': l}, f)}, **inputs)
            * weights).sum()

  (got, got_grads), (want, want_grads) = jax.jit(lambda p, l: (
      jax.value_and_grad(run_time, argnums=(0, 1))(p, l),
      jax.value_and_grad(merged, argnums=(0, 1))(p, l)))(params, lora)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Gradients of the factors and of the (frozen in training) base kernels alike.
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    scale = float(jnp.max(jnp.abs(w))) + 1e-6
    np.testing.assert_allclose(np.asarray(g) / scale, np.asarray(w) / scale, atol=2e-5)
  b_grads = [np.abs(g).max() for p, g in peft.flatten(got_grads[1]).items() if p.endswith('/b')]
  assert len(b_grads) >= 6 and max(b_grads) > 1e-3  # the factors do get gradients
