"""Runs the comparison in-process: pretrain, fine-tune pretrained and from scratch, report.

  results = runner.run(plan.Settings(), 'runs/compare', seeds=1)

Per seed and family: pretrain (`<workdir>/seed<k>/<family>-pretrain`), then fine-tune on
rotten_tomatoes from that run (`.../<family>-finetune-pretrained`) and from random
weights (`.../<family>-finetune-scratch`).  Every run goes through `ptlm_jax.main.run` in this
process.  The fine-tunes of a family and task (pretrained and from scratch, every
fine-tuning seed) run the same train and eval steps, traced and compiled once
(`train.reuse_compiled_steps`); a persistent compilation cache in `<workdir>/.jax_cache`
hands a rerun of the job the executables of the first.  Results are read
back from each run's TensorBoard events (experiments/collect.py), so a rerun over a
finished workdir skips the training (the trainer resumes at its last step) and rebuilds
the report; wall times are kept in each run's `wall_time.json`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

import numpy as np

from experiments import collect
from experiments.compare_objectives import downstream, plan

WALL_TIME_FILE = 'wall_time.json'


@dataclasses.dataclass
class PretrainResult:
  seed: int
  family: str
  objective: str
  params: int
  steps: int
  flops_per_step: float
  tokens: int                       # packed positions read: steps x batch x row length
  eval_loss: float
  eval_accuracy: float
  eval_perplexity: float
  curve: list[tuple[float, float]]  # (training FLOPs so far, validation loss)
  seconds: float


@dataclasses.dataclass
class FinetuneResult:
  seed: int                         # pretraining seed
  ft_seed: int                      # fine-tuning seed (0..finetune_seeds-1)
  task: str                         # downstream.TASKS
  family: str
  pretrained: bool
  score: float                      # the task metric (accuracy | entity F1) from `counts`
  counts: np.ndarray                # per validation example (downstream.py): N x K
  seconds: float

  @property
  def examples(self) -> int:
    return len(self.counts)


@dataclasses.dataclass
class Results:
  settings: plan.Settings
  pretraining: list[PretrainResult]
  finetuning: list[FinetuneResult]
  baselines: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
  seconds: float = 0.0              # {task: {baseline: per-example counts}} above


def enable_compilation_cache(directory: str) -> None:
  """XLA executables on disk, keyed by the program: identical steps compile once."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)


def _timed_run(config, workdir: str) -> float:
  """ptlm_jax.main.run, timed; a finished run (rerun of the job) keeps its first wall time."""
  from ptlm_jax import main  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, WALL_TIME_FILE)
  started = time.perf_counter()
  main.run(config, workdir)
  seconds = time.perf_counter() - started
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      previous = json.load(f)
    if previous.get('steps') == config.train.steps:
      return previous['seconds']
  with open(path, 'w', encoding='utf-8') as f:
    json.dump({'seconds': seconds, 'steps': config.train.steps}, f)
  return seconds


def _final(scalars, tag: str) -> float:
  points = scalars.get(tag)
  return points[-1][1] if points else float('nan')


def run(settings: plan.Settings, workdir: str, seeds: int = 1,
        log: Callable[[str], None] = print) -> Results:
  """The whole comparison (see the module docstring); writes nothing but the run dirs."""
  from ptlm_jax.training import train  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  enable_compilation_cache(os.path.join(workdir, '.jax_cache'))
  with train.reuse_compiled_steps():  # the fine-tunes of a family and task share their steps
    return _run(settings, workdir, seeds, log)


def _run(settings, workdir, seeds, log) -> Results:
  started = time.perf_counter()
  results = Results(settings, [], [])
  total = seeds * len(plan.FAMILIES) * (1 + 2 * len(settings.tasks) * settings.finetune_seeds)
  done = 0
  for seed in range(seeds):
    log(f'[compare] seed {seed}: tokenizer ({settings.sp_vocab_size} pieces on '
        f'{settings.corpus}; trained once, then cached) and FLOPs per step of each model')
    runs = plan.pretraining_runs(settings, seed)
    for r in runs:
      log(f'[compare]   {r.family:4s} {r.objective:15s} {r.params:>9,} params  '
          f'{r.flops_per_step:.3e} FLOPs/step x {r.config.train.steps:>4} steps = '
          f'{r.flops_per_step * r.config.train.steps:.3e} FLOPs')
    for r in runs:
      seed_dir = os.path.join(workdir, f'seed{seed}')
      pre_dir = os.path.join(seed_dir, f'{r.family}-pretrain')
      done += 1
      log(f'[compare {done}/{total}] pretraining {r.family} ({r.objective}), '
          f'{r.config.train.steps} steps -> {pre_dir}')
      seconds = _timed_run(r.config, pre_dir)
      scalars = collect.read_scalars(pre_dir)
      t = r.config.train
      results.pretraining.append(PretrainResult(
          seed=seed, family=r.family, objective=r.objective, params=r.params, steps=t.steps,
          flops_per_step=r.flops_per_step, tokens=t.steps * t.batch_size * r.row_length,
          eval_loss=_final(scalars, 'eval/loss'), eval_accuracy=_final(scalars, 'eval/accuracy'),
          eval_perplexity=_final(scalars, 'eval/perplexity'),
          curve=[(step * r.flops_per_step, v) for step, v in scalars.get('eval/loss', [])],
          seconds=seconds))
      for task in settings.tasks:
        if task not in results.baselines:  # the same training examples as the fine-tunes
          config = plan.finetune_config(settings, r.family, pre_dir, seed, True, task)
          results.baselines[task] = downstream.baseline_counts(config)
        for ft_seed in range(settings.finetune_seeds):
          for pretrained in (True, False):
            done += 1
            results.finetuning.append(_finetune(settings, r.family, pre_dir, seed, ft_seed, task,
                                                pretrained, f'[compare {done}/{total}]', log))
  results.seconds = time.perf_counter() - started
  return results


def _finetune(settings, family, pre_dir, seed, ft_seed, task, pretrained, prefix, log):
  """One fine-tuning run (or its finished directory) and its per-example counts."""
  kind = 'pretrained' if pretrained else 'scratch'
  ft_dir = os.path.join(os.path.dirname(pre_dir), f'{family}-{task}-{kind}-ft{ft_seed}')
  config = plan.finetune_config(settings, family, pre_dir, seed, pretrained, task, ft_seed)
  log(f'{prefix} fine-tuning {family} on {task} ({kind}, fine-tuning seed {ft_seed}), '
      f'{config.train.steps} steps -> {ft_dir}')
  seconds = _timed_run(config, ft_dir)
  counts = downstream.run_counts(ft_dir)
  score = float(downstream.TASKS[task].metric(counts.sum(axis=0)))
  log(f'[compare]   {family} {kind}: {task} {downstream.TASKS[task].metric_label} {score:.4f}')
  return FinetuneResult(seed, ft_seed, task, family, pretrained, score, counts, seconds)


def ensure_pretrained(settings: plan.Settings, families, directory: str,
                      log: Callable[[str], None] = print) -> dict[str, str]:
  """{family: workdir} of seed-0 pretraining runs in `directory` (as `run` lays them out).

  Runs that are missing or unfinished are trained (or resumed) here with `settings`, so
  the handout and the fine-tuning table can reuse the default job's models or make
  the same ones.
  """
  from ptlm_jax import main  # pylint: disable=g-import-not-at-top
  from ptlm_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  out, runs = {}, None
  for family in families:
    workdir = os.path.abspath(os.path.join(directory, f'{family}-pretrain'))
    out[family] = workdir
    if checkpoint.is_workdir(workdir) and any(
        name.isdigit() for name in os.listdir(os.path.join(workdir, 'checkpoints'))):
      log(f'[pretrained] {family}: {workdir}')
      continue
    runs = runs or {r.family: r for r in plan.pretraining_runs(settings, seed=0)}
    log(f'[pretrained] {family}: training {runs[family].config.train.steps} steps -> {workdir}')
    main.run(runs[family].config, workdir)
  return out
