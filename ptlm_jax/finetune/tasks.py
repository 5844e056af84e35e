"""The fine-tuning defaults shared by `configs/finetune/*.py` (no jax imported here).

A task config file names its dataset and fields, then calls `finish`:

  def get_config(arg='bert'):
    c = task_configs.start(arg, 'classification')
    c.task.dataset = 'rotten_tomatoes'
    ...
    return task_configs.finish(c, arg, train_examples=10_256)

`arg` = `family[,size][,head|text][,quick]`:
  family  bert | gpt | t5
  size    tiny (default) | small | base: must match the pretrained run given as
          --config.init.source (the tiny pretraining configs make tiny runs)
  head / text  how GPT and T5 do classification: a head on the backbone (GPT's last
          token, T5's encoder mean) or text (GPT continuation, T5 text-to-text); defaults:
          BERT and GPT head, T5 text.  NER and QA always use heads; summarisation and
          translation always text (GPT and T5 only)
  quick   a one-minute CPU run from scratch: 150 steps at lr 1e-3 (random weights learn
          nothing at 2e-5), 256 validation examples

The handout's fine-tuning recipe otherwise: AdamW at lr 2e-5, linear warmup over the
first 10% of steps and linear decay to 0, weight decay 0.01 (biases and norm scales
excluded), batch 32, 3 epochs, dropout 0.1; the tokenizer and data fields of the
pretraining configs, so a run from configs/<family>.py:tiny loads as it is.
"""
from __future__ import annotations

import math

import ml_collections

from ptlm_jax import config_lib, errors, families

FLAGS = ('head', 'text', 'quick')


def parse_arg(arg: str) -> tuple[str, str, set[str]]:
  parts = [p.strip() for p in arg.split(',') if p.strip()]
  family = parts[0] if parts else 'bert'
  sizes = [p for p in parts[1:] if p in config_lib.VARIANTS]
  flags = {p for p in parts[1:] if p not in config_lib.VARIANTS}
  bad = flags - set(FLAGS)
  if bad or len(sizes) > 1:
    raise errors.ConfigError('config argument', arg, 'family[,tiny|small|base][,head|text]'
                                 '[,quick], e.g. bert or t5,head,quick')
  return family, (sizes or ['tiny'])[0], flags


def start(arg: str, task: str) -> ml_collections.ConfigDict:
  """The base config of the family and size, with the task named and its format chosen."""
  family, size, flags = parse_arg(arg)
  c = config_lib.base_config(family, size)
  c.task.name = task
  if task == 'classification':
    default = 'text' if families.get(family).encoder_decoder else 'head'
    c.task.format = 'text' if 'text' in flags else 'head' if 'head' in flags else default
  else:
    c.task.format = 'head' if task in ('ner', 'qa') else 'text'
    if flags & {'head', 'text'} - {c.task.format}:
      raise errors.ConfigError('config argument', arg, f'no head/text choice: {task} '
                                   f'always uses the {c.task.format} format')
  return c


def finish(c: ml_collections.ConfigDict, arg: str, *, train_examples: int, epochs: int = 3
           ) -> ml_collections.ConfigDict:
  """Head, optimizer and schedule of the handout's recipe (or the quick variant)."""
  _, _, flags = parse_arg(arg)
  c.model.head = config_lib.TASK_HEADS[(c.task.name, c.task.format)]
  o, t = c.optim, c.train
  o.optimizer = 'adamw'
  o.lr = 2e-5
  o.decay = 'linear'
  o.weight_decay = 0.01
  o.b2 = 0.999
  t.batch_size = 32
  t.steps = max(1, math.ceil(epochs * train_examples / t.batch_size))
  t.eval_every = t.checkpoint_every = max(1, t.steps // epochs)  # once per epoch
  t.eval_steps = 20
  if 'quick' in flags:
    o.lr = 1e-3
    t.batch_size = 16
    t.steps, t.eval_every, t.checkpoint_every, t.eval_steps = 150, 150, 150, 8
    c.task.eval_examples = 256
  o.warmup_steps = max(1, t.steps // 10)
  t.log_every = max(1, min(50, t.steps // 10))
  t.keep_best_by = 'loss'
  return c


def from_files(c: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """The generic configs (your own files): no dataset; steps from the train file's rows.

  -1 = decided by `data/local_files.resolve` once the files are known: 3 epochs,
  evaluated and saved once per epoch, warmup over the first 10% (as `finish`).
  """
  c.task.dataset = ''
  if 'quick' not in parse_arg(arg)[2]:
    c.train.steps = c.train.eval_every = c.train.checkpoint_every = c.train.log_every = -1
    c.optim.warmup_steps = -1
  return c
