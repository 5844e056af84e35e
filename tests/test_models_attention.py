"""Attention semantics: causality by gradient, no leaks across packed documents, the fused
and einsum kernels agree, masks built from segment ids, finite padding rows."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptlm_jax.models import attention, layers
from models_testing import arange_positions, model_and_params, packed_row

L = 12


def _jacobian_norms(family, prefix_mask=None):
  """g[t, s] = |d readout(out[t]) / d x[s]| (x: the layer stack's input), all t at once."""
  model, _, params = model_and_params(family, attention_impl='einsum')
  seg = np.ones((1, L), np.int32)
  pos = arange_positions(1, L)
  x = jax.random.normal(jax.random.key(1), (1, L, 32))
  readout_D = jax.random.normal(jax.random.key(2), (32,))  # a plain sum of a LayerNorm is 0

  def run(m, x):
    if family == 'bert':
      return m.encoder(x, seg, True)
    if family == 'gpt':
      return m.decoder(x, seg, prefix_mask, True, False)
    encoded = m.encode(jnp.ones((1, 5), jnp.int32), jnp.ones((1, 5), jnp.int32),
                       arange_positions(1, 5))
    return m.decoder(x, seg, pos, encoded, jnp.ones((1, 5), jnp.int32), True, False)

  out_L = lambda x: model.apply({'params': params}, x, method=run)[0] @ readout_D
  jac_LxLxD = jax.jit(jax.jacrev(out_L))(x)[:, 0]
  return np.abs(np.asarray(jac_LxLxD)).sum(-1)


@pytest.mark.parametrize('family', ['gpt', 't5'])
def test_decoder_output_has_zero_gradient_from_later_inputs(family):
  g = _jacobian_norms(family)
  later = np.triu(np.ones((L, L), bool), k=1)
  assert np.all(g[later] == 0.0)
  assert np.all(g[~later] > 1e-6)


def test_bert_output_depends_on_both_sides():
  assert np.all(_jacobian_norms('bert') > 1e-6)


def test_prefix_lm_sees_its_whole_prefix_and_nothing_after():
  prefix = np.zeros((1, L), bool)
  prefix[0, :5] = True
  g = _jacobian_norms('gpt', prefix)
  allowed = np.tril(np.ones((L, L), bool))
  allowed[:5, :5] = True
  assert np.all(g[~allowed] == 0.0)
  assert np.all(g[allowed] > 1e-6)


def _rows(family):
  """Row 0 packs documents of 4, 5, 3 tokens; row 1 changes document 2; row 2 holds
  document 3 alone (positions from 0); T5 adds row 3, changing encoder document 2."""
  toks, segs, pos = packed_row((4, 5, 3), 14, seed=0)
  changed = toks.copy()
  changed[0, 4:9] = (changed[0, 4:9] + 11) % 121 + 7
  alone = (np.zeros_like(toks), np.zeros_like(segs), np.zeros_like(pos))
  alone[0][0, :3], alone[1][0, :3], alone[2][0, :3] = toks[0, 9:12], 1, np.arange(3)
  dec = [np.concatenate(x) for x in zip((toks, segs, pos), (changed, segs, pos), alone)]
  if family != 't5':
    return dec, None
  etoks, esegs, epos = packed_row((3, 4, 5), 13, seed=1)
  echanged = etoks.copy()
  echanged[0, 3:7] = (echanged[0, 3:7] + 5) % 121 + 7
  ealone = (np.zeros_like(etoks), np.zeros_like(esegs), np.zeros_like(epos))
  ealone[0][0, :5], ealone[1][0, :5], ealone[2][0, :5] = etoks[0, 7:12], 1, np.arange(5)
  enc = [np.concatenate(x) for x in zip((etoks, esegs, epos), (etoks, esegs, epos), ealone,
                                        (echanged, esegs, epos))]
  dec = [np.concatenate([x, x[:1]]) for x in dec]
  return dec, enc


@pytest.mark.parametrize('family', ['bert', 'gpt', 't5'])
def test_packed_documents_do_not_leak_on_either_kernel(family):
  dec, enc = _rows(family)
  segs = dec[1][0]
  others = (segs == 1) | (segs == 3)
  outputs = {}
  for impl in ('einsum', 'xla'):
    _, apply, params = model_and_params(family, attention_impl=impl)
    out = np.asarray(apply({'params': params}, *(enc or []), *dec))
    outputs[impl] = out
    np.testing.assert_allclose(out[1, others], out[0, others], atol=1e-6)
    assert np.abs(out[1, segs == 2] - out[0, segs == 2]).max() > 1e-3
    # A packed document gives what it gives alone in its own row.
    np.testing.assert_allclose(out[2, :3], out[0, 9:12], atol=2e-5)
    if family == 't5':  # cross-attention: decoder document i reads encoder document i only
      np.testing.assert_allclose(out[3, others], out[0, others], atol=1e-6)
      assert np.abs(out[3, segs == 2] - out[0, segs == 2]).max() > 1e-3
  # jax.nn.dot_product_attention (XLA on CPU) computes what the einsum path computes.
  real = dec[1] != 0
  np.testing.assert_allclose(outputs['xla'][real], outputs['einsum'][real], atol=1e-5)


def test_masks_from_segment_ids_by_hand():
  segs = np.array([[1, 1, 2, 2, 0]])
  slots = arange_positions(1, 5)
  expected_bidi = np.array([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0],
                            [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(attention.segment_mask(segs, segs)[0, 0], expected_bidi)
  expected_causal = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0],
                              [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(attention.decoder_mask(segs, segs, slots, slots)[0, 0],
                                expected_causal)
  prefix = np.array([[True, True, True, False, False]])  # doc 1 and the first of doc 2
  got = attention.decoder_mask(segs, segs, slots, slots, prefix, prefix)[0, 0]
  expected_causal[0, 1] = True  # the prefix sees ahead only inside its own document
  np.testing.assert_array_equal(got, expected_causal)


def test_t5_relative_buckets_match_hand_computed_reference():
  # HF _relative_position_bucket, num_buckets=32, max_distance=128, by hand:
  # bidirectional: 16 per sign, exact below 8; 8 + floor(log(n/8)/log(16) * 8) above.
  rel = np.array([-130, -20, -8, -7, -1, 0, 1, 7, 8, 20, 130])
  bidi = layers.relative_position_bucket(rel, True, 32, 128)
  np.testing.assert_array_equal(bidi, [15, 10, 8, 7, 1, 0, 17, 23, 24, 26, 31])
  # causal: keys after the query share bucket 0; 32 buckets, exact below 16.
  causal = layers.relative_position_bucket(rel, False, 32, 128)
  np.testing.assert_array_equal(causal, [31, 17, 8, 7, 1, 0, 0, 0, 0, 0, 0])


def test_padding_rows_stay_finite_with_finite_gradients():
  for impl in ('einsum', 'xla'):
    model, _, params = model_and_params('gpt', attention_impl=impl)
    toks = np.zeros((2, 6), np.int32)
    segs = np.zeros((2, 6), np.int32)
    segs[0, :3] = 1  # row 1 is all padding
    loss = lambda p: model.apply({'params': p}, toks, segs, arange_positions(2, 6)).sum()
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize('family', ['bert', 'gpt', 't5'])
def test_fused_kernel_gets_a_boolean_mask_and_equals_einsum_with_gradients(family, monkeypatch):
  # On packed rows (documents of 4, 5, 3 tokens and padding), jax.nn.dot_product_attention
  # (implementation='xla', the fused path on CPU) gets the segment mask as a boolean mask,
  # is_causal for causal self-attention, and as a float bias only T5's learned relative
  # bias; it computes the einsum path's logits and parameter gradients.
  dec, enc = _rows(family)
  inputs = [jnp.asarray(x) for x in (*(enc or []), *dec)]
  calls = []
  fused = jax.nn.dot_product_attention

  def spy(q, k, v, bias=None, mask=None, **kwargs):
    calls.append((None if mask is None else str(mask.dtype), bias is not None, kwargs['is_causal'],
                  q.shape[1] == k.shape[1]))
    return fused(q, k, v, bias=bias, mask=mask, **kwargs)

  monkeypatch.setattr(jax.nn, 'dot_product_attention', spy)
  results = {}
  for impl in ('einsum', 'xla'):
    model, _, params = model_and_params(family, attention_impl=impl)
    readout = jax.random.normal(jax.random.key(3), (model.config.vocab_size,))

    def loss(p):
      logits = model.apply({'params': p}, *inputs)
      weights = (dec[1] != 0)[..., None]  # real positions only: padding rows are arbitrary
      return jnp.sum(jnp.where(weights, logits * readout, 0.0))

    results[impl] = jax.jit(jax.value_and_grad(loss))(params)
  # One trace: every layer's self-attention (and T5's cross-attention) went through spy.
  layers_per_stack = 2
  expected = {'bert': layers_per_stack, 'gpt': layers_per_stack, 't5': 3 * layers_per_stack}
  assert len(calls) == expected[family], calls
  if family == 'bert':
    assert set(calls) == {('bool', False, False, True)}
  elif family == 'gpt':
    assert set(calls) == {('bool', False, True, True)}
  else:  # encoder: bidirectional + relative bias; decoder: causal + bias; cross: mask only
    assert set(calls) == {('bool', True, False, True), ('bool', True, True, True),
                          ('bool', False, False, False)}
  (loss_e, grads_e), (loss_x, grads_x) = results['einsum'], results['xla']
  np.testing.assert_allclose(loss_x, loss_e, rtol=1e-5)
  for path, g_e in jax.tree_util.tree_leaves_with_path(grads_e):
    g_x = dict(jax.tree_util.tree_leaves_with_path(grads_x))[path]
    scale = np.abs(np.asarray(g_e)).max() + 1e-12
    np.testing.assert_allclose(g_x, g_e, atol=2e-5 * scale + 1e-7, err_msg=str(path))
    if 'relpos' in jax.tree_util.keystr(path):  # the learned bias gets its gradient
      assert np.abs(np.asarray(g_x)).max() > 1e-6
