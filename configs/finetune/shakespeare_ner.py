r"""Silver NER on Shakespeare's plays (offline, data/task_corpora.py): entity-level F1.

PER from each play's cast list, LOC from scene headings (rules, not annotators: see
task_corpora.py); 14,580 / 849 / 650 speeches, held-out plays in validation and test.

  python -m ptlm_jax.main --config=configs/finetune/shakespeare_ner.py:bert \
      --workdir=runs/ner-bert --config.init.source=runs/bert
  python -m ptlm_jax.main --config=configs/finetune/shakespeare_ner.py:t5 \
      --workdir=runs/ner-t5 --config.init.source=runs/t5
  python -m ptlm_jax.main --config=configs/finetune/shakespeare_ner.py:bert,quick \
      --workdir=runs/ner-quick
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 'bert'):
  c = task_configs.start(arg, 'ner')
  c.task.dataset = 'shakespeare_ner'
  c.task.input_fields = 'tokens'
  c.task.target_field = 'ner'
  c.model.num_classes = 5                # O, B-PER, I-PER, B-LOC, I-LOC
  c.data.seq_len = 96                    # at most 48 words a speech
  return task_configs.finish(c, arg, train_examples=14_580)
