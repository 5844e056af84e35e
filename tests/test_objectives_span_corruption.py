"""T5 span corruption against a line-by-line numpy port of T5's reference functions.

The port (`t5_reference.py`) feeds a fixed segmentation to both it and the code under
test; statistics check the random parts.
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptlm_jax import config_lib, errors, objectives
from ptlm_jax.data import vocab
from ptlm_jax.objectives import span_corruption as sc
from tests.t5_reference import (t5_noise_span_to_unique_sentinel,
                                t5_nonnoise_span_to_unique_sentinel, t5_random_spans_helper,
                                t5_random_spans_noise_mask)

VOCAB = vocab.VocabInfo(piece_count=1000)
TOP = VOCAB.size - 1  # <extra_id_0>


# --- helpers --------------------------------------------------------------------------

def packed_rows(rng, batch, length, fill=1.0):
  """Rows of documents (ordinary ids, EOS-terminated), padded after `fill` of the row."""
  tokens = np.zeros((batch, length), np.int32)
  segments = np.zeros((batch, length), np.int32)
  for b in range(batch):
    end = length if fill >= 1 else int(rng.integers(1, length))
    i, s = 0, 1
    while i < end:
      n = min(int(rng.integers(1, 40)), end - i)
      tokens[b, i:i + n] = rng.integers(vocab.FIRST_ORDINARY_ID, VOCAB.piece_count, n)
      tokens[b, i + n - 1] = vocab.EOS_ID
      segments[b, i:i + n] = s
      i, s = i + n, s + 1
  positions = np.zeros_like(tokens)
  return {'tokens': tokens, 'segment_ids': segments, 'positions': positions}


def reconstruct(enc, tgt):
  """Original text from inputs + targets: each sentinel in the inputs -> its span."""
  spans, current = {}, None
  for t in tgt:
    if t >= VOCAB.piece_count:
      current = spans.setdefault(t, [])
    else:
      current.append(t)  # the targets open with a sentinel, so current is set
  out = []
  for t in enc:
    out.extend(spans[t] if t >= VOCAB.piece_count else [t])
  return out


def decode_row(inputs, targets, weights, b):
  n_in = int(inputs['encoder_segment_ids'][b].sum())
  n_tg = int(weights[b].sum())
  enc = [int(t) for t in inputs['encoder_tokens'][b, :n_in]]
  tgt = [int(t) for t in targets[b, :n_tg]]
  assert enc[-1] == vocab.EOS_ID and tgt[-1] == vocab.EOS_ID
  return enc[:-1], tgt[:-1]


@functools.lru_cache(maxsize=None)
def jitted(seq_len, random_roll):
  """One compiled objective per setting, shared by the tests that use it."""
  return make_objective(seq_len, random_roll), jax.jit(make_objective(seq_len, random_roll))


def make_objective(seq_len, random_roll, density=0.15, mean=3.0):
  config = config_lib.base_config('t5', 'tiny')
  config.data.seq_len = seq_len
  config.objective.random_roll = random_roll
  config.objective.noise_density = density
  config.objective.mean_span_length = mean
  return objectives.get_objective(config, VOCAB)


# --- lengths ----------------------------------------------------------------------------

def test_lengths_helper_golden_values():
  # 568 / 114: the T5 setting; (141, 29) and (94, 64) worked by hand (the latter
  # through T5's density-0.5 adjustment: 95 tokens would give 65 targets).
  assert sc.span_corruption_lengths(512, 0.15, 3.0) == (568, 114)
  assert sc.span_corruption_lengths(128, 0.15, 3.0) == (141, 29)
  assert sc.span_corruption_lengths(64, 0.5, 3.0) == (94, 64)
  for args in itertools.product((16, 100, 256, 1024), (0.15, 0.3, 0.5), (1.0, 3.0, 8.0)):
    assert sc.span_corruption_lengths(*args) == t5_random_spans_helper(*args), args


def test_noise_counts_match_the_reference_mask_arithmetic():
  for n in range(1, 600):
    for density, mean in ((0.15, 3.0), (0.5, 8.0), (0.15, 64.0)):
      mask = t5_random_spans_noise_mask(n, density, (lambda x: x, lambda x: x), mean)
      runs = int(np.sum(mask & ~np.pad(mask[:-1], [[1, 0]])))
      num_noise, num_spans = sc.noise_counts(n, density, mean)
      if n >= 2:  # n == 1: T5 corrupts a length-2 row and keeps one non-noise token
        assert (mask.sum(), runs) == (num_noise, num_spans), n


@pytest.mark.parametrize('seq_len', [32, 512])
def test_full_rows_fill_inputs_and_targets_exactly(seq_len):
  objective, fn = jitted(seq_len, False)
  raw, targets_length = t5_random_spans_helper(seq_len, 0.15, 3.0)
  assert (objective.raw_length, objective.targets_length) == (raw, targets_length)
  batch = packed_rows(np.random.default_rng(seq_len), 4, raw)
  inputs, targets, weights = fn(batch, jax.random.PRNGKey(0))
  assert inputs['encoder_tokens'].shape == (4, seq_len)
  assert targets.shape == weights.shape == (4, targets_length)
  np.testing.assert_array_equal(inputs['encoder_segment_ids'], 1)
  np.testing.assert_array_equal(weights, 1.0)
  np.testing.assert_array_equal(inputs['decoder_segment_ids'], 1)


def test_random_roll_leaves_room_for_a_split_span():
  objective = make_objective(512, random_roll=True)
  assert (objective.raw_length, objective.targets_length) == (567, 115)


# --- the noise mask ---------------------------------------------------------------------

def test_hand_worked_example_matches_reference():
  # 12 tokens, density 0.25, mean 1.5: 3 noise tokens in 2 spans, 9 non-noise.
  # Noise cuts (shuffled [1, 0]) = [0, 1]  -> first_in_segment [0, 0, 1] -> spans (2, 1).
  # Non-noise cuts = [0, 0, 0, 1, 0, 0, 0, 0] -> (4, 5).
  # Interleaved 4, 2, 5, 1 -> F F F F T T F F F F F T.
  noise_cuts = np.array([0, 1])
  nonnoise_cuts = np.array([0, 0, 0, 1, 0, 0, 0, 0])
  expected_mask = np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1], bool)
  tokens = np.arange(20, 32, dtype=np.int32)
  ref_mask = t5_random_spans_noise_mask(12, 0.25, (lambda _: noise_cuts, lambda _: nonnoise_cuts),
                                        1.5)
  np.testing.assert_array_equal(ref_mask, expected_mask)

  size = 16  # the row buffer is longer than the row
  def first_in_segment(cuts):
    first = np.zeros(size, np.int32)
    first[1:len(cuts) + 1] = cuts
    return first
  padded = np.zeros(size, np.int32)
  padded[:12] = tokens

  @jax.jit
  def under_test(noise_first, nonnoise_first, tokens):
    mask = sc.spans_to_mask(sc.segment_lengths(nonnoise_first, 9),
                            sc.segment_lengths(noise_first, 3), size)
    kept = mask & (jnp.arange(size) < 12)  # past the row's end is not the mask's business
    return (mask,) + sc.sentinel_inputs_targets(tokens, kept, 12, TOP, 16, 8)

  mask, enc, n_in, tgt, n_tg = under_test(first_in_segment(noise_cuts),
                                          first_in_segment(nonnoise_cuts), padded)
  np.testing.assert_array_equal(mask[:12], expected_mask)
  s0, s1 = TOP, TOP - 1
  assert enc[:int(n_in)].tolist() == [20, 21, 22, 23, s0, 26, 27, 28, 29, 30, s1, 1]
  assert tgt[:int(n_tg)].tolist() == [s0, 24, 25, s1, 31, 1]
  ref_in = t5_noise_span_to_unique_sentinel(tokens, expected_mask, VOCAB.size)
  ref_tg = t5_nonnoise_span_to_unique_sentinel(tokens, expected_mask, VOCAB.size)
  assert enc[:int(n_in) - 1].tolist() == ref_in.tolist()
  assert tgt[:int(n_tg) - 1].tolist() == ref_tg.tolist()


def test_random_segmentation_is_uniform_over_compositions():
  keys = jax.random.split(jax.random.PRNGKey(1), 4000)
  seg = jax.jit(jax.vmap(lambda k: sc.random_segmentation(k, 5, 2, 8)))(keys)
  seg = np.asarray(seg)
  assert (seg[:, 2:] == 0).all() and (seg[:, :2] > 0).all() and (seg.sum(1) == 5).all()
  freq = np.bincount(seg[:, 0], minlength=5)[1:] / len(seg)  # (1,4) (2,3) (3,2) (4,1)
  np.testing.assert_allclose(freq, 0.25, atol=0.035)


def _sample_masks(length, size, density, mean, roll, count, seed=2):
  num_noise, num_spans = sc.noise_counts(length, density, mean)
  keys = jax.random.split(jax.random.PRNGKey(seed), count)
  f = jax.vmap(lambda k: sc.random_spans_noise_mask(k, length, size, num_noise, num_spans, roll))
  return np.asarray(jax.jit(f)(keys))


def test_mask_distribution_equals_reference_enumeration():
  # length 10, density 0.3, mean 1.5: 3 noise tokens in 2 spans.  Enumerating every
  # shuffle the reference can draw gives 12 masks, each with probability 1/12.
  def placements(slots, ones):
    for cut in itertools.combinations(range(slots), ones):
      v = np.zeros(slots, np.int32)
      v[list(cut)] = 1
      yield v
  support = {t5_random_spans_noise_mask(10, 0.3, (lambda _, a=a: a, lambda _, b=b: b), 1.5)
             .tobytes() for a in placements(2, 1) for b in placements(6, 1)}
  assert len(support) == 12
  masks = _sample_masks(10, 12, 0.3, 1.5, roll=False, count=3000)
  assert not masks[:, 10:].any()
  observed = [m[:10].tobytes() for m in masks]
  assert set(observed) <= support
  counts = np.array([observed.count(s) for s in support])
  assert np.abs(counts - 250).max() < 80, counts  # ~5 standard deviations


def test_without_roll_rows_end_in_noise_and_with_roll_positions_are_uniform():
  plain = _sample_masks(40, 40, 0.15, 3.0, roll=False, count=500)
  assert plain[:, -1].all() and not plain[:, 0].any()  # T5 without random_roll
  rolled = _sample_masks(40, 40, 0.15, 3.0, roll=True, count=2000).mean(0)
  assert abs(rolled.mean() - 6 / 40) < 1e-6  # every mask has exactly 6 noise tokens
  np.testing.assert_allclose(rolled, 0.15, atol=0.035)  # last position included


def test_mean_span_length_and_density_over_many_rows():
  masks = _sample_masks(568, 568, 0.15, 3.0, roll=False, count=150)
  starts = masks & ~np.pad(masks[:, :-1], [[0, 0], [1, 0]])
  assert abs(masks.sum() / starts.sum() - 3.0) < 0.1
  assert abs(masks.mean() - 0.15) < 0.005


# --- whole objective ------------------------------------------------------------------

@pytest.mark.parametrize('random_roll', [False, True])
def test_reconstruction_sentinel_order_and_layout(random_roll):
  objective, fn = jitted(64, random_roll)
  batch = packed_rows(np.random.default_rng(3), 24, objective.raw_length, fill=0.5)
  inputs, targets, weights = fn(batch, jax.random.PRNGKey(4))
  inputs = {k: np.asarray(v) for k, v in inputs.items()}
  targets, weights = np.asarray(targets), np.asarray(weights)
  for b in range(24):
    real = batch['tokens'][b][batch['segment_ids'][b] > 0].tolist()
    enc, tgt = decode_row(inputs, targets, weights, b)
    assert reconstruct(enc, tgt) == real
    sent_in = [t for t in enc if t >= VOCAB.piece_count]
    sent_tg = [t for t in tgt if t >= VOCAB.piece_count]
    assert sent_in == sent_tg == list(range(TOP, TOP - len(sent_in), -1))
    # targets open with sentinel 0, rolled or not (a 1-token row has no noise at all)
    assert tgt[:1] == ([TOP] if len(real) > 1 else [])
    n_in, n_tg = len(enc) + 1, len(tgt) + 1
    np.testing.assert_array_equal(inputs['encoder_segment_ids'][b], np.arange(64) < n_in)
    np.testing.assert_array_equal(inputs['encoder_positions'][b],
                                  np.where(np.arange(64) < n_in, np.arange(64), 0))
    np.testing.assert_array_equal(inputs['encoder_tokens'][b, n_in:], 0)
    dec = inputs['decoder_tokens'][b]
    assert dec[0] == 0 and dec[1:n_tg].tolist() == targets[b, :n_tg - 1].tolist()
    np.testing.assert_array_equal(dec[n_tg:], 0)


def test_deterministic_for_an_rng():
  objective, fn = jitted(64, True)
  batch = packed_rows(np.random.default_rng(5), 24, objective.raw_length)
  a = fn(batch, jax.random.PRNGKey(7))
  b = fn(batch, jax.random.PRNGKey(7))
  c = fn(batch, jax.random.PRNGKey(8))
  assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert not np.array_equal(a[1], c[1])


def test_user_errors():
  # ~400 spans: more sentinels than the 100 plus the model's rows above them hold.
  config = config_lib.base_config('t5', 'tiny')
  config.data.seq_len = 2048
  config.objective.update(noise_density=0.5, mean_span_length=2.0)
  config.model.vocab_size = VOCAB.size + 28
  with pytest.raises(errors.ConfigError, match='model.vocab_size.*sentinels'):
    objectives.get_objective(config, VOCAB)
  config = config_lib.base_config('t5', 'tiny')
  config.objective.targets_length = 10
  with pytest.raises(errors.ConfigError, match='objective.targets_length'):
    objectives.get_objective(config, VOCAB)
  config = config_lib.base_config('t5', 'tiny')
  with pytest.raises(errors.ConfigError, match='model.vocab_size'):
    objectives.get_objective(config, vocab.VocabInfo(piece_count=config.model.vocab_size))
  config.objective.name = 'mlm'
  with pytest.raises(errors.ConfigError, match='objective.name'):
    objectives.get_objective(config, VOCAB)
