r"""Sentiment of IMDB reviews (TFDS `imdb_reviews`, needs a download once): accuracy, F1.

IMDB has no validation split: evaluation reads `test` (25,000 reviews; train 25,000).
Reviews are long; rows keep their first `data.seq_len` pieces.

  python -m ptlm_jax.main --config=configs/finetune/imdb_reviews.py:bert \
      --workdir=runs/imdb-bert --config.init.source=runs/bert --config.data.download=True
  (gpt, t5 and t5,head as in rotten_tomatoes.py)
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 'bert'):
  c = task_configs.start(arg, 'classification')
  c.task.dataset = 'imdb_reviews'
  c.task.input_fields = 'text'
  c.task.target_field = 'label'
  c.task.prompt = 'sentiment: '
  c.task.target_prompt = ' Sentiment:'
  c.task.label_words = 'negative,positive'
  c.task.target_length = 4
  c.model.num_classes = 2
  c.data.seq_len = 256
  c.data.eval_split = 'test'
  return task_configs.finish(c, arg, train_examples=25_000)
