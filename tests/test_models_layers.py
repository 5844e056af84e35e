"""Scan vs unrolled (with remat), logical axis names, bfloat16 compute, task heads, dropout."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptlm_jax import errors, models
from ptlm_jax.models import heads, stack
from models_testing import family_params, model_and_params, packed_row, tiny_config

AXES = {'vocab', 'embed', 'heads', 'kv', 'mlp', 'layers', 'relpos_buckets', 'type_vocab',
        'position', 'classes'}


def _inputs(family):
  toks, segs, pos = packed_row((5, 6), 13, seed=4)
  if family == 't5':
    return packed_row((4, 7), 12, seed=5) + (toks, segs, pos)
  return toks, segs, pos


@pytest.mark.parametrize('family, remat, grads', [
    ('bert', 'none', False), ('gpt', 'dots', True), ('t5', 'full', False)])
def test_scan_equals_unrolled(family, remat, grads):
  """Same params (stacked) give the same outputs; for GPT (scan + remat) the same grads."""
  x = _inputs(family)
  model, _, params = model_and_params(family)
  scanned_model, _, scanned_params = model_and_params(family, scan_layers=True, remat=remat)
  loss = lambda m: jax.jit(jax.value_and_grad(
      lambda p: (m.apply({'params': p}, *x) ** 2).mean()))
  if not grads:
    out = jax.jit(model.apply)({'params': params}, *x)
    scanned_out = jax.jit(scanned_model.apply)({'params': scanned_params}, *x)
    np.testing.assert_allclose(scanned_out, out, atol=1e-5)
    return
  value, grads = loss(model)(params)
  scanned_value, scanned_grads = loss(scanned_model)(scanned_params)
  np.testing.assert_allclose(scanned_value, value, rtol=1e-5)
  flat = lambda t: dict(jax.tree_util.tree_leaves_with_path(t))
  expected = flat(stack.stack_layers(jax.device_get(grads)))
  got = flat(scanned_grads)
  assert expected.keys() == got.keys()
  for path in expected:
    np.testing.assert_allclose(got[path], expected[path], atol=1e-6, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))


def test_stack_unstack_round_trip_and_scanned_init_layout():
  params = family_params('t5')
  stacked = stack.stack_layers(params)
  assert stacked['decoder']['layers']['mlp']['wo']['kernel'].shape == (2, 64, 32)
  assert 'layers_0' not in stacked['encoder']
  back = stack.unstack_layers(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)))
  # An initialised scanned model has exactly the stacked structure, 'layers' axis first.
  abstract = models.abstract_params(tiny_config('t5', scan_layers=True))
  assert jax.tree.structure(nn.unbox(abstract)) == jax.tree.structure(stacked)
  spec = nn.get_partition_spec(abstract)
  assert tuple(spec['encoder']['layers']['attention']['query']['kernel']) == (
      'layers', 'embed', 'heads', 'kv')


@pytest.mark.parametrize('family', ['bert', 'gpt', 't5'])
def test_every_param_has_logical_axis_names(family):
  config = tiny_config(family, head='sequence_classification' if family == 'bert' else 'lm',
                       use_pooler=True)
  abstract = models.abstract_params(config)
  boxes = jax.tree.leaves(abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert boxes and all(isinstance(b, nn.LogicallyPartitioned) for b in boxes)
  for box in boxes:
    assert len(box.names) == len(box.value.shape) and set(box.names) <= AXES, box.names


@pytest.mark.parametrize('family', ['bert', 'gpt', 't5'])
def test_bfloat16_compute_is_close_to_float32_with_float32_logits(family):
  x = _inputs(family)
  _, apply, params = model_and_params(family)
  _, apply_bf16, _ = model_and_params(family, dtype='bfloat16')
  ref = np.asarray(apply({'params': params}, *x))
  out = apply_bf16({'params': params}, *x)
  assert out.dtype == jnp.float32 and all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  err = np.abs(np.asarray(out) - ref).max()
  # bf16 keeps 8 mantissa bits (~0.4% relative): a loose bound; err > 0 shows bf16 ran.
  assert 0 < err < 0.05 * np.abs(ref).max()


def _backbone_hidden(family, params, toks, segs, pos):
  backbone = heads.BACKBONES[family](models.build_model(tiny_config(family)).config)
  return backbone.apply({'params': params['backbone']}, toks, segs, pos, method='encode')


@pytest.mark.parametrize('family, pooling', [('gpt', 'last'), ('t5', 'mean'), ('bert', 'cls')])
def test_sequence_classifier_pools_as_documented(family, pooling):
  config = tiny_config(family, head='sequence_classification', num_classes=3, pooling=pooling)
  model = models.build_model(config)
  init = jax.jit(lambda rng: model.init(rng, **models.dummy_inputs(config, 2, 8)))
  params = nn.unbox(init(jax.random.key(0))['params'])
  assert set(params) == {'backbone', 'head'} and params['head']['kernel'].shape == (32, 3)
  toks = np.array([[9, 10, 11, 0, 0], [12, 13, 14, 15, 16]], np.int32)
  segs = (toks != 0).astype(np.int32)
  pos = np.tile(np.arange(5, dtype=np.int32), (2, 1))
  logits = jax.jit(model.apply)({'params': params}, toks, segs, pos)
  h = np.asarray(jax.jit(_backbone_hidden, static_argnums=0)(family, params, toks, segs, pos))
  if pooling == 'last':
    pooled = h[[0, 1], [2, 4]]
  elif pooling == 'mean':
    pooled = np.stack([h[0, :3].mean(0), h[1].mean(0)])
  else:
    p = params['backbone']['pooler']
    pooled = np.tanh(h[:, 0] @ p['kernel'] + p['bias'])
  expected = pooled @ params['head']['kernel'] + params['head']['bias']
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_token_classification_and_qa_heads():
  for head, shapes in (('token_classification', [(2, 6, 5)]), ('question_answering', [(2, 6)] * 2)):
    config = tiny_config('bert', head=head, num_classes=5)
    model = models.build_model(config)
    inputs = models.dummy_inputs(config, 2, 6)
    out = jax.jit(lambda: model.apply(model.init(jax.random.key(0), **inputs), **inputs))()
    out = out if isinstance(out, tuple) else (out,)
    assert [o.shape for o in out] == shapes and all(o.dtype == jnp.float32 for o in out)


def test_dropout_follows_the_deterministic_switch():
  model, apply, params = model_and_params('gpt')
  x = _inputs('gpt')
  clean = apply({'params': params}, *x)
  rngs = lambda s: {'dropout': jax.random.key(s)}
  noisy = [apply({'params': params}, *x, deterministic=False, rngs=rngs(s)) for s in (1, 2)]
  assert np.abs(noisy[0] - clean).max() > 1e-3 and np.abs(noisy[0] - noisy[1]).max() > 1e-3
  np.testing.assert_array_equal(apply({'params': params}, *x, deterministic=True), clean)


def test_invalid_model_config_fails_before_tracing():
  config = tiny_config('gpt', attention_impl='flash')
  with pytest.raises(errors.ConfigError, match=r"config.model.attention_impl='flash'"):
    models.build_model(config)


def test_bert_predict_positions_gather_before_the_vocab_projection():
  _, apply, params = model_and_params('bert')
  toks, segs, pos = _inputs('bert')
  at = np.array([[1, 4, 9]], np.int32)
  full = apply({'params': params}, toks, segs, pos)
  picked = apply({'params': params}, toks, segs, pos, predict_positions=at)
  assert picked.shape == (1, 3, 128)
  np.testing.assert_allclose(picked[0], full[0, at[0]], atol=1e-6)
