r"""GLUE MNLI natural language inference (TFDS `glue/mnli`, needs a download once): accuracy.

Premise-hypothesis pairs, three classes (0 entailment, 1 neutral, 2 contradiction);
392,702 train pairs, evaluated on `validation_matched` (9,815 pairs; the GLUE test labels
are hidden).  Pairs take the family's pair layout (BERT [CLS] a [SEP] b [SEP]); T5's
text-to-text input is 'mnli premise: ... hypothesis: ...' (T5's own task prefix).

  python -m ptlm_jax.main --config=configs/finetune/mnli.py:bert \
      --workdir=runs/mnli-bert --config.init.source=runs/bert --config.data.download=True
  (gpt, t5 and t5,head as in rotten_tomatoes.py)
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 'bert'):
  c = task_configs.start(arg, 'classification')
  c.task.dataset = 'glue/mnli'
  c.task.input_fields = 'premise,hypothesis'
  c.task.target_field = 'label'
  c.task.prompt = 'mnli '
  c.task.target_prompt = ' Relation:'
  c.task.label_words = 'entailment,neutral,contradiction'
  c.task.target_length = 8               # 'contradiction' may take several pieces
  c.model.num_classes = 3
  c.data.seq_len = 128                   # BERT's GLUE length (run_classifier max_seq_length)
  c.data.eval_split = 'validation_matched'
  return task_configs.finish(c, arg, train_examples=392_702)
