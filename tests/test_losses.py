"""Token-weighted cross-entropy sums: golden values, z-loss, label smoothing, devices."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from ptlm_jax.training import losses

LOGITS = np.array([[[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]],
                   [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]], np.float32)
TARGETS = np.array([[0, 2], [0, 1]], np.int32)
# row 1, position 1 has weight 0; row 1, position 0 has target id 0 with weight 2:
# id 0 is an ordinary target here (HF's `labels > 0` mask would drop it)
WEIGHTS = np.array([[1.0, 1.0], [2.0, 0.0]], np.float32)


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(
      -1, keepdims=True)


def test_golden_values_by_hand():
  sums = losses.weighted_cross_entropy(LOGITS, TARGETS, WEIGHTS)
  # -log softmax, worked by hand (to 10 digits):
  #   [2, 0, -1]  target 0: log(e^2 + 1 + e^-1) - 2      = 0.1698460196
  #   [.5, .5, 3] target 2: log(2 e^.5 + e^3) - 3         = 0.1520083844
  #   [1, 2, 3]   target 0: log(e + e^2 + e^3) - 1 = 2.4076059645 (weight 2)
  expected = 0.1698460196 + 0.1520083844 + 2 * 2.4076059645
  np.testing.assert_allclose(sums['loss'], expected, rtol=1e-6)
  np.testing.assert_allclose(sums['nll'], expected, rtol=1e-6)
  assert float(sums['weight']) == 4.0
  assert float(sums['correct']) == 2.0  # rows 0 right twice, row 1 pos 0 wrong
  assert float(sums['z_loss']) == 0.0
  m = losses.metrics_from_sums(sums)
  np.testing.assert_allclose(m['loss'], expected / 4, rtol=1e-6)
  np.testing.assert_allclose(m['perplexity'], np.exp(expected / 4), rtol=1e-6)
  np.testing.assert_allclose(m['accuracy'], 0.5)


def test_matches_optax_without_smoothing():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 7, 50)).astype(np.float32) * 3
  targets = rng.integers(0, 50, (4, 7))
  weights = (rng.random((4, 7)) < 0.7).astype(np.float32)
  ref = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  sums = losses.weighted_cross_entropy(logits, targets, weights)
  np.testing.assert_allclose(sums['loss'], np.sum(ref * weights), rtol=1e-5)


def test_z_loss_is_t5x_log_z_squared():
  sums = losses.weighted_cross_entropy(LOGITS, TARGETS, WEIGHTS, z_loss=1e-4)
  log_z = np.log(np.exp(np.asarray(LOGITS, np.float64)).sum(-1))
  z = 1e-4 * np.sum(WEIGHTS * log_z**2)
  log_p = np.take_along_axis(np_log_softmax(LOGITS), TARGETS[..., None], -1)[..., 0]
  nll = -np.sum(WEIGHTS * log_p)
  np.testing.assert_allclose(sums['z_loss'], z, rtol=1e-5)
  np.testing.assert_allclose(sums['loss'], nll + z, rtol=1e-6)
  np.testing.assert_allclose(sums['nll'], nll, rtol=1e-6)


def t5x_smoothed(logits, targets, weights, smoothing):
  """T5X compute_weighted_cross_entropy with an explicit soft one-hot, in float64."""
  v = logits.shape[-1]
  confidence, low = 1 - smoothing, smoothing / (v - 1)
  normalizing = -(confidence * np.log(confidence) + (v - 1) * low * np.log(low + 1e-20))
  soft = np.full(logits.shape, low)
  np.put_along_axis(soft, targets[..., None], confidence, -1)
  ce = -np.sum(soft * np_log_softmax(logits), -1) - normalizing
  return np.sum(ce * weights)


def test_label_smoothing_matches_t5x():
  got = losses.weighted_cross_entropy(LOGITS, TARGETS, WEIGHTS, label_smoothing=0.1)
  np.testing.assert_allclose(got['loss'], t5x_smoothed(LOGITS, TARGETS, WEIGHTS, 0.1), rtol=1e-5)
  # a model predicting exactly the smoothed distribution scores 0 (T5X's normalizer);
  # optax.smooth_labels would not subtract it
  soft = np.full((1, 1, 5), 0.1 / 4)
  soft[0, 0, 3] = 0.9
  perfect = losses.weighted_cross_entropy(np.log(soft), np.array([[3]]), np.ones((1, 1)),
                                          label_smoothing=0.1)
  assert abs(float(perfect['loss'])) < 1e-5
  assert float(perfect['nll']) == pytest.approx(-np.log(0.9), rel=1e-5)


def test_bf16_logits_are_stable():
  logits = np.zeros((1, 2, 8), np.float32)
  logits[0, 0, 1], logits[0, 1, 5] = 3e4, -3e4  # exp overflows float32 without the shift
  sums = losses.weighted_cross_entropy(jnp.asarray(logits, jnp.bfloat16), np.array([[1, 2]]),
                                       np.ones((1, 2)), z_loss=1e-4)
  assert all(np.isfinite(float(v)) for v in sums.values())
  bf = np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32), np.float64)
  lse = np.log(np.exp(bf - bf.max(-1, keepdims=True)).sum(-1)) + bf.max(-1)
  expected_nll = (lse[0, 0] - bf[0, 0, 1]) + (lse[0, 1] - bf[0, 1, 2])
  np.testing.assert_allclose(sums['nll'], expected_nll, rtol=1e-5, atol=1e-5)
  assert sums['loss'].dtype == jnp.float32


def test_empty_batch_reports_zero_not_nan():
  sums = losses.weighted_cross_entropy(LOGITS, TARGETS, np.zeros_like(WEIGHTS))
  m = losses.metrics_from_sums(sums)
  assert float(m['loss']) == 0.0 and float(m['perplexity']) == 1.0


def test_cross_device_sums_equal_single_device():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(8, 6, 32)).astype(np.float32) * 2
  targets = rng.integers(0, 32, (8, 6))
  # very uneven token counts per device: a mean of per-device means would be wrong
  counts = np.array([6, 1, 0, 3, 6, 2, 5, 1])
  weights = (np.arange(6)[None, :] < counts[:, None]).astype(np.float32)
  single = losses.metrics_from_sums(
      losses.weighted_cross_entropy(logits, targets, weights, z_loss=1e-4, label_smoothing=0.1))

  mesh = jax.make_mesh((8,), ('data',))

  def per_device(lg, tg, w):
    sums = losses.weighted_cross_entropy(lg, tg, w, z_loss=1e-4, label_smoothing=0.1)
    local_mean = sums['loss'] / jnp.maximum(sums['weight'], 1e-9)
    return jax.lax.psum(sums, 'data'), local_mean[None]

  spec = PartitionSpec('data')
  placed = [jax.device_put(x, NamedSharding(mesh, spec)) for x in (logits, targets, weights)]
  summed, local_means = jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(spec, spec, spec),
      out_specs=(PartitionSpec(), spec)))(*placed)
  multi = losses.metrics_from_sums(summed)
  for k in single:
    np.testing.assert_allclose(multi[k], single[k], rtol=1e-5)
  mean_of_means = np.mean(np.asarray(local_means)[counts > 0])
  assert abs(mean_of_means - float(single['loss'])) > 0.05

  # microbatches: sums over halves add up to the whole
  halves = [losses.weighted_cross_entropy(logits[i::2], targets[i::2], weights[i::2])
            for i in range(2)]
  whole = losses.weighted_cross_entropy(logits, targets, weights)
  for k in whole:
    np.testing.assert_allclose(halves[0][k] + halves[1][k], whole[k], rtol=1e-5)


@pytest.mark.parametrize('mode, mesh, rows_per_device', [
    ('mesh', (8, 1, 1), 8), ('mesh', (4, 2, 1), 8), ('mesh', (2, 2, 2), 16), ('pmap', None, 8)])
def test_fused_head_chunks_are_sized_per_device(mode, mesh, rows_per_device, monkeypatch):
  # The real GPT train step on 8 fake devices, global batch 64, 32 positions, 128 tokens
  # per chunk: C = 128 / rows per device (16 on data 8, 8 with a tensor axis; under jit the
  # loss sees all 64 rows, which gave C = 2), whatever the mode.
  from benchmarks import train_step as benchmark_train  # pylint: disable=g-import-not-at-top
  c = benchmark_train.preset_config('gpt', 'small', dict(vocab=384, d_model=32, layers=1, heads=2,
                                                         ffn=64, seq=32, batch=64))
  c.data.sp_vocab_size = 284
  c.train.loss_chunk_tokens = 128
  c.parallel.update(mode=mode, num_devices=0)
  if mesh:
    c.parallel.update(mesh_data=mesh[0], mesh_fsdp=mesh[1], mesh_tensor=mesh[2])
  seen = []
  real = losses.chunk_positions
  monkeypatch.setattr(losses, 'chunk_positions',
                      lambda b, t, n: seen.append((b, t, n)) or real(b, t, n))
  if mode == 'mesh':
    benchmark_train._lower_step(c)  # pylint: disable=protected-access
  else:
    benchmark_train.TrainBench(c)
  assert seen and set(seen) == {(rows_per_device, 32, 128)}, seen
  assert real(*seen[0]) == 128 // rows_per_device
