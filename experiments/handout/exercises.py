"""The handout's numeric exercises, each computed by the library (no training needed).

  answers = exercises.masking_exercise(draws=20_000)   # BERT 80/10/10 on "The quick brown fox jumps"
  exercises.attention_connections(6)                   # from the models' own masks
  exercises.softmax_exercise(), exercises.lora_exercise(), exercises.cost_exercise()
  exercises.carbon_exercise(), exercises.model_table(), exercises.task_table()

Every function returns plain numbers (tests compare them with hand computation; the
expensive ones are cached, so treat their results as read-only), and answers.py turns
them into the markdown the handout job writes.

Legend: B draws (rows), L sentence length, N sequence length.
"""
from __future__ import annotations

import functools
import math

import numpy as np

SENTENCE = ('The', 'quick', 'brown', 'fox', 'jumps')
TOY_PIECES = 1000  # a word-level toy vocabulary: the five words are ids 7..11


# ---------------------------------------------------------------------------
# B1: BERT's masking, through the real objective.

def lora_example(d_in: int = 768, d_out: int = 768, rank: int = 16,
                 model_params: int = 340_000_000) -> dict:
  """The handout's example: LoRA on one d_in x d_out matrix, against the matrix and a model.

  >>> lora_example()   # 768 x 768, r = 16
  {'matrix_params': 589824, 'lora_params': 24576, 'percent_of_matrix': 4.1666...,
   'percent_of_model': 0.00722...}
  """
  lora = rank * (d_in + d_out)
  return {'matrix_params': d_in * d_out, 'lora_params': lora,
          'percent_of_matrix': 100.0 * lora / (d_in * d_out),
          'percent_of_model': 100.0 * lora / model_params}


@functools.cache  # the handout job and its tests ask more than once
def masking_exercise(draws: int = 20_000, seed: int = 0) -> dict:
  """Runs the MLM objective on the five-word sentence `draws` times (one row per draw).

  The sentence is five ordinary ids of a word-level toy vocabulary, so "15% of 5
  tokens" is BERT's count rule: max(1, round(5 x 0.15)) = 1 position per draw.
  """
  # pylint: disable=g-import-not-at-top  (jax only when the exercise runs)
  import jax
  from ptlm_jax import config_lib, objectives
  from ptlm_jax.data import vocab
  config = config_lib.base_config('bert', 'tiny')
  config.data.seq_len = len(SENTENCE)
  objective = objectives.get_objective(config, vocab.VocabInfo(piece_count=TOY_PIECES))
  ids_L = np.arange(len(SENTENCE), dtype=np.int32) + vocab.FIRST_ORDINARY_ID
  batch = {'tokens': np.tile(ids_L, (draws, 1)),
           'segment_ids': np.ones((draws, len(SENTENCE)), np.int32),
           'positions': np.tile(np.arange(len(SENTENCE), dtype=np.int32), (draws, 1))}
  inputs, _, weights = jax.jit(objective)(batch, jax.random.PRNGKey(seed))
  inputs_BxL = np.asarray(inputs['tokens'])
  changed_BxL = inputs_BxL != ids_L  # replaced positions ...
  # ... plus kept-unchanged ones: the objective reports every chosen position.
  chosen_P = np.asarray(inputs['predict_positions'])[:, 0]
  count_B = np.asarray(weights).sum(axis=1)
  at_choice_B = inputs_BxL[np.arange(draws), chosen_P]
  original_B = ids_L[chosen_P]
  is_mask = at_choice_B == vocab.MASK_ID
  is_same = at_choice_B == original_B
  is_random = ~is_mask & ~is_same
  assert not (changed_BxL & ~np.eye(len(SENTENCE), dtype=bool)[chosen_P]).any()
  examples = []
  for b in range(4):
    words = [SENTENCE[i] if t == ids_L[i] else ('[MASK]' if t == vocab.MASK_ID else
                                                  f'[RANDOM id {t}]')
             for i, t in enumerate(inputs_BxL[b])]
    examples.append(f'position {chosen_P[b]}: ' + ' '.join(words))
  return {
      'draws': draws,
      'tokens_chosen_per_draw': sorted(set(count_B.astype(int).tolist())),
      'position_frequency': np.bincount(chosen_P, minlength=len(SENTENCE)) / draws,
      'mask_frequency': float(is_mask.mean()),
      'random_frequency': float(is_random.mean()),
      'unchanged_frequency': float(is_same.mean()),
      'brown_frequency': float((chosen_P == 2).mean()),
      'examples': examples,
  }


# ---------------------------------------------------------------------------
# B1: attention connections, read off the masks the models build.

@functools.cache  # the handout job and its tests ask more than once
def model_masks(family: str, n: int) -> dict[str, np.ndarray]:
  """{attention module name: bool [N, N] mask} of one forward pass of a tiny `family` model."""
  # pylint: disable=g-import-not-at-top
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from ptlm_jax import config_lib, models
  from ptlm_jax.models import attention
  m = config_lib.base_config(family, 'tiny').model
  m.update(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, head_dim=8, d_ff=32,
           vocab_size=256)
  model = models.build_model(m)
  inputs = {k: (jnp.arange(n, dtype=jnp.int32)[None] if 'positions' in k else v)
            for k, v in models.dummy_inputs(m, 1, n).items()}
  # The mask does not depend on the weights: zeros of the right shapes will do.
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **inputs, deterministic=True))
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  @jax.jit
  def forward(params, inputs):
    masks = {}

    def record(next_fun, args, kwargs, context):
      if isinstance(context.module, attention.Attention) and context.method_name == '__call__':
        mask = args[2] if len(args) > 2 else kwargs['mask_Bx1xTxS']
        # Stacks pass the mask as an additive float bias (0 allowed, NEG_INF masked).
        allowed = mask if mask.dtype == jnp.bool_ else mask > attention.NEG_INF / 2
        masks[context.module.name] = allowed[0, 0]
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      model.apply(params, **inputs, deterministic=True)
    return masks

  masks = {k: np.asarray(v) for k, v in forward(params, inputs).items()}
  return masks


def attention_connections(n: int) -> dict[str, int]:
  """Allowed (query, key) pairs in BERT's and GPT's self-attention for a length-n row."""
  return {'bert': int(model_masks('bert', n)['attention'].sum()),
          'gpt': int(model_masks('gpt', n)['attention'].sum())}


# ---------------------------------------------------------------------------
# B2: softmax and temperature.

HANDOUT_LOGITS = (2.5, 1.0, 0.5, 1.5)
HANDOUT_WORDS = ('sat', 'ran', 'jumped', 'slept')


def softmax_example(temperature: float = 1.0) -> dict[str, float]:
  """P(next word | "The cat") for the handout's logits [2.5, 1.0, 0.5, 1.5] at a temperature.

  softmax(logits / T): at T = 1, P(sat) = e^2.5 / (e^2.5 + e^1 + e^0.5 + e^1.5) = 0.5793;
  T < 1 sharpens the distribution towards 'sat' (greedy as T -> 0), T > 1 flattens it
  towards uniform.

    >>> {w: round(p, 4) for w, p in softmax_example(1.0).items()}
    {'sat': 0.5793, 'ran': 0.1293, 'jumped': 0.0784, 'slept': 0.2131}
  """
  if not temperature > 0:
    raise ValueError(f'temperature={temperature!r} is invalid: expected a number > 0')
  z = np.asarray(HANDOUT_LOGITS, np.float64) / temperature
  p = np.exp(z - z.max())
  return dict(zip(HANDOUT_WORDS, (p / p.sum()).tolist()))


def softmax_exercise(temperatures=(0.5, 1.0, 2.0)) -> dict[float, dict[str, float]]:
  return {t: softmax_example(t) for t in temperatures}


def entropy_bits(p: dict[str, float]) -> float:
  return -sum(v * math.log2(v) for v in p.values() if v > 0)


# ---------------------------------------------------------------------------
# B6: LoRA savings, A5 and B6 costs.

@functools.cache  # the handout job and its tests ask more than once
def lora_exercise(bert_large_rank: int = 16) -> dict:
  """The handout's matrix, and LoRA on every query/value kernel of BERT-large."""
  # pylint: disable=g-import-not-at-top
  from ptlm_jax.peft import partitions as peft
  from experiments import config_files
  example = lora_example(768, 768, 16, 340_000_000)
  config = config_files.load('configs/bert.py:large')
  config.peft.method = 'lora'
  config.peft.lora_rank = bert_large_rank
  report = peft.config_report(config)
  return {**example, 'bert_large_total': report['total'],
          'bert_large_trainable': report['trainable'],
          'bert_large_percent': 100.0 * report['trainable'] / report['total']}


def cost_exercise(companies: int = 5, from_scratch: float = 500_000, general: float = 1_000_000,
                  adapt: float = 10_000) -> dict[str, float]:
  scratch_total = companies * from_scratch
  shared_total = general + companies * adapt
  return {'scratch_total': scratch_total, 'shared_total': shared_total,
          'saved': scratch_total - shared_total,
          'saved_percent': 100.0 * (scratch_total - shared_total) / scratch_total}


@functools.cache  # the handout job and its tests ask more than once
def carbon_exercise(finetune_mwh: float = 10.0) -> dict[str, float]:
  """GPT-3 from the estimator (Patterson et al.'s setting), then the fine-tuning question."""
  # pylint: disable=g-import-not-at-top
  from ptlm_jax import estimate
  from experiments import config_files
  config = config_files.load('configs/gpt.py:gpt3')
  e = estimate.estimate(config, 'v100', 10_000, 300e9, mfu=24.6 / 125, pue=1.1,
                        grid_kg_per_kwh=0.429)
  finetune_kwh = finetune_mwh * 1000
  return {'params': e.params_total, 'days': e.days, 'energy_mwh': e.energy_kwh / 1000,
          'co2_t': e.co2_kg / 1000, 'cost_usd': e.cost_usd,
          'finetune_co2_t': estimate.co2_kg_for_energy(finetune_kwh) / 1000,
          # The handout's $4.6M scaled by energy: the same hardware, price per kWh.
          'finetune_cost_usd': 4.6e6 * finetune_kwh / (1287 * 1000),
          'saving_percent': 100.0 * (1 - finetune_kwh / (1287 * 1000))}


# ---------------------------------------------------------------------------
# B4: model comparison and task matching, from the configs.

REFERENCE = (('BERT', 'configs/bert.py:large', '340M'), ('GPT', 'configs/gpt.py:xl', '1.5B'),
             ('T5', 'configs/t5.py:11b', '11B'))


@functools.cache  # the handout job and its tests ask more than once
def model_table() -> list[dict]:
  """Parameter counts from the reference configs (the model code's own count)."""
  # pylint: disable=g-import-not-at-top
  from ptlm_jax import models
  from experiments import config_files
  rows = []
  for name, spec, handout in REFERENCE:
    config = config_files.load(spec)
    rows.append({'model': name, 'config': spec, 'handout': handout,
                 'params': models.param_count(config.model),
                 'objective': config.objective.name, 'd_model': config.model.d_model,
                 'layers': config.model.num_layers})
  return rows


# Task -> (config file:arg the codebase uses, why that family).
TASKS = (
    ('Sentiment analysis', 'configs/finetune/rotten_tomatoes.py:bert',
     'bidirectional encoder + [CLS] head'),
    ('Text generation', 'configs/gpt.py:tiny', 'causal decoder; `python -m ptlm_jax.generate`'),
    ('Question answering', 'configs/finetune/shakespeare_qa.py:bert',
     'encoder + start/end span head (extractive)'),
    ('Translation', 'configs/finetune/wmt14_de_en.py:t5', 'encoder-decoder, text to text'),
    ('Summarization', 'configs/finetune/news_headlines.py:t5', 'encoder-decoder, text to text'),
    ('Named entity recognition', 'configs/finetune/shakespeare_ner.py:bert',
     'encoder + per-token head'),
)


@functools.cache  # the handout job and its tests ask more than once
def task_table() -> list[dict]:
  """Each task's config as this codebase ships it: family, head, format (read from the file)."""
  from experiments import config_files  # pylint: disable=g-import-not-at-top
  rows = []
  for task, spec, why in TASKS:
    c = config_files.load(spec)
    rows.append({'task': task, 'config': spec, 'family': c.model.family, 'head': c.model.head,
                 'format': c.task.format if c.task.name else 'pretraining LM', 'why': why})
  return rows
