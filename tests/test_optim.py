"""Schedules against hand-computed values; weight-decay mask; optimizer settings; PEFT hook."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ptlm_jax import config_lib, errors
from ptlm_jax.training import optim


def _config(**optim_fields):
  c = config_lib.base_config('gpt', 'tiny')
  c.optim.lr, c.optim.warmup_steps, c.optim.final_lr_frac = 2e-3, 4, 0.1
  c.train.steps = 12
  for k, v in optim_fields.items():
    c.optim[k] = v
  return c


# lr(step) with lr 2e-3, W=4, S=12, f=0.1; n = step + 1.  Worked by hand:
#   warmup n=1: 1/4.  linear n=8: p=(8-4)/8=.5 -> 1-.9*.5=.55.  cosine n=6: p=.25 ->
#   .1+.45*(1+cos(pi/4))=.868198.  rsqrt n=16: sqrt(4/16)=.5; n=1600: sqrt(4/1600)=.05 < f;
#   rsqrt holds the peak for n <= W (T5: constant 1e-2 for 10k steps), no ramp: n=1 -> 2e-3.
@pytest.mark.parametrize('decay, step, expected', [
    ('linear', 0, 5e-4), ('linear', 3, 2e-3), ('linear', 7, 1.1e-3), ('linear', 11, 2e-4),
    ('linear', 50, 2e-4),
    ('cosine', 0, 5e-4), ('cosine', 5, 2e-3 * 0.8681980515), ('cosine', 7, 1.1e-3),
    ('cosine', 11, 2e-4),
    ('rsqrt', 0, 2e-3), ('rsqrt', 2, 2e-3), ('rsqrt', 3, 2e-3), ('rsqrt', 15, 1e-3), ('rsqrt', 399, 2e-4),
    ('rsqrt', 1599, 2e-4),
    ('constant', 1, 1e-3), ('constant', 99, 2e-3),
])
@pytest.mark.parametrize('xp', [jnp, np], ids=['jnp', 'numpy'])  # in the step / on the host
def test_schedule_matches_hand_computed_values(decay, step, expected, xp):
  schedule = optim.make_schedule(_config(decay=decay), xp=xp)
  assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)


def test_schedule_without_warmup_starts_decaying_at_once():
  schedule = optim.make_schedule(_config(decay='linear', warmup_steps=0))
  assert float(schedule(0)) == pytest.approx(2e-3 * (1 - 0.9 / 12), rel=1e-6)


def test_weight_decay_mask_skips_biases_scales_and_norms():
  params = {'Dense_0': {'kernel': 1, 'bias': 1}, 'LayerNorm_0': {'scale': 1, 'bias': 1},
            'final_norm': {'weight': 1}, 'RMSNorm_3': {'gain': 1},
            'embedding': 1, 'block': {'mlp': {'kernel': 1}, 'attn_out': 1}}
  assert optim.decay_mask(params) == {
      'Dense_0': {'kernel': True, 'bias': False}, 'LayerNorm_0': {'scale': False, 'bias': False},
      'final_norm': {'weight': False}, 'RMSNorm_3': {'gain': False},
      'embedding': True, 'block': {'mlp': {'kernel': True}, 'attn_out': True}}


def _params():
  return {'Dense_0': {'kernel': jnp.full((3, 2), 2.0), 'bias': jnp.full((2,), 2.0)},
          'LayerNorm_0': {'scale': jnp.full((2,), 2.0)}}


def test_adamw_decays_kernels_only():
  c = _config(decay='constant', warmup_steps=0, optimizer='adamw', weight_decay=0.5)
  tx = optim.make_optimizer(c)
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)  # Adam's own step is 0/(0+eps) = 0
  updates, _ = tx.update(zeros, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new['Dense_0']['kernel'], 2.0 * (1 - 2e-3 * 0.5), rtol=1e-6)
  np.testing.assert_array_equal(new['Dense_0']['bias'], 2.0)
  np.testing.assert_array_equal(new['LayerNorm_0']['scale'], 2.0)


def test_adafactor_has_t5_settings():
  c = _config(decay='constant', warmup_steps=0, optimizer='adafactor', weight_decay=0.0,
              grad_clip_norm=0.0)
  tx = optim.make_optimizer(c)
  rng = np.random.default_rng(0)
  params = {'big': jnp.asarray(rng.normal(size=(256, 128)), jnp.float32),
            'small': jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)}
  state = tx.init(params)
  factored = [s for s in jax.tree.leaves(state) if hasattr(s, 'shape')]
  shapes = sorted(tuple(s.shape) for s in factored)
  # Factored second moments (row 256, column 128) for the big matrix only; no momentum
  # (no leaf shaped like the parameters besides the small matrix's unfactored v).
  assert (256,) in shapes and (128,) in shapes and (256, 128) not in shapes
  assert shapes.count((8, 8)) == 1
  grads = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
  update = lambda p, g: tx.update(g, tx.init(p), p)[0]
  base = update(params, grads)
  # Updates scale with the parameter's RMS and not with the gradient's size.
  doubled = update(jax.tree.map(lambda p: 2 * p, params), grads)
  big_grads = update(params, jax.tree.map(lambda g: 100 * g, grads))
  for k in params:
    np.testing.assert_allclose(doubled[k], 2 * base[k], rtol=1e-4)
    np.testing.assert_allclose(big_grads[k], base[k], rtol=1e-4)
    # First step: update clipping at RMS 1.0 bounds the step by lr * RMS(param).
    rms = lambda x: float(jnp.sqrt(jnp.mean(jnp.square(x))))
    assert rms(base[k]) <= 2e-3 * rms(params[k]) * 1.0001


def test_sgd_momentum_and_global_norm_clipping():
  c = _config(decay='constant', warmup_steps=0, optimizer='sgd', momentum=0.9,
              weight_decay=0.0, grad_clip_norm=1.0)
  tx = optim.make_optimizer(c)
  params = {'w': jnp.zeros((4,))}
  grads = {'w': jnp.array([6.0, 8.0, 0.0, 0.0])}  # norm 10, clipped to 1
  state = tx.init(params)
  first, state = tx.update(grads, state, params)
  second, _ = tx.update(grads, state, params)
  unit = np.array([0.6, 0.8, 0.0, 0.0])
  np.testing.assert_allclose(first['w'], -2e-3 * unit, rtol=1e-6)
  np.testing.assert_allclose(second['w'], -2e-3 * 1.9 * unit, rtol=1e-6)


def test_labels_freeze_leaves_without_state_and_scale_rates():
  c = _config(decay='constant', warmup_steps=0, optimizer='sgd', momentum=0.9,
              weight_decay=0.0, grad_clip_norm=0.0)
  params = {'a': jnp.ones((5,)), 'b': jnp.ones((7,)), 'c': jnp.ones((11,))}
  labels = {'a': 'train', 'b': 'freeze', 'c': 'lr*0.5'}
  tx = optim.make_optimizer(c, params, labels)
  state = tx.init(params)
  sizes = sorted(x.size for x in jax.tree.leaves(state) if hasattr(x, 'size') and x.size > 1)
  assert sizes == [5, 11]  # momentum for the trained leaves only
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(updates['a'], -2e-3)
  np.testing.assert_array_equal(updates['b'], 0.0)
  np.testing.assert_allclose(updates['c'], -1e-3)


def test_bad_label_is_a_config_error():
  params = {'a': jnp.ones((2,))}
  with pytest.raises(errors.ConfigError, match='peft.rules'):
    optim.make_optimizer(_config(), params, {'a': 'thaw'})


def test_rsqrt_is_t5s_schedule():
  # Raffel et al. 2020, sec. 3.1.2: lr = 1 / sqrt(max(n, k)), k = 10^4: 0.01 for the first
  # 10^4 steps, then 1 / sqrt(n) (n = 40,000 -> 0.005; n = 10^6 -> 0.001).
  c = _config(decay='rsqrt', warmup_steps=10_000, lr=1e-2, final_lr_frac=0.0)
  c.train.steps = 10**6
  schedule = optim.make_schedule(c)
  for n, expected in ((1, 0.01), (5_000, 0.01), (10_000, 0.01), (40_000, 0.005),
                      (10**6, 0.001)):
    assert float(schedule(n - 1)) == pytest.approx(expected, rel=1e-6), n
