"""The comparison's statistics: per task, each arm against scratch, the baselines, ranks,
and the attribution pairs; the linear probe over pretraining.

  summary = analysis.summarize(results)        # {task: TaskSummary}
  summary['rotten_tomatoes'].objectives['bert:mlm'].gain.p
  summary['rotten_tomatoes'].pairs[0]          # Pair: a minus b with one factor held fixed
  probe = analysis.summarize_probe(results)    # ProbeSummary: curves and final pairs

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
  - rank of each arm by its pretrained score, with its interval and the share of
    resamples in which it ranks first;
  - attribution: for each pair of arms that differ in one factor (plan.attribution_pairs),
    pretrained a minus pretrained b, its interval and p.
One set of resamples per task serves every model, so all of these are paired.  The
probe (one run per arm and seed, scored on the same validation examples) gets the same
treatment at each evaluation: an interval per arm and point, and the pairs at the end.
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

  @property
  def arm(self) -> plan.Arm:
    return plan.Arm(self.family, self.objective)


@dataclasses.dataclass
class Pair:
  """Arm a minus arm b, which share `fixed` ('architecture' or 'objective')."""
  a: plan.Arm
  b: plan.Arm
  fixed: str
  difference: Estimate


@dataclasses.dataclass
class TaskSummary:
  task: str
  metric_label: str
  examples: int
  objectives: dict[str, ObjectiveSummary]   # by arm name
  baselines: dict[str, Estimate]
  pairs: list[Pair] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ProbeSummary:
  examples: int
  curves: dict[str, list[tuple[float, Estimate]]]  # arm -> (training FLOPs, accuracy) per point
  final: dict[str, Estimate]                        # arm -> accuracy at its last evaluation
  pairs: list[Pair]
  baselines: dict[str, Estimate] = dataclasses.field(default_factory=dict)
  vs_baseline: dict[str, dict[str, Estimate]] = dataclasses.field(default_factory=dict)  # arm ->

def _runs(results, task: str, arm: str, pretrained: bool) -> np.ndarray:
  """P x F x N x K counts of one model's runs, in (seed, fine-tuning seed) order.

  arm: 'family:objective' (pretrained) or the family (from scratch)."""
  fts = sorted((x for x in results.finetuning
                if (x.task, x.arm, x.pretrained) == (task, arm, pretrained)),
               key=lambda x: (x.seed, x.ft_seed))
  seeds = sorted({x.seed for x in fts})
  return np.stack([np.stack([x.counts for x in fts if x.seed == s]) for s in seeds])


def _arms(results, task: str) -> list[plan.Arm]:
  """The pretrained arms fine-tuned on `task`, in the order they were run."""
  names = dict.fromkeys(x.arm for x in results.finetuning if x.task == task and x.pretrained)
  return [plan.Arm(*name.split(':')) for name in names]


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
  arms = _arms(results, task)
  counts = {}
  for a in arms:
    counts[a.name, True] = _runs(results, task, a.name, True)
    counts[a.family, False] = _runs(results, task, a.family, False)
  base = results.baselines.get(task, {})
  for name, c in base.items():
    counts[name] = c
  observed = {k: stats.score(c, spec.metric) for k, c in counts.items()}
  reps = stats.bootstrap(counts, spec.metric, replicates, seed)
  ranks = stats.rank_intervals({a.name: reps[a.name, True] for a in arms},
                               {a.name: observed[a.name, True] for a in arms})
  objectives = {}
  for a in arms:
    pre, scratch = counts[a.name, True], counts[a.family, False]
    mcnemar = []
    if spec.name == 'rotten_tomatoes':
      for x, y in zip(pre.reshape(-1, *pre.shape[2:]), scratch.reshape(-1, *scratch.shape[2:])):
        mcnemar.append(stats.mcnemar(x[:, 0] > 0, y[:, 0] > 0))
    objectives[a.name] = ObjectiveSummary(
        family=a.family, objective=a.objective, runs=pre.shape[0] * pre.shape[1],
        pretrained=_estimate(observed[a.name, True], reps[a.name, True]),
        scratch=_estimate(observed[a.family, False], reps[a.family, False]),
        gain=_difference(observed[a.name, True] - observed[a.family, False],
                         reps[a.name, True] - reps[a.family, False], pre, scratch, spec.metric,
                         seed),
        mcnemar=mcnemar, rank=ranks[a.name],
        vs_baseline={b: _difference(observed[a.name, True] - observed[b],
                                    reps[a.name, True] - reps[b], pre, stats._as_pfnk(base[b]),
                                    spec.metric, seed)
                     for b in base})
  pairs = [Pair(a, b, fixed, _difference(
      observed[a.name, True] - observed[b.name, True], reps[a.name, True] - reps[b.name, True],
      counts[a.name, True], counts[b.name, True], spec.metric, seed))
           for a, b, fixed in plan.attribution_pairs(arms)]
  examples = next(iter(counts.values())).shape[-2] if counts else 0
  return TaskSummary(task, spec.metric_label, examples, objectives,
                     {b: _estimate(observed[b], reps[b]) for b in base}, pairs)


def summarize(results, replicates: int = REPLICATES, seed: int = 0) -> dict[str, TaskSummary]:
  tasks = list(dict.fromkeys(x.task for x in results.finetuning))
  return {t: summarize_task(results, t, replicates, seed) for t in tasks}


def summarize_probe(results, replicates: int = REPLICATES, seed: int = 0) -> ProbeSummary | None:
  """The probe's accuracy per arm and evaluation (pretraining seeds as P), paired pairs at
  the last evaluation; None when no run probed."""
  by_arm: dict[str, list] = {}
  for r in results.pretraining:
    if r.probe_counts:
      by_arm.setdefault(r.arm, []).append(r)
  if not by_arm:
    return None
  counts, flops_at, steps_of = {}, {}, {}
  for arm, runs in by_arm.items():
    steps_of[arm] = sorted(set.intersection(*(set(r.probe_counts) for r in runs)))
    for step in steps_of[arm]:  # P x 1 x N x K: each pretraining seed is one run
      counts[arm, step] = np.stack([r.probe_counts[step] for r in runs])[:, None]
      flops_at[arm, step] = step * runs[0].flops_per_step
  base = results.probe_baselines
  counts.update(base)
  reps = stats.bootstrap(counts, stats.accuracy, replicates, seed)
  observed = {k: stats.score(c, stats.accuracy) for k, c in counts.items()}
  curves, final, last = {}, {}, {}
  for arm, steps in steps_of.items():
    curves[arm] = [(flops_at[arm, s], _estimate(observed[arm, s], reps[arm, s])) for s in steps]
    last[arm] = (arm, steps[-1])
    final[arm] = curves[arm][-1][1]
  arms = [plan.Arm(*name.split(':')) for name in by_arm]
  pairs = [Pair(a, b, fixed, _difference(
      observed[last[a.name]] - observed[last[b.name]], reps[last[a.name]] - reps[last[b.name]],
      counts[last[a.name]], counts[last[b.name]], stats.accuracy, seed))
           for a, b, fixed in plan.attribution_pairs(arms)]
  vs_baseline = {arm: {b: _difference(observed[last[arm]] - observed[b],
                                      reps[last[arm]] - reps[b], counts[last[arm]],
                                      stats._as_pfnk(base[b]), stats.accuracy, seed)
                       for b in base} for arm in by_arm}
  examples = next(iter(counts.values())).shape[-2]
  return ProbeSummary(examples, curves, final, pairs,
                      {b: _estimate(observed[b], reps[b]) for b in base}, vs_baseline)
