r"""CNN / Daily Mail summarisation (TFDS `cnn_dailymail`, needs a download once): ROUGE.

Article -> highlights; T5 text-to-text or GPT continuation as in news_headlines.py,
512-piece inputs, 64-piece summaries.  287,113 / 13,368 / 11,490 articles; one epoch.

  python -m ptlm_jax.main --config=configs/finetune/cnn_dailymail.py:t5 \
      --workdir=runs/cnn-t5 --config.init.source=runs/t5 --config.data.download=True
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 't5'):
  c = task_configs.start(arg, 'summarization')
  c.task.dataset = 'cnn_dailymail'
  c.task.input_fields = 'article'
  c.task.target_field = 'highlights'
  c.task.prompt = 'summarize: '
  c.task.target_prompt = ' TL;DR:'
  c.task.target_length = 64
  c.task.eval_examples = 1000            # greedy decoding of all 13k would dominate the run
  c.data.seq_len = 512
  return task_configs.finish(c, arg, train_examples=287_113, epochs=1)
