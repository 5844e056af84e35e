r"""CoNLL-2003 English NER (TFDS `conll2003`, needs a download once): entity-level F1.

Token classification with 9 IOB2 tags (PER, ORG, LOC, MISC); each word's tag sits on its
first sub-word, the other pieces carry no loss.  GPT tags left to right (each piece sees
only the words before it); T5 uses its encoder.  14,041 / 3,250 / 3,453 sentences.

  python -m ptlm_jax.main --config=configs/finetune/conll2003.py:bert \
      --workdir=runs/conll-bert --config.init.source=runs/bert --config.data.download=True
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 'bert'):
  c = task_configs.start(arg, 'ner')
  c.task.dataset = 'conll2003'
  c.task.input_fields = 'tokens'
  c.task.target_field = 'ner'
  c.model.num_classes = 9
  c.data.seq_len = 128
  return task_configs.finish(c, arg, train_examples=14_041)
