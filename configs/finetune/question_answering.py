r"""Extractive question answering on your own JSONL files in SQuAD's (HF datasets) layout.

Each line {"question": "...", "context": "...", "answers": {"text": ["..."],
"answer_start": [17]}} (an empty answer list: no answer in the context); SQuAD exact
match and F1.

  python -m ptlm_jax.main --config=configs/finetune/question_answering.py:bert \
      --workdir=runs/my-qa --config.init.source=runs/bert \
      --config.task.train_file=data/train.jsonl --config.task.validation_file=data/dev.jsonl
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 'bert'):
  c = task_configs.start(arg, 'qa')
  c.task.input_fields = 'question,context'
  c.task.target_field = 'answers'
  c.data.seq_len = 256
  c = task_configs.finish(c, arg, train_examples=1000)
  return task_configs.from_files(c, arg)
