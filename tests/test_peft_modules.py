"""Prefix tuning and adapters in the shared layers: a hand-computed attention, cached
decoding, identity at init, and training in every family while the base stays fixed."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models_testing
import peft_testlib
import stand_ins
from ptlm_jax import models
from ptlm_jax.hf import convert as hf_import
from ptlm_jax.models import attention, layers as layers_lib
from ptlm_jax.peft import partitions as peft
from ptlm_jax.training import pretrained, train

STEPS = 4
STEPS_TRAIN = 30


def test_prefix_slots_are_attended_by_every_query():
  c = models_testing.tiny_config('gpt', prefix_length=2, attention_impl='einsum')
  layer = attention.Attention(c)
  x_BxTxD = jax.random.normal(jax.random.key(0), (1, 3, c.d_model))
  causal_Bx1xTxT = jnp.tril(jnp.ones((3, 3), bool))[None, None]
  params = nn.unbox(layer.init(jax.random.key(1), x_BxTxD, x_BxTxD, causal_Bx1xTxT))['params']
  out = layer.apply({'params': params}, x_BxTxD, x_BxTxD, causal_Bx1xTxT)

  # By hand, in numpy: softmax over [prefix slots, causal keys] per head.
  p = jax.tree.map(np.asarray, params)
  x = np.asarray(x_BxTxD[0], np.float64)
  proj = lambda name: np.einsum('td,dhk->thk', x, p[name]['kernel']) + p[name]['bias']
  q, k, v = proj('query'), proj('key'), proj('value')
  k = np.concatenate([p['prefix']['key'], k])
  v = np.concatenate([p['prefix']['value'], v])
  allowed = np.concatenate([np.ones((3, 2), bool), np.tril(np.ones((3, 3), bool))], axis=1)
  logits = np.einsum('thk,shk->hts', q, k) / np.sqrt(c.head_dim)
  logits = np.where(allowed[None], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  expected = np.einsum('hts,shk->thk', weights, v)
  expected = np.einsum('thk,hkd->td', expected, p['out']['kernel']) + p['out']['bias']
  np.testing.assert_allclose(out[0], expected, atol=1e-5)


@pytest.mark.parametrize('family, overrides', [
    ('gpt', dict(prefix_length=3, scan_layers=True)),
    ('t5', dict(prefix_length=3, prefix_hidden=8)),
])
def test_cached_decoding_with_prefixes_equals_the_full_forward(family, overrides):
  config = models_testing.tiny_config(family, num_layers=1, num_decoder_layers=1, **overrides)
  model = models.build_model(config)
  params = peft_testlib.random_params(config, std=0.3)
  tokens_BxT = np.random.RandomState(0).randint(7, 128, (2, STEPS)).astype(np.int32)
  ones_BxT = np.ones((2, STEPS), np.int32)
  positions_BxT = models_testing.arange_positions(2, STEPS)
  if family == 'gpt':
    inputs = dict(tokens=tokens_BxT, segment_ids=ones_BxT, positions=positions_BxT)
    cache = models.init_cache(model, 2, STEPS)
  else:
    inputs = dict(encoder_tokens=tokens_BxT[:, ::-1], encoder_segment_ids=ones_BxT,
                  encoder_positions=positions_BxT, decoder_tokens=tokens_BxT,
                  decoder_segment_ids=ones_BxT, decoder_positions=positions_BxT)
    cache = models.init_cache(model, 2, STEPS, encoder_length=STEPS)

  def step(params, cache, i, encoded=None):
    one = lambda x_BxT: jax.lax.dynamic_slice_in_dim(x_BxT, i, 1, axis=1)
    args = (one(tokens_BxT), one(ones_BxT), one(positions_BxT))
    if family == 't5':  # the encoder's keys/values are cached by the first call
      args = (encoded, ones_BxT if encoded is not None else None) + args
    logits, variables = model.apply({'params': params, 'cache': cache}, *args, decode=True,
                                    mutable=['cache'], method=None if family == 'gpt' else 'decode')
    return variables['cache'], logits[:, 0]

  @jax.jit
  def full_and_stepwise(params, cache):
    full = model.apply({'params': params}, **inputs)
    first = None
    if family == 't5':
      encoded = model.apply({'params': params}, tokens_BxT[:, ::-1], ones_BxT, positions_BxT,
                            method='encode')
      cache, first = step(params, cache, 0, encoded)
    start = 0 if first is None else 1
    _, rest = jax.lax.scan(lambda c, i: step(params, c, i), cache, jnp.arange(start, STEPS))
    rest_BxTxV = jnp.swapaxes(rest, 0, 1)
    stepwise = rest_BxTxV if first is None else jnp.concatenate([first[:, None], rest_BxTxV], 1)
    no_prefix = peft.unflatten({k: v for k, v in peft.flatten(params).items()
                                if '/prefix/' not in k})
    plain = models.build_model(models_testing.tiny_config(
        family, num_layers=1, num_decoder_layers=1, scan_layers=config.scan_layers))
    return full, stepwise, plain.apply({'params': no_prefix}, **inputs)

  full, stepwise, without = full_and_stepwise(params, cache)
  np.testing.assert_allclose(stepwise, full, atol=1e-5)
  assert float(jnp.max(jnp.abs(without - full))) > 1e-2  # the prefixes matter


def test_fresh_adapters_compute_the_base_model():
  # BERT: post-LN, the adapter sits inside the norm; GPT and T5 wrap the same two outputs.
  base_config = models_testing.tiny_config('bert', num_layers=1)
  config = models_testing.tiny_config('bert', num_layers=1, adapter_dim=4)
  base_params = peft_testlib.random_params(base_config)
  params = peft.combine(peft_testlib.random_params(config, seed=1), base_params)
  params = peft.unflatten({k: (np.zeros_like(v) if '_adapter/up/' in k else v)  # as init makes
                           for k, v in peft.flatten(params).items()})
  inputs = models.dummy_inputs(base_config, 2, 8)
  base, adapted = jax.jit(lambda p, q: (
      models.build_model(base_config).apply({'params': p}, **inputs),
      models.build_model(config).apply({'params': q}, **inputs)))(base_params, params)
  np.testing.assert_allclose(adapted, base, atol=1e-6, rtol=0)
  # ... and init does start `up` at zero, in each family: two adapters per layer.
  for family, layers in (('bert', 1), ('gpt', 1), ('t5', 2)):
    config = models_testing.tiny_config(family, num_layers=1, num_decoder_layers=1, adapter_dim=4)
    boxed = models.abstract_params(config)
    ups = [p for p in peft.flatten(nn.unbox(boxed)) if '_adapter/up/kernel' in p]
    assert len(ups) == 2 * layers, ups
  layer = layers_lib.Adapter(config)
  x_BxLxD = jnp.ones((1, 2, config.d_model))
  variables = layer.init(jax.random.key(0), x_BxLxD)
  np.testing.assert_array_equal(layer.apply(variables, x_BxLxD), x_BxLxD)


# ---------------------------------------------------------------------------
# Training through the loop, from a base model dir.

@pytest.fixture(scope='module')
def base_dirs(tmp_path_factory):
  """A ptlm_jax model dir of a fresh 1-layer model per family (the frozen base)."""
  out = {}
  for family in ('bert', 'gpt', 't5'):
    config = peft_testlib.family_config(family, num_layers=1, num_decoder_layers=1).model
    path = str(tmp_path_factory.mktemp(f'{family}_base'))
    hf_import.save_model_dir(path, peft_testlib.random_params(config), config)
    out[family] = path
  return out


@pytest.mark.parametrize('family', ['bert', 'gpt', 't5'])
@pytest.mark.parametrize('method', ['prefix', 'adapter'])
def test_method_trains_while_the_base_stays_bit_identical(family, method, base_dirs, tmp_path,
                                                          monkeypatch):
  # The params the loop holds in memory when it saves (before they are cut down to what the
  # checkpoint keeps): the frozen base must come out of training bit for bit.
  held = {}
  select = peft.select

  def spy(tree, paths):
    if all(isinstance(x, jax.Array) for x in jax.tree.leaves(tree)):
      held['params'] = jax.tree.map(lambda x: np.asarray(x)[0], tree)  # pmap: device 0's copy
    return select(tree, paths)

  monkeypatch.setattr(peft, 'select', spy)
  overrides = {'train.steps': STEPS_TRAIN, 'train.checkpoint_every': STEPS_TRAIN,
               'optim.lr': 5e-2, 'peft.method': method, 'init.source': base_dirs[family],
               'objective.static_masking': True}  # BERT: the same masks every step
  fields = dict(prefix_length=4) if method == 'prefix' else dict(adapter_dim=8)
  config = peft_testlib.family_config(family, overrides, **fields)
  train.run(config, str(tmp_path), peft_testlib.components_fn(num_batches=1))
  losses = [m['loss'] for m in stand_ins.read_metrics(str(tmp_path)).values()]
  # The same batch every step (no dropout): a frozen model would repeat its loss exactly.
  assert np.mean(losses[-5:]) < losses[0] - 0.05, losses

  # The checkpoint holds the method's params only; rebuilt on the base, the base is unchanged.
  saved = peft_testlib.flat(peft_testlib.restore_state(str(tmp_path), STEPS_TRAIN)['params'])
  own = '/prefix/' if method == 'prefix' else '_adapter/|norm'
  assert saved and all(re.search(own, p) for p in saved), sorted(saved)
  _, base, _ = pretrained.from_pretrained(base_dirs[family])
  base, trained = peft_testlib.flat(base), peft_testlib.flat(held['params'])
  assert set(trained) == set(base) | set(saved)
  for path, value in trained.items():
    if path in saved:
      assert path not in base or not np.array_equal(value, base[path]), path  # it trained
    else:
      np.testing.assert_array_equal(value, base[path], err_msg=path)  # frozen: untouched
  # Rebuilt from the workdir (base dir + checkpoint), the model is the one that trained.
  _, rebuilt, _ = pretrained.from_pretrained(str(tmp_path))
  for path, value in peft_testlib.flat(rebuilt).items():
    np.testing.assert_array_equal(value, trained[path], err_msg=path)
