r"""Headline generation from news articles (offline `news_headlines`): ROUGE-1/2/L.

T5 text-to-text ('summarize: <article>' -> title) or GPT continuation (article, then
' TL;DR:', then the title; loss on the title only); greedy decoding of up to 24 pieces
for the metric.  3,334 / 184 / 204 articles (the `news` corpus's split: pretraining on
`news` never sees the held-out articles).

  python -m ptlm_jax.main --config=configs/finetune/news_headlines.py:t5 \
      --workdir=runs/news-t5 --config.init.source=runs/t5
  python -m ptlm_jax.main --config=configs/finetune/news_headlines.py:gpt \
      --workdir=runs/news-gpt --config.init.source=runs/gpt
"""
from ptlm_jax.finetune import tasks as task_configs


def get_config(arg: str = 't5'):
  c = task_configs.start(arg, 'summarization')
  c.task.dataset = 'news_headlines'
  c.task.input_fields = 'article'
  c.task.target_field = 'title'
  c.task.prompt = 'summarize: '
  c.task.target_prompt = ' TL;DR:'
  c.task.target_length = 24
  c.data.seq_len = 256
  return task_configs.finish(c, arg, train_examples=3_334, epochs=5)
