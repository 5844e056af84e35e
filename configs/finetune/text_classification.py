r"""Text classification on your own CSV / TSV / JSONL files: any number of classes.

Columns `task.input_fields` (one, or two for a pair: 'premise,hypothesis') and
`task.target_field`; labels may be strings or numbers: ids in sorted order (numbers
numerically), or the order of --config.task.label_names='neg,neu,pos'.  model.num_classes
comes from the labels; training runs 3 epochs of the train file unless
--config.train.steps is set.  BERT [CLS] head, GPT last-token head, T5 text-to-text (the
label names are the target words; `t5,head` for a head).  See ptlm_jax/data/local_files.py.

  python -m ptlm_jax.main --config=configs/finetune/text_classification.py:bert \
      --workdir=runs/my-bert --config.init.source=runs/bert \
      --config.task.train_file=data/train.csv --config.task.validation_file=data/dev.csv \
      --config.task.input_fields=review --config.task.target_field=stars
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 'bert'):
  c = task_configs.start(arg, 'classification')
  c.task.input_fields = 'text'
  c.task.target_field = 'label'
  c.task.prompt = 'classify: '           # T5 text-to-text input prefix
  c.task.target_prompt = ' Label:'       # GPT continuation: text before the label word
  c.task.target_length = 8
  c.data.seq_len = 128
  c = task_configs.finish(c, arg, train_examples=1000)
  return task_configs.from_files(c, arg)
