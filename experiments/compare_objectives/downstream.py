"""The downstream tasks of the comparison: per-example results of runs and of baselines.

  counts_NxK = downstream.run_counts(ft_workdir)          # a finished fine-tuning run
  base = downstream.baseline_counts(config)               # {'majority class': NxK, ...}

The paired statistics (experiments/stats.py) need every model's result on every
validation example, not only the run's final metric: the loop's last evaluation writes
its per-example predictions (`inference_eval/<split>-<step>.jsonl`), and the counts made
from them are kept in the run directory (`counts-<step>.npy`; a rerun reads them back):

  rotten_tomatoes  sentiment (classification head)  counts (correct, 1)   -> accuracy
  shakespeare_ner  silver NER (token head)          counts (tp, fp, fn)   -> entity F1

Entity F1 is not a mean over examples, so a speech's counts are its true-positive,
false-positive and false-negative entity chunks (the CoNLL / seqeval chunks of
ptlm_jax.finetune.metrics) and the bootstrap recomputes F1 from resampled sums.

Baselines see the same training examples as the fine-tuned models (`data.train_split`):
majority class and a bag-of-words logistic regression for rotten_tomatoes; for NER
the guess 'no entity' (F1 0) and a tag lexicon (each word form's most frequent
training tag), which is what a model that only memorises names would reach.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from experiments import stats
from experiments.compare_objectives import baselines

COUNTS_FILE = 'counts-{step}.npy'  # per checkpoint step: a resumed, longer run is scored anew


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  config_file: str        # configs/finetune/<name>.py
  head_arg: str           # the config argument's format (',head': one head for all families)
  metric_label: str
  metric: stats.Metric
  counts_per_example: int


TASKS = {
    'rotten_tomatoes': Task('rotten_tomatoes', 'configs/finetune/rotten_tomatoes.py', ',head',
                            'accuracy', stats.accuracy, 2),
    'shakespeare_ner': Task('shakespeare_ner', 'configs/finetune/shakespeare_ner.py', '',
                            'entity F1', stats.entity_f1, 3),
}


def entity_counts(true_tags, pred_tags) -> np.ndarray:
  """N x 3: (true positive, false positive, false negative) entity chunks per sentence."""
  from ptlm_jax.finetune import metrics as task_metrics  # pylint: disable=g-import-not-at-top
  out = []
  for true, pred in zip(true_tags, pred_tags, strict=True):
    t, p = task_metrics.entity_spans(true), task_metrics.entity_spans(pred)
    out.append((len(t & p), len(p - t), len(t - p)))
  return np.asarray(out, np.float64).reshape(-1, 3)


def record_counts(task_name: str, records: list[dict]) -> np.ndarray:
  """Per-example counts from a run's evaluation records (checkpoint.read_eval_records)."""
  if task_name == 'classification':
    return stats.correct_counts(np.array([r['prediction'] == r['label'] for r in records]))
  if task_name == 'ner':
    return entity_counts([r['label'] for r in records], [r['prediction'] for r in records])
  raise ValueError(f'no per-example counts for task {task_name!r}')


def counts_path(workdir: str) -> str:
  """Where the per-example counts of the run's latest checkpoint are kept."""
  from ptlm_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  return os.path.join(workdir, COUNTS_FILE.format(step=checkpoint.latest_step(workdir)))


def run_counts(workdir: str) -> np.ndarray:
  """Per-example counts of a finished fine-tuning run's last evaluation (cached).

  From the records its final evaluation wrote (`inference_eval/`, any method: the loop
  evaluates the whole model, PEFT adapters merged), so nothing is predicted twice.
  """
  path = counts_path(workdir)
  if os.path.exists(path):
    return np.load(path)
  from ptlm_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  config, step = checkpoint.run_config(workdir), checkpoint.latest_step(workdir)
  records = checkpoint.read_eval_records(workdir, config.data.eval_split, step)
  counts = record_counts(config.task.name, records)
  np.save(path, counts)
  return counts


def baseline_counts(config) -> dict[str, np.ndarray]:
  """{baseline: per-example counts} on `config`'s validation examples, trained on its train split."""
  from ptlm_jax.finetune import data as tasks  # pylint: disable=g-import-not-at-top
  t = config.task
  train = tasks.read_examples(config, config.data.train_split)
  valid = tasks.read_examples(config, config.data.eval_split, limit=t.eval_examples)
  if t.name == 'classification':
    field = t.input_fields.split(',')[0]
    y_train = [ex[t.target_field] for ex in train]
    y_valid = np.array([ex[t.target_field] for ex in valid])
    bow = baselines.fit_bag_of_words([ex[field] for ex in train], y_train, config.model.num_classes)
    return {'majority class': stats.correct_counts(baselines.majority_class(y_train, y_valid)),
            'bag of words': stats.correct_counts(bow.predict([ex[field] for ex in valid]) == y_valid)}
  if t.name == 'ner':
    names = tasks.label_names(config)
    tags = lambda ex: [names[k] for k in ex[t.target_field]]
    true = [tags(ex) for ex in valid]
    lexicon = baselines.tag_lexicon([ex[t.input_fields] for ex in train], [tags(ex) for ex in train])
    return {'no entity': entity_counts(true, [['O'] * len(x) for x in true]),
            'tag lexicon': entity_counts(true, [lexicon(ex[t.input_fields]) for ex in valid])}
  raise ValueError(f'no baselines for task {t.name!r}')
