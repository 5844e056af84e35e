r"""Token classification (NER, POS tagging) on your own JSONL files: one sentence per line.

Each line {"tokens": ["John", "lives", "here"], "tags": ["B-PER", "O", "O"]} (field names
from task.input_fields / task.target_field); tags are mapped to ids in sorted order, or
the order of task.label_names.  Entity F1 reads IOB2 tag names (B-X / I-X / O).

  python -m ptlm_jax.main --config=configs/finetune/token_classification.py:bert \
      --workdir=runs/my-ner --config.init.source=runs/bert \
      --config.task.train_file=data/train.jsonl --config.task.validation_file=data/dev.jsonl
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 'bert'):
  c = task_configs.start(arg, 'ner')
  c.task.input_fields = 'tokens'
  c.task.target_field = 'tags'
  c.data.seq_len = 128
  c = task_configs.finish(c, arg, train_examples=1000)
  return task_configs.from_files(c, arg)
