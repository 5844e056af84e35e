r"""Sentiment of Rotten Tomatoes review snippets (offline): accuracy and binary F1.

BERT [CLS] head, GPT last-token head, T5 text-to-text ('sentiment: ...' -> negative |
positive, scored by rank classification) or, with `t5,head`, a head on T5's encoder.
10,256 / 1,181 / 1,315 snippets (train / validation / test), fresh = 1.

  python -m ptlm_jax.main --config=configs/finetune/rotten_tomatoes.py:bert \
      --workdir=runs/rt-bert --config.init.source=runs/bert
  python -m ptlm_jax.main --config=configs/finetune/rotten_tomatoes.py:gpt \
      --workdir=runs/rt-gpt --config.init.source=runs/gpt
  python -m ptlm_jax.main --config=configs/finetune/rotten_tomatoes.py:t5 \
      --workdir=runs/rt-t5 --config.init.source=runs/t5
  python -m ptlm_jax.main --config=configs/finetune/rotten_tomatoes.py:bert,quick \
      --workdir=runs/rt-quick
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 'bert'):
  c = task_configs.start(arg, 'classification')
  c.task.dataset = 'rotten_tomatoes'
  c.task.input_fields = 'text'
  c.task.target_field = 'label'
  c.task.prompt = 'sentiment: '          # T5 text-to-text input prefix
  c.task.target_prompt = ' Sentiment:'   # GPT continuation: text before the label word
  c.task.label_words = 'negative,positive'
  c.task.target_length = 4
  c.model.num_classes = 2
  c.data.seq_len = 64                    # snippets: 95% under 50 pieces
  return task_configs.finish(c, arg, train_examples=10_256)
