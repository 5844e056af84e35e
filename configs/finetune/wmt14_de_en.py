r"""German -> English translation (TFDS `wmt14_translate/de-en`, needs a download): BLEU.

T5 text-to-text ('translate German to English: ...', T5's prefix) or GPT continuation
(' English:' before the target); corpus BLEU with sacrebleu.  The training set has
4.5 M pairs: a fixed 50,000 steps, not epochs.  The default tokenizer is trained on the
English `news` corpus; German text then falls back to bytes, so for real use pretrain
(and so train the tokenizer) on text of both languages.

  python -m ptlm_jax.main --config=configs/finetune/wmt14_de_en.py:t5 \
      --workdir=runs/wmt-t5 --config.init.source=runs/t5 --config.data.download=True
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 't5'):
  c = task_configs.start(arg, 'translation')
  c.task.dataset = 'wmt14_translate/de-en'
  c.task.input_fields = 'de'
  c.task.target_field = 'en'
  c.task.prompt = 'translate German to English: '
  c.task.target_prompt = ' English:'
  c.task.target_length = 64
  c.task.eval_examples = 1000
  c.data.seq_len = 128
  return task_configs.finish(c, arg, train_examples=50_000 * 32, epochs=1)
