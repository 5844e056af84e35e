"""experiments/stats.py on hand-computed cases; scipy (a test dependency) as a second reference."""
import math

import numpy as np
import pytest

from experiments import stats


@pytest.mark.parametrize('k, n, expected', [
    (1, 8, 2 * (1 + 8) / 256),            # 2 * (C(8,0) + C(8,1)) / 2^8 = 0.0703125
    (7, 8, 2 * (1 + 8) / 256),            # the other tail: the same
    (0, 5, 2 / 32),                       # 0.0625: five of five cannot reach 0.05
    (2, 10, 2 * (1 + 10 + 45) / 1024),    # 0.109375
    (4, 8, 1.0),                          # an even split: twice the tail exceeds 1
    (0, 0, 1.0),                          # no disagreements: no evidence
])
def test_exact_binomial_p_equals_the_hand_count(k, n, expected):
  assert stats.binomial_two_sided_p(k, n) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize('k, n', [(1, 8), (3, 17), (480, 1000), (60, 151), (500, 1100)])
def test_exact_binomial_p_agrees_with_scipy(k, n):
  scipy_stats = pytest.importorskip('scipy.stats')
  assert stats.binomial_two_sided_p(k, n) == pytest.approx(
      scipy_stats.binomtest(k, n, 0.5).pvalue, rel=1e-9)


def test_mcnemar_counts_only_the_disagreements():
  # 10 examples: both right on 2, both wrong on 0, only a on 1, only b on 7.
  a = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
  b = [1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
  result = stats.mcnemar(a, b)
  assert (result.only_a, result.only_b) == (1, 7)
  assert result.p == pytest.approx(0.0703125)
  # Agreements do not matter: 1,000 more examples both get right change nothing.
  more = stats.mcnemar(a + [1] * 1000, b + [1] * 1000)
  assert more.p == result.p
  with pytest.raises(ValueError):
    stats.mcnemar([1, 0], [1, 0, 1])


def test_metrics_of_summed_counts():
  assert stats.accuracy(np.array([3.0, 4.0])) == 0.75
  # tp 3, fp 1, fn 2: precision 3/4, recall 3/5, F1 = 2 * 0.75 * 0.6 / 1.35 = 2/3
  assert stats.entity_f1(np.array([3.0, 1.0, 2.0])) == pytest.approx(2 / 3)
  assert stats.entity_f1(np.array([0.0, 0.0, 0.0])) == 0.0
  counts = np.array([[1, 0, 1], [2, 1, 1], [0, 0, 0]])  # per example; sums 3, 1, 2
  assert stats.score(counts, stats.entity_f1) == pytest.approx(2 / 3)


def test_bootstrap_spread_of_one_accuracy_is_the_binomial_one():
  # 300 of 500 right: the bootstrap draws examples, so its spread is sqrt(p (1 - p) / n).
  correct = np.array([1] * 300 + [0] * 200)
  reps = stats.bootstrap({'a': stats.correct_counts(correct)}, stats.accuracy,
                         replicates=4000, seed=1)['a']
  se = math.sqrt(0.6 * 0.4 / 500)  # 0.0219
  assert reps.std() == pytest.approx(se, rel=0.06)
  low, high = stats.interval(reps)
  assert low == pytest.approx(0.6 - 1.96 * se, abs=0.004)
  assert high == pytest.approx(0.6 + 1.96 * se, abs=0.004)


def test_paired_bootstrap_sees_only_the_disagreements():
  # 400 examples; a alone right on 30, b alone right on 10, the rest shared (half right).
  a = np.array([1] * 30 + [0] * 10 + [1, 0] * 180)
  b = np.array([0] * 30 + [1] * 10 + [1, 0] * 180)
  reps = stats.bootstrap({'a': stats.correct_counts(a), 'b': stats.correct_counts(b)},
                         stats.accuracy, replicates=4000, seed=2)
  d = reps['a'] - reps['b']
  # Per-example differences: +1 (30), -1 (10), 0 (360): mean 0.05, variance 40/400 - 0.05^2.
  assert d.mean() == pytest.approx(0.05, abs=0.002)
  assert d.std() == pytest.approx(math.sqrt((0.1 - 0.0025) / 400), rel=0.06)  # 0.0156
  # Unpaired, the spread would be sqrt(2 x 0.5 x 0.5 / 400) = 0.035: more than twice as wide.
  assert d.std() < 0.5 * math.sqrt(2 * 0.25 / 400)
  # 0.05 / 0.0156 = 3.2 standard errors: the two-sided p is about 0.0014 (normal).
  assert stats.p_value(d) < 0.01
  # The same disagreements on 40 examples only: 3.2 -> 1.0 standard errors, no evidence.
  assert stats.mcnemar(a, b).p == pytest.approx(stats.binomial_two_sided_p(10, 40))


def test_bootstrap_p_value_bounds():
  # Always better: nothing on the far side of 0, so p is its floor 2 / (R + 1).
  assert stats.p_value(np.full(999, 0.1)) == pytest.approx(2 / 1000)
  # Identical models: every difference is 0, p = 1.
  assert stats.p_value(np.zeros(999)) == 1.0
  # Symmetric around 0: p = 1 (capped).
  assert stats.p_value(np.array([-1.0, 1.0] * 50)) == 1.0
  # 30 of 999 below 0: p = 2 x 31 / 1000.
  assert stats.p_value(np.array([-1.0] * 30 + [1.0] * 969)) == pytest.approx(0.062)


def test_sign_flip_test_is_mcnemar_for_one_run():
  # 1 disagreement for a, 7 for b among 8, plus 100 agreements: exact p = 18 / 256.
  a = np.array([1] + [0] * 7 + [1] * 50 + [0] * 50)
  b = np.array([0] + [1] * 7 + [1] * 50 + [0] * 50)
  p = stats.sign_flip_p(stats.correct_counts(a), stats.correct_counts(b), stats.accuracy,
                        permutations=20_000, seed=8)
  assert p == pytest.approx(18 / 256, abs=0.006)   # Monte Carlo error ~ 0.002
  # 4 disagreements, all one way: McNemar says 2 / 16 = 0.125, where the bootstrap says ~0.04
  # (it only sees 'all 4 absent' on the far side: (1 - 4/n)^n ~ e^-4).
  a, b = np.array([1] * 4 + [0] * 196), np.array([0] * 200)
  ca, cb = stats.correct_counts(a), stats.correct_counts(b)
  assert stats.sign_flip_p(ca, cb, stats.accuracy, 20_000, seed=9) == pytest.approx(0.125, abs=0.01)
  reps = stats.bootstrap({'a': ca, 'b': cb}, stats.accuracy, replicates=4000, seed=10)
  assert stats.p_value(reps['a'] - reps['b']) == pytest.approx(2 * math.exp(-4), abs=0.015)
  # Identical models: every permutation is as extreme as the observed 0.
  assert stats.sign_flip_p(ca, ca, stats.accuracy, 100) == 1.0
  with pytest.raises(ValueError):
    stats.sign_flip_p(ca, ca[:10], stats.accuracy)


def test_two_example_bootstrap_interval_is_exact():
  # Values 0 and 1: a resample's mean is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4.
  reps = stats.bootstrap({'a': stats.correct_counts([0, 1])}, stats.accuracy,
                         replicates=4000, seed=3)['a']
  assert set(np.unique(reps)) == {0.0, 0.5, 1.0}
  assert np.mean(reps == 0.5) == pytest.approx(0.5, abs=0.03)
  assert stats.interval(reps) == (0.0, 1.0)


def test_seeds_are_resampled_and_paired():
  # Fine-tuning seed 0 gets every example right, seed 1 none: the seed mean is 1/2 and a
  # resample of the two seeds gives 0, 1/2 or 1 (chances 1/4, 1/2, 1/4), whatever the examples.
  runs_FxNxK = np.stack([stats.correct_counts(np.ones(50)), stats.correct_counts(np.zeros(50))])
  assert stats.score(runs_FxNxK, stats.accuracy) == 0.5
  reps = stats.bootstrap({'a': runs_FxNxK, 'b': runs_FxNxK}, stats.accuracy,
                         replicates=4000, seed=4)
  assert np.mean(reps['a'] == 1.0) == pytest.approx(0.25, abs=0.03)
  assert stats.interval(reps['a']) == (0.0, 1.0)
  # Same number of seeds: the same seed draw, so a model equals its own copy in every replicate.
  np.testing.assert_array_equal(reps['a'], reps['b'])
  # Pretraining seeds outside fine-tuning seeds: P x F x N x K, the same law here.
  runs_PxFxNxK = runs_FxNxK[:, None]
  reps = stats.bootstrap({'a': runs_PxFxNxK}, stats.accuracy, replicates=4000, seed=5)['a']
  assert np.mean(reps == 0.0) == pytest.approx(0.25, abs=0.03)
  with pytest.raises(ValueError):
    stats.bootstrap({'a': stats.correct_counts([1, 0]), 'b': stats.correct_counts([1])},
                    stats.accuracy)


def test_ranks_and_their_intervals():
  np.testing.assert_array_equal(stats.ranks(np.array([0.9, 0.5, 0.5, 0.1])), [1, 2.5, 2.5, 4])
  n = 200
  counts = {'always': stats.correct_counts(np.ones(n)),
            'half': stats.correct_counts(np.arange(n) % 2),
            'never': stats.correct_counts(np.zeros(n))}
  reps = stats.bootstrap(counts, stats.accuracy, replicates=500, seed=6)
  observed = {k: stats.score(c, stats.accuracy) for k, c in counts.items()}
  r = stats.rank_intervals(reps, observed)
  assert (r['always'].low, r['always'].high, r['always'].p_best) == (1, 1, 1.0)
  assert (r['never'].observed, r['never'].low, r['never'].high) == (3, 3, 3)
  # Two models that differ on 2 of 200 examples: their order is a coin flip.
  a = np.array([1, 1] + [1, 0] * 99)
  b = np.array([1, 0] + [1, 0] * 99)
  c = np.array([0, 1] + [1, 0] * 99)
  counts = {'a': stats.correct_counts(a), 'b': stats.correct_counts(b),
            'c': stats.correct_counts(c)}
  reps = stats.bootstrap(counts, stats.accuracy, replicates=2000, seed=7)
  r = stats.rank_intervals(reps, {k: stats.score(v, stats.accuracy) for k, v in counts.items()})
  assert r['a'].observed == 1 and r['b'].observed == 2.5
  # b ranks 1.5 (tied first), 2, 2.5 or 3 depending on which of the two examples are drawn.
  assert (r['b'].low, r['b'].high) == (1.5, 3.0)
  assert r['a'].p_best > 0.7  # a >= b, c on every resample; ties shared


def test_format_p():
  assert stats.format_p(0.0312) == '0.031'
  assert stats.format_p(0.0004) == '< 0.001'
