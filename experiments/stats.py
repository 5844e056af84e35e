r"""Paired statistics for comparing models on one validation set: McNemar, bootstrap, ranks.

Pure numpy and the standard library, so a report can be rebuilt anywhere.  Every model is
scored on the same validation examples, so comparisons are paired: the exact McNemar
test looks only at the examples two classifiers disagree on, and the bootstrap resamples
examples (and seeds) once per replicate and applies the same draw to every model.

  counts = {'bert': correct_SxNx2, 'scratch': other_SxNx2}   # per-example sums (see below)
  reps = bootstrap(counts, ACCURACY, replicates=2000, seed=0)  # {name: R seed-mean scores}
  low, high = interval(reps['bert'] - reps['scratch'])         # 95% interval of the gain
  p = p_value(reps['bert'] - reps['scratch'])                  # two-sided, H0: no gain
  sign_flip_p(counts['bert'], counts['scratch'], ACCURACY)     # paired permutation test
  mcnemar(correct_a_N, correct_b_N).p                          # exact binomial

A metric is a function of per-example counts summed over examples, so the same code
serves accuracy (counts: correct, 1) and entity F1 (counts: true positives, false
positives, false negatives); its value over a resample is the metric of the weighted sums.
With seeds, a model's score is the mean over its seeds; seeds are resampled in two
levels (pretraining seeds, then fine-tuning seeds within each), so the interval holds
both the test-set noise and the run-to-run noise.

Legend: P pretraining seeds, F fine-tuning seeds, N examples, K counts per example,
R bootstrap replicates.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

Metric = Callable[[np.ndarray], np.ndarray]   # sums ...xK -> score ...


def accuracy(sums_xK: np.ndarray) -> np.ndarray:
  """Counts per example: (correct, 1)."""
  return sums_xK[..., 0] / np.maximum(sums_xK[..., 1], 1e-12)


def entity_f1(sums_xK: np.ndarray) -> np.ndarray:
  """Counts per example: (true positives, false positives, false negatives); 0 if empty."""
  tp, fp, fn = sums_xK[..., 0], sums_xK[..., 1], sums_xK[..., 2]
  return 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12)


ACCURACY, ENTITY_F1 = accuracy, entity_f1


def correct_counts(correct_N) -> np.ndarray:
  """(correct, 1) per example, the counts `accuracy` reads."""
  correct_N = np.asarray(correct_N, dtype=np.float64)
  return np.stack([correct_N, np.ones_like(correct_N)], axis=-1)


# -- McNemar ----------------------------------------------------------------------------


def binomial_two_sided_p(k: int, n: int) -> float:
  """Exact two-sided p of k heads in n fair coin flips (twice the smaller tail, at most 1).

  Integer arithmetic, so it is exact for every n (the normal approximation of McNemar's
  chi-square is never needed).
  """
  if n == 0:
    return 1.0
  k = min(k, n - k)
  tail = sum(math.comb(n, i) for i in range(k + 1))
  return min(1.0, 2 * tail / 2 ** n)  # int / int: correctly rounded even for huge n


@dataclasses.dataclass(frozen=True)
class McNemar:
  only_a: int    # examples only the first model gets right
  only_b: int    # examples only the second model gets right
  p: float       # exact two-sided p of the split of the disagreements, H0: 50/50


def mcnemar(correct_a_N, correct_b_N) -> McNemar:
  """Exact McNemar test of two classifiers' per-example correctness on the same examples."""
  a, b = np.asarray(correct_a_N, bool), np.asarray(correct_b_N, bool)
  if a.shape != b.shape:
    raise ValueError(f'{a.shape} vs {b.shape}: the two models must be scored on the same examples')
  only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
  return McNemar(only_a, only_b, binomial_two_sided_p(only_a, only_a + only_b))


# -- Bootstrap --------------------------------------------------------------------------


def _as_pfnk(counts) -> np.ndarray:
  """Counts as P x F x N x K: N x K is one run, F x N x K fine-tuning seeds of one model."""
  x = np.asarray(counts, dtype=np.float64)
  while x.ndim < 4:
    x = x[None]
  return x


def score(counts, metric: Metric) -> float:
  """The observed score: the metric of each run, averaged over the runs."""
  x = _as_pfnk(counts)
  return float(np.mean(metric(x.sum(axis=2))))


def bootstrap(counts: dict[str, np.ndarray], metric: Metric, replicates: int = 2000,
              seed: int = 0) -> dict[str, np.ndarray]:
  """{name: R replicates of the seed-mean score}, every model under the same resamples.

  counts[name]: per-example counts as N x K (one run), F x N x K or P x F x N x K (seeds).
  Each replicate draws N examples with replacement (as multinomial weights), P pretraining
  seeds with replacement and, within each, F fine-tuning seeds; models with the same
  number of seeds share the seed draw, so seed k of one model stays paired with seed k
  of another (same data order), and a single-run model (a baseline) keeps its run.
  """
  shapes = {name: _as_pfnk(c).shape for name, c in counts.items()}
  sizes = {s[2] for s in shapes.values()}
  if len(sizes) != 1:
    raise ValueError(f'models scored on different numbers of examples: {shapes}')
  n = sizes.pop()
  rng = np.random.default_rng(seed)
  weights_RxN = rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(np.float64)
  seed_draws = {}
  for p, f in sorted({s[:2] for s in shapes.values()}):
    pre_RxP = rng.integers(0, p, size=(replicates, p))
    ft_RxPxF = rng.integers(0, f, size=(replicates, p, f))
    seed_draws[p, f] = (pre_RxP, ft_RxPxF)
  out = {}
  for name, c in counts.items():
    x = _as_pfnk(c)
    p, f = x.shape[:2]
    sums_RxPxFxK = np.einsum('rn,pfnk->rpfk', weights_RxN, x)
    pre_RxP, ft_RxPxF = seed_draws[p, f]
    r = np.arange(replicates)[:, None, None]
    drawn_RxPxFxK = sums_RxPxFxK[r, pre_RxP[:, :, None], ft_RxPxF]
    out[name] = metric(drawn_RxPxFxK).mean(axis=(1, 2))
  return out


def interval(replicates_R, level: float = 0.95) -> tuple[float, float]:
  """The percentile interval of the replicates."""
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(np.asarray(replicates_R), [tail, 100 - tail])
  return float(low), float(high)


def p_value(differences_R) -> float:
  """Two-sided bootstrap p of H0 'difference = 0': twice the share on the far side of 0.

  With the usual +1 (the observed sample counts as one replicate), so it is never 0: its
  floor is 2 / (R + 1).  It is below 0.05 exactly when 0 lies outside the 95% interval.
  """
  d = np.asarray(differences_R)
  r = d.size
  below = (np.sum(d <= 0) + 1) / (r + 1)
  above = (np.sum(d >= 0) + 1) / (r + 1)
  return float(min(1.0, 2 * min(below, above)))


def sign_flip_p(counts_a, counts_b, metric: Metric, permutations: int = 2000,
                seed: int = 0) -> float:
  """Two-sided paired permutation p of 'a and b score the same' (approximate randomisation).

  Under H0 the two models' outputs on an example are exchangeable, so each permutation
  swaps them on a random half of the examples (in every run of a pair at once) and
  recomputes the difference of the seed-mean scores; p is the share of permutations at
  least as far from 0 as the observed difference (+1 for the observed).  For one run and
  accuracy this is McNemar's exact test, sampled: only the disagreements can change the
  difference.  Unlike the bootstrap it stays honest with a handful of disagreements; it
  treats the runs as given (the bootstrap resamples them).
  """
  a, b = _as_pfnk(counts_a), _as_pfnk(counts_b)
  if a.shape != b.shape:
    raise ValueError(f'{a.shape} vs {b.shape}: paired runs on the same examples')
  observed = abs(np.mean(metric(a.sum(2))) - np.mean(metric(b.sum(2))))
  rng = np.random.default_rng(seed)
  swap_RxN = rng.integers(0, 2, size=(permutations, a.shape[2])).astype(np.float64)
  moved_RxPxFxK = np.einsum('rn,pfnk->rpfk', swap_RxN, b - a)
  sums_a, sums_b = a.sum(2)[None] + moved_RxPxFxK, b.sum(2)[None] - moved_RxPxFxK
  diffs_R = metric(sums_a).mean(axis=(1, 2)) - metric(sums_b).mean(axis=(1, 2))
  extreme = np.sum(np.abs(diffs_R) >= observed - 1e-12)
  return float((extreme + 1) / (permutations + 1))


# -- Ranks ------------------------------------------------------------------------------


def ranks(scores_MxX: np.ndarray) -> np.ndarray:
  """Rank of each of M models (axis 0; 1 = highest score), ties sharing their mean rank."""
  s = np.asarray(scores_MxX, dtype=np.float64)
  higher = (s[None, :] > s[:, None]).sum(axis=1)   # models strictly better than each
  tied = (s[None, :] == s[:, None]).sum(axis=1)    # itself included
  return 1 + higher + (tied - 1) / 2


@dataclasses.dataclass(frozen=True)
class Rank:
  observed: float                 # rank of the observed scores
  mean: float                     # mean rank over the replicates
  low: float                      # 95% interval of the rank
  high: float
  p_best: float                   # share of replicates in which it ranks first (alone or tied)


def rank_intervals(replicates: dict[str, np.ndarray], observed: dict[str, float],
                   level: float = 0.95) -> dict[str, Rank]:
  """Each model's rank among `replicates`' models, with its bootstrap interval."""
  names = list(replicates)
  ranks_MxR = ranks(np.stack([replicates[k] for k in names]))
  seen_M = ranks(np.array([[observed[k]] for k in names]))[:, 0]
  out = {}
  for i, name in enumerate(names):
    low, high = interval(ranks_MxR[i], level)
    out[name] = Rank(float(seen_M[i]), float(ranks_MxR[i].mean()), low, high,
                     float(np.mean(ranks_MxR[i] < 1.5 + 1e-9)))
  return out


def format_p(p: float) -> str:
  """A p-value as a report prints it."""
  return f'{p:.2g}' if p >= 0.001 else '< 0.001'
