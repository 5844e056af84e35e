"""Runs the comparison in-process: pretrain, fine-tune pretrained and from scratch, report.

  results = runner.run(plan.Settings(), 'runs/compare', seeds=1)

Per seed and arm: pretrain (`<workdir>/seed<k>/<family>-<objective>-pretrain`), with a
linear probe (ptlm_jax/finetune/probe.py) on rotten_tomatoes at every evaluation, then
fine-tune on each task from that run (`.../<family>-<objective>-<task>-pretrained-ft<j>`);
per architecture, the same model from random weights (`.../<family>-<task>-scratch-ft<j>`),
shared by the arms of that architecture.  Every run goes through `ptlm_jax.main.run` in
this process.  The fine-tunes of a family and task (pretrained and from scratch, every
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

from experiments import collect, stats
from experiments.compare_objectives import downstream, plan
from ptlm_jax import errors

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
  # The linear probe at every evaluation: (training FLOPs so far, accuracy), and the
  # per-example counts (N x 2: correct, 1) by step.
  probe_curve: list[tuple[float, float]] = dataclasses.field(default_factory=list)
  probe_counts: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

  @property
  def arm(self) -> str:
    return f'{self.family}:{self.objective}'


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
  objective: str = ''               # the arm's objective ('' from scratch: no objective)

  @property
  def arm(self) -> str:
    """'family:objective' of a pretrained run, the family of a from-scratch one."""
    return f'{self.family}:{self.objective}' if self.pretrained else self.family

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
  # The probe's baselines on its own snippets: {baseline: per-example counts}.
  probe_baselines: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def enable_compilation_cache(directory: str) -> None:
  """XLA executables on disk, keyed by the program: identical steps compile once."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)


def _timed_run(config, workdir: str, components_fn=None) -> float:
  """ptlm_jax.main.run, timed; a finished run (rerun of the job) keeps its first wall time."""
  from ptlm_jax import main  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, WALL_TIME_FILE)
  started = time.perf_counter()
  if main.run(config, workdir, components_fn).get('preempted'):
    # SIGTERM: the run saved its step; the job must not go on from an unfinished run.
    raise errors.UserError(f'stopped by SIGTERM while training {workdir} (its checkpoint is '
                           'saved): rerun the same command to resume the job there')
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
  arms = plan.parse_arms(settings.arms)
  archs = list(dict.fromkeys(a.family for a in arms))
  per_seed = len(arms) + (len(arms) + len(archs)) * len(settings.tasks) * settings.finetune_seeds
  total, done, probe = seeds * per_seed, 0, None
  for seed in range(seeds):
    log(f'[compare] seed {seed}: tokenizer ({settings.sp_vocab_size} pieces on '
        f'{settings.corpus}; trained once, then cached) and FLOPs per step of each arm')
    runs = plan.pretraining_runs(settings, seed, arms)
    for r in runs:
      log(f'[compare]   {r.arm.name:20s} {r.params:>9,} params  '
          f'{r.flops_per_step:.3e} FLOPs/step x {r.config.train.steps:>4} steps = '
          f'{r.flops_per_step * r.config.train.steps:.3e} FLOPs')
    seed_dir = os.path.join(workdir, f'seed{seed}')
    if settings.probe and probe is None:  # one tokenizer for every seed: built once
      probe, results.probe_baselines = _sentiment_probe(settings, runs[0].config)
    pre_dirs = {}
    for r in runs:
      pre_dir = pre_dirs[r.arm] = os.path.join(seed_dir, r.arm.dirname)
      done += 1
      log(f'[compare {done}/{total}] pretraining {r.arm.name}, {r.config.train.steps} steps'
          f'{" (linear probe at each evaluation)" if probe else ""} -> {pre_dir}')
      seconds = _timed_run(r.config, pre_dir, _with_probe(probe) if probe else None)
      results.pretraining.append(_pretrain_result(r, seed, pre_dir, seconds))
      if probe:
        log(f'[compare]   {r.arm.name}: probe accuracy '
            + ', '.join(f'{a:.3f}' for _, a in results.pretraining[-1].probe_curve))
    for task in settings.tasks:
      config = plan.finetune_config(settings, runs[0].family, pre_dirs[runs[0].arm], seed, True,
                                    task)
      if task not in results.baselines:  # the same training examples as the fine-tunes
        results.baselines[task] = downstream.baseline_counts(config)
      jobs = [(r.arm, pre_dirs[r.arm], True) for r in runs]
      jobs += [(next(r.arm for r in runs if r.family == f), None, False) for f in archs]
      for arm, pre_dir, pretrained in jobs:
        source = pre_dir or pre_dirs[arm]  # from scratch: the architecture of its first arm
        for ft_seed in range(settings.finetune_seeds):
          done += 1
          results.finetuning.append(_finetune(settings, arm, source, seed, ft_seed, task,
                                              pretrained, f'[compare {done}/{total}]', log))
  results.seconds = time.perf_counter() - started
  return results


def _sentiment_probe(settings, config):
  """(the linear probe on rotten_tomatoes with the comparison's tokenizer (probe.py), its
  baselines): majority class and bag of words fit on the probe's training snippets and
  scored on its validation snippets, what its accuracy is read against."""
  # pylint: disable=g-import-not-at-top
  from experiments import config_files
  from experiments.compare_objectives import baselines
  from ptlm_jax.data import tokenizer as tokenizer_lib
  from ptlm_jax.finetune import data as task_data, probe as probe_lib
  task = config_files.load('configs/finetune/rotten_tomatoes.py:bert,head')
  task.data.corpus = settings.corpus
  train = task_data.read_examples(task, f'train[:{settings.probe_train_examples}]')
  valid = task_data.read_examples(task, task.data.eval_split)
  texts = [x['text'] for x in train], [x['text'] for x in valid]
  labels = [x['label'] for x in train], [x['label'] for x in valid]
  probe = probe_lib.LinearProbe.from_texts(tokenizer_lib.get_tokenizer(config), texts[0],
                                           labels[0], texts[1], labels[1],
                                           seq_len=task.data.seq_len)
  bow = baselines.fit_bag_of_words(texts[0], labels[0], probe.num_classes)
  return probe, {
      'majority class': stats.correct_counts(baselines.majority_class(labels[0], labels[1])),
      'bag of words': stats.correct_counts(bow.predict(texts[1]) == probe.valid_labels)}


def _with_probe(probe):
  """components_fn: the real pretraining components with the probe at every evaluation."""
  from ptlm_jax.training import train  # pylint: disable=g-import-not-at-top

  def components_fn(config):
    components = train.build_components(config)
    components.extra_eval = probe.bind(config.model, config.objective.name)
    components.eval_records = probe.records
    return components
  return components_fn


def _pretrain_result(r, seed, pre_dir, seconds) -> PretrainResult:
  from ptlm_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  scalars = collect.read_scalars(pre_dir)
  t = r.config.train
  probe_counts = {}
  for step, _ in scalars.get('eval/probe_accuracy', []):
    records = checkpoint.read_eval_records(pre_dir, r.config.data.eval_split, int(step))
    probe_counts[int(step)] = stats.correct_counts([x['correct'] for x in records])
  return PretrainResult(
      seed=seed, family=r.family, objective=r.objective, params=r.params, steps=t.steps,
      flops_per_step=r.flops_per_step, tokens=t.steps * t.batch_size * r.row_length,
      eval_loss=_final(scalars, 'eval/loss'), eval_accuracy=_final(scalars, 'eval/accuracy'),
      eval_perplexity=_final(scalars, 'eval/perplexity'),
      curve=[(step * r.flops_per_step, v) for step, v in scalars.get('eval/loss', [])],
      seconds=seconds,
      probe_curve=[(step * r.flops_per_step, v)
                   for step, v in scalars.get('eval/probe_accuracy', [])],
      probe_counts=probe_counts)


def _finetune(settings, arm, source, seed, ft_seed, task, pretrained, prefix, log):
  """One fine-tuning run (or its finished directory) and its per-example counts."""
  kind = 'pretrained' if pretrained else 'scratch'
  name = f'{arm.family}-{arm.objective}' if pretrained else arm.family
  ft_dir = os.path.join(os.path.dirname(source), f'{name}-{task}-{kind}-ft{ft_seed}')
  config = plan.finetune_config(settings, arm.family, source, seed, pretrained, task, ft_seed)
  what = arm.name if pretrained else f'{arm.family} ({plan.ARCHITECTURE[arm.family]})'
  log(f'{prefix} fine-tuning {what} on {task} ({kind}, fine-tuning seed {ft_seed}), '
      f'{config.train.steps} steps -> {ft_dir}')
  seconds = _timed_run(config, ft_dir)
  counts = downstream.run_counts(ft_dir)
  score = float(downstream.TASKS[task].metric(counts.sum(axis=0)))
  log(f'[compare]   {what} {kind}: {task} {downstream.TASKS[task].metric_label} {score:.4f}')
  return FinetuneResult(seed, ft_seed, task, arm.family, pretrained, score, counts, seconds,
                        arm.objective if pretrained else '')


def ensure_pretrained(settings: plan.Settings, families, directory: str,
                      log: Callable[[str], None] = print) -> dict[str, str]:
  """{family: workdir} of seed-0 pretraining runs of each family's own objective (bert:mlm,
  gpt:causal_lm, t5:span_corruption) in `directory`, laid out as `run` lays them out.

  Runs that are missing or unfinished are trained (or resumed) here with `settings`, so
  the handout and the fine-tuning table can reuse the default job's models or make
  the same ones.
  """
  from ptlm_jax import main  # pylint: disable=g-import-not-at-top
  from ptlm_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  out, runs = {}, None
  for family in families:
    arm = plan.Arm(family, plan.OBJECTIVE[family])
    workdir = os.path.abspath(os.path.join(directory, arm.dirname))
    out[family] = workdir
    if checkpoint.is_workdir(workdir) and any(
        name.isdigit() for name in os.listdir(os.path.join(workdir, 'checkpoints'))):
      log(f'[pretrained] {family}: {workdir}')
      continue
    runs = runs or {r.family: r for r in plan.pretraining_runs(
        settings, seed=0, arms=[plan.Arm(f, plan.OBJECTIVE[f]) for f in families])}
    log(f'[pretrained] {family}: training {runs[family].config.train.steps} steps -> {workdir}')
    main.run(runs[family].config, workdir)
  return out
