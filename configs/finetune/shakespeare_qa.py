r"""Who says this line? Extractive QA on Shakespeare's plays (offline): exact match and F1.

Context: a few consecutive speeches as 'TAG: words' lines; question: 'Who says "<a
quoted line>"?'; answer: the speaker tag (data/task_corpora.py).  11,498 / 694 / 554
questions, held-out plays in validation and test.  Contexts (~100 words) exceed the
128-piece rows, so windows with a document stride of 48 are used.

  python -m ptlm_jax.main --config=configs/finetune/shakespeare_qa.py:bert \
      --workdir=runs/qa-bert --config.init.source=runs/bert
  python -m ptlm_jax.main --config=configs/finetune/shakespeare_qa.py:bert,quick \
      --workdir=runs/qa-quick
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 'bert'):
  c = task_configs.start(arg, 'qa')
  c.task.dataset = 'shakespeare_qa'
  c.task.input_fields = 'question,context'
  c.task.target_field = 'answers'
  c.task.doc_stride = 48
  c.task.max_query_length = 32
  c.task.max_answer_length = 8           # speaker tags are short
  c.task.n_best = 20
  c.data.seq_len = 128
  return task_configs.finish(c, arg, train_examples=23_000)  # ~2 windows a question
