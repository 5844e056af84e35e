r"""Fine-tuning on a downstream task through the one training loop.

  python -m ptlm_jax.main --config=configs/finetune/rotten_tomatoes.py:bert \
      --workdir=runs/rt-bert --config.init.source=runs/bert

`ptlm_jax.main` hands a config with `task.name` set to `train_and_evaluate` here;
`build_components` assembles what the shared loop trains (train.Components):

  model        the family with the task's head (`model.head`), or its LM for text format
  objective    task_objectives: feature rows -> (inputs, targets, weights)
  loss         classification / span losses for head outputs that are not [B, T, V]
  train_iter   tasks.TaskIterator over the encoded train split (shuffled, sharded)
  eval_batches one ordered pass over the encoded validation split (the loop's eval loss
               and accuracy: for a classification head, the accuracy of its first
               `train.eval_steps` batches)
  extra_eval   task_eval: the task metric(s) on the validation split (`task_*` scalars)
  eval_records its per-example predictions, which the loop writes to
               `<workdir>/inference_eval/<eval split>-<step>.jsonl` at each evaluation

Weights: random unless `init.source` names a pretraining workdir, a model dir or an HF
dir (the loop loads it, `training/pretrained.py`); a run without one says so first, with
its learning rate (2e-5 suits pretrained weights, and learns little from random ones).
The tokenizer: a workdir source's own, an HF dir's (tokenizer.json, vocab.txt, vocab.json +
merges.txt or spiece.model, with its special ids: BERT [CLS] 101 / [SEP] 102, GPT-2's and
T5's EOS), else `data.*`'s (the configs/finetune/ files keep the pretraining defaults).
A tokenizer that does not fit the checkpoint is an error before anything compiles.

  python -m ptlm_jax.main --config=configs/finetune/rotten_tomatoes.py:bert \
      --workdir=runs/rt-hf-bert --config.init.source=/ckpt/bert-base-uncased
"""
from __future__ import annotations

import jax
from absl import logging

from ptlm_jax import config_lib, errors, models
from ptlm_jax.data import tokenizer as tokenizer_lib
from ptlm_jax.finetune import data as tasks, evaluate as task_eval, objectives as task_objectives
from ptlm_jax.training import train


def check_labels(config) -> None:
  """ConfigError unless model.num_classes matches the dataset's classes (or tags)."""
  t = config.task
  if t.name not in ('classification', 'ner'):
    return
  names = tasks.label_names(config)
  if config.model.num_classes != len(names):
    raise errors.ConfigError('model.num_classes', config.model.num_classes,
                                 f'{len(names)}: the classes of {t.dataset or t.train_file} '
                                 f'{t.target_field} ({", ".join(names)})')


def build_components(config) -> train.Components:
  """Model, objective, loss, iterators and task metrics for `config.task` (see above)."""
  config_lib.validate_task(config)
  tokenizer = tokenizer_lib.get_tokenizer(config)
  if tokenizer.vocab_info.size > config.model.vocab_size:
    raise errors.ConfigError('model.vocab_size', config.model.vocab_size,
                                 f'>= the tokenizer\'s {tokenizer.vocab_info.size} ids')
  check_labels(config)
  d, t = config.data, config.task
  train_data = tasks.encode(config, tokenizer, tasks.read_examples(config, d.train_split))
  eval_data = tasks.encode(config, tokenizer,
                           tasks.read_examples(config, d.eval_split, limit=t.eval_examples))
  logging.info('%s: %d train rows, %d validation rows (%d examples)', t.dataset or t.train_file,
               len(train_data.features['tokens']), len(eval_data.features['tokens']),
               len(eval_data.examples))
  objective, loss = task_objectives.get_task_objective(config)
  model = models.build_model(config.model)
  shard = dict(global_batch=config.train.batch_size, process_index=jax.process_index(),
               process_count=jax.process_count())
  train_iter = tasks.TaskIterator(train_data.features, shuffle=d.shuffle, seed=d.shuffle_seed,
                                  infinite=True, length_buckets=d.get('length_buckets', 0),
                                  **shard)
  eval_batches = lambda: tasks.TaskIterator(eval_data.features, shuffle=False, infinite=False,
                                            **shard)
  extra_eval = task_eval.make_extra_eval(config, model, objective, eval_data, tokenizer)
  return train.Components(model, objective, train_iter, eval_batches, loss=loss,
                          extra_eval=extra_eval, eval_records=extra_eval.records)


def random_weights_note(config) -> str | None:
  """What a run without init.source should be told before it trains."""
  if config.init.source:
    return None
  return (f'note: config.init.source is empty, so this fine-tunes randomly initialised weights '
          f'(lr {config.optim.lr:g}, {config.train.steps} steps); set --config.init.source to '
          'a pretraining workdir, a model dir or an HF checkpoint dir to start from pretrained '
          'weights')


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  note = random_weights_note(config)
  if note and jax.process_index() == 0:
    print(note, flush=True)
  return train.run(config, workdir, build_components)
