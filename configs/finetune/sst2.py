r"""GLUE SST-2 sentence sentiment (TFDS `glue/sst2`, needs a download once): accuracy, F1.

67,349 train / 872 validation sentences (the GLUE test labels are hidden).  T5's
text-to-text input is T5's own 'sst2 sentence: ...' prefix.

  python -m ptlm_jax.main --config=configs/finetune/sst2.py:bert \
      --workdir=runs/sst2-bert --config.init.source=runs/bert --config.data.download=True
  (gpt, t5 and t5,head as in rotten_tomatoes.py)
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 'bert'):
  c = task_configs.start(arg, 'classification')
  c.task.dataset = 'glue/sst2'
  c.task.input_fields = 'sentence'
  c.task.target_field = 'label'
  c.task.prompt = 'sst2 sentence: '
  c.task.target_prompt = ' Sentiment:'
  c.task.label_words = 'negative,positive'
  c.task.target_length = 4
  c.model.num_classes = 2
  c.data.seq_len = 64
  return task_configs.finish(c, arg, train_examples=67_349)
