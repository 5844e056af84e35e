r"""SQuAD v1.1 extractive QA (TFDS `squad`, needs a download once): exact match and F1.

BERT's recipe: 384-piece rows, document stride 128, questions cut to 64 pieces, n-best
20, answers at most 30 pieces.  87,599 train / 10,570 validation questions.

  python -m ptlm_jax.main --config=configs/finetune/squad.py:bert \
      --workdir=runs/squad-bert --config.init.source=runs/bert --config.data.download=True
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 'bert'):
  c = task_configs.start(arg, 'qa')
  c.task.dataset = 'squad'
  c.task.input_fields = 'question,context'
  c.task.target_field = 'answers'
  c.task.doc_stride = 128
  c.task.max_query_length = 64
  c.task.max_answer_length = 30
  c.task.n_best = 20
  c.data.seq_len = 384
  return task_configs.finish(c, arg, train_examples=88_600, epochs=2)  # ~88.6k windows
