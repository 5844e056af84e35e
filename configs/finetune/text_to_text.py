r"""Text to text (summarisation, translation, any source -> target) on your own files.

CSV / TSV / JSONL rows with a source column (task.input_fields) and a target column
(task.target_field); T5 text-to-text or GPT continuation, scored by ROUGE
(--config.task.metric=bleu for translation).

  python -m ptlm_jax.main --config=configs/finetune/text_to_text.py:t5 \
      --workdir=runs/my-t2t --config.init.source=runs/t5 \
      --config.task.train_file=data/train.jsonl --config.task.validation_file=data/dev.jsonl \
      --config.task.input_fields=source --config.task.target_field=target
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 't5'):
  c = task_configs.start(arg, 'summarization')
  c.task.input_fields = 'source'
  c.task.target_field = 'target'
  c.task.prompt = ''
  c.task.target_prompt = ' =>'
  c.task.target_length = 64
  c.data.seq_len = 256
  c = task_configs.finish(c, arg, train_examples=1000)
  return task_configs.from_files(c, arg)
