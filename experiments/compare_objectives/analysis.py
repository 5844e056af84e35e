"""The comparison's statistics: per task, each objective against scratch, the baselines, ranks.

  summary = analysis.summarize(results)        # {task: TaskSummary}
  summary['rotten_tomatoes'].objectives['bert'].gain_p

Everything is paired on the task's validation examples and computed by
experiments/stats.py from the per-example counts of every run:
  - score of a model: its metric averaged over its runs (pretraining seeds x fine-tuning
    seeds), with a 95% interval from the two-level bootstrap (examples, then seeds);
  - gain: pretrained minus from scratch (the same config, seeds and data order from random
    weights), its interval and two-sided p from the same resamples, and the p of a paired
    permutation test (outputs swapped per example; McNemar's exact test for one run):
    the bootstrap holds the seed-to-seed noise, the permutation test stays honest when
    few examples differ, so a verdict uses the larger p; for classification also the
    exact McNemar p of each pretrained / scratch pair of runs;
  - against each baseline: pretrained minus baseline, interval and both p;
  - rank of each objective by its pretrained score, with its interval and the share of
    resamples in which it ranks first.
One set of resamples per task serves every model, so all of these are paired.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from experiments import stats
from experiments.compare_objectives import downstream, plan

REPLICATES = 2000


@dataclasses.dataclass
class Estimate:
  value: float
  low: float
  high: float
  p_boot: float = float('nan')   # two-sided bootstrap p, H0: 0 (differences only)
  p_flip: float = float('nan')   # two-sided paired permutation (sign-flip) p, H0: 0

  @property
  def p(self) -> float:
    """The larger of the two: valid when either test is, so the verdict uses it."""
    return max(self.p_boot, self.p_flip)


@dataclasses.dataclass
class ObjectiveSummary:
  family: str
  objective: str
  runs: int                              # fine-tuning runs per arm
  pretrained: Estimate
  scratch: Estimate
  gain: Estimate                         # pretrained - scratch
  mcnemar: list[stats.McNemar]           # per pair of runs (classification only)
  rank: stats.Rank                       # by pretrained score among the objectives
  vs_baseline: dict[str, Estimate]       # pretrained - baseline


@dataclasses.dataclass
class TaskSummary:
  task: str
  metric_label: str
  examples: int
  objectives: dict[str, ObjectiveSummary]
  baselines: dict[str, Estimate]


def _runs(results, task: str, family: str, pretrained: bool) -> np.ndarray:
  """P x F x N x K counts of one model's runs, in (seed, fine-tuning seed) order."""
  fts = sorted((x for x in results.finetuning
                if (x.task, x.family, x.pretrained) == (task, family, pretrained)),
               key=lambda x: (x.seed, x.ft_seed))
  seeds = sorted({x.seed for x in fts})
  return np.stack([np.stack([x.counts for x in fts if x.seed == s]) for s in seeds])


def _estimate(observed: float, reps_R: np.ndarray) -> Estimate:
  low, high = stats.interval(reps_R)
  return Estimate(observed, low, high)


def _difference(observed, reps_R, counts_a, counts_b, metric, seed) -> Estimate:
  low, high = stats.interval(reps_R)
  counts_b = np.broadcast_to(counts_b, np.shape(counts_a))  # a baseline: one run for every run
  return Estimate(observed, low, high, stats.p_value(reps_R),
                  stats.sign_flip_p(counts_a, counts_b, metric, REPLICATES, seed))


def summarize_task(results, task: str, replicates: int = REPLICATES, seed: int = 0) -> TaskSummary:
  spec = downstream.TASKS[task]
  families = [f for f in plan.FAMILIES
              if any(x.task == task and x.family == f for x in results.finetuning)]
  counts = {}
  for f in families:
    counts[f, True] = _runs(results, task, f, True)
    counts[f, False] = _runs(results, task, f, False)
  base = results.baselines.get(task, {})
  for name, c in base.items():
    counts[name] = c
  observed = {k: stats.score(c, spec.metric) for k, c in counts.items()}
  reps = stats.bootstrap(counts, spec.metric, replicates, seed)
  ranks = stats.rank_intervals({f: reps[f, True] for f in families},
                               {f: observed[f, True] for f in families})
  objectives = {}
  for f in families:
    pre, scratch = counts[f, True], counts[f, False]
    mcnemar = []
    if spec.name == 'rotten_tomatoes':
      for a, b in zip(pre.reshape(-1, *pre.shape[2:]), scratch.reshape(-1, *scratch.shape[2:])):
        mcnemar.append(stats.mcnemar(a[:, 0] > 0, b[:, 0] > 0))
    objectives[f] = ObjectiveSummary(
        family=f, objective=plan.OBJECTIVE[f], runs=pre.shape[0] * pre.shape[1],
        pretrained=_estimate(observed[f, True], reps[f, True]),
        scratch=_estimate(observed[f, False], reps[f, False]),
        gain=_difference(observed[f, True] - observed[f, False], reps[f, True] - reps[f, False],
                         pre, scratch, spec.metric, seed),
        mcnemar=mcnemar, rank=ranks[f],
        vs_baseline={b: _difference(observed[f, True] - observed[b], reps[f, True] - reps[b],
                                    pre, stats._as_pfnk(base[b]), spec.metric, seed)
                     for b in base})
  examples = next(iter(counts.values())).shape[-2] if counts else 0
  return TaskSummary(task, spec.metric_label, examples, objectives,
                     {b: _estimate(observed[b], reps[b]) for b in base})


def summarize(results, replicates: int = REPLICATES, seed: int = 0) -> dict[str, TaskSummary]:
  tasks = list(dict.fromkeys(x.task for x in results.finetuning))
  return {t: summarize_task(results, t, replicates, seed) for t in tasks}
