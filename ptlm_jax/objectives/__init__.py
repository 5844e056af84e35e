"""Pretraining objectives: packed token rows -> model inputs, targets, loss weights.

    objective = objectives.get_objective(config, tokenizer.vocab_info)
    it = pipeline.make_pretrain_iterator(config, tokenizer, row_length=objective.raw_length)
    inputs, targets, weights = objective(next(it), rng)   # inside the jitted step
    logits = model.apply({'params': params}, **inputs, ...)

Every objective is a pure jax function of (batch, rng) with fixed output shapes, so it
runs on device inside the train step; the same rng gives the same result.  `weights`
(float32) are 1 exactly where a loss is taken; the loss never tests `target > 0`.

| name            | families | module             | follows                           |
|-----------------|----------|--------------------|-----------------------------------|
| mlm             | bert     | mlm.py             | BERT create_pretraining_data.py   |
| causal_lm       | gpt      | causal.py          | GPT next-token prediction         |
| prefix_lm       | gpt, t5  | prefix_lm.py       | T5 prefix_lm                      |
| span_corruption | t5       | span_corruption.py | T5 span_corruption                |
| ul2             | t5       | mixture.py         | UL2 mixture of denoisers          |

Each module's docstring says what it follows and where it differs.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

from ptlm_jax import config_lib
from ptlm_jax.data import vocab
from ptlm_jax.objectives import causal, mixture, mlm, prefix_lm, span_corruption
from ptlm_jax.objectives.span_corruption import span_corruption_lengths  # noqa: F401
from ptlm_jax.objectives.mixture import paradigm_token_ids  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Objective:
  """A configured objective.

  raw_length: packed row length it needs from the pipeline.
  inputs_length: length of the model's (encoder) token inputs.
  targets_length: length of targets/weights (T for t5, P for MLM with predict
    positions, else the row length).
  """
  name: str
  raw_length: int
  inputs_length: int
  targets_length: int
  fn: Callable[..., Any] = dataclasses.field(repr=False)

  def __call__(self, batch, rng):
    """(inputs, targets, weights) for a packed batch of [B, raw_length] arrays."""
    length = batch['tokens'].shape[-1]
    if length != self.raw_length:
      raise ValueError(f'objective {self.name} needs rows of {self.raw_length} tokens '
                       f'(objective.raw_length), got {length}')
    return self.fn(batch, rng)


def _targets_length(config, derived: int) -> int:
  asked = config.objective.targets_length
  if asked and asked < derived:
    raise config_lib.ConfigError('objective.targets_length', asked,
                                 f'0 (derived) or >= {derived} for {config.objective.name} '
                                 f'at data.seq_len={config.data.seq_len}')
  return asked or derived


def _check_sentinels(needed: int, available: int, why: str) -> None:
  if needed > available:
    raise config_lib.ConfigError(
        'data.seq_len', why,
        f'a row needing at most {available} sentinels (it needs {needed}); '
        'shorten data.seq_len or lower the noise density / raise the mean span length')


def get_objective(config, vocab_info: vocab.VocabInfo) -> Objective:
  """Builds the objective named by config.objective.name for config.model.family."""
  o, family, seq_len = config.objective, config.model.family, config.data.seq_len
  if o.name not in config_lib.OBJECTIVES_FOR_FAMILY[family]:
    raise config_lib.ConfigError('objective.name', o.name,
                                 f'one of {config_lib.OBJECTIVES_FOR_FAMILY[family]} for '
                                 f'model.family={family!r}')
  if vocab_info.size > config.model.vocab_size:
    raise config_lib.ConfigError('model.vocab_size', config.model.vocab_size,
                                 f'>= {vocab_info.size}, the tokenizer pieces plus sentinels')
  if seq_len < 4:
    raise config_lib.ConfigError('data.seq_len', seq_len, 'an integer >= 4')

  if o.name == 'mlm':
    predict = {'on': True, 'off': False, 'auto': o.mask_count_mode == 'fixed'}[o.predict_positions]
    if o.whole_word and vocab_info.word_start is None:
      raise config_lib.ConfigError('objective.whole_word', True,
                                   'a tokenizer with word-start pieces (VocabInfo.word_start)')
    settings = mlm.MlmSettings(
        piece_count=vocab_info.piece_count, rate=o.mask_rate, count_mode=o.mask_count_mode,
        max_predictions=config_lib.max_predictions(config), whole_word=o.whole_word,
        predict_positions=predict,
        mask_token_rate=o.mask_token_rate, random_token_rate=o.random_token_rate,
        static=o.static_masking, dupe_factor=o.dupe_factor, seed=config.train.seed,
        word_start=vocab_info.word_start)
    return Objective('mlm', seq_len, seq_len, settings.max_predictions if predict else seq_len,
                     functools.partial(mlm.masked_lm, settings=settings))

  if o.name == 'causal_lm':
    return Objective('causal_lm', seq_len, seq_len, seq_len, causal.causal_lm)

  if o.name == 'prefix_lm' and family == 'gpt':
    return Objective('prefix_lm', seq_len, seq_len, seq_len, prefix_lm.decoder_prefix_lm)

  if o.name == 'prefix_lm':
    t = _targets_length(config, seq_len)
    fn = functools.partial(prefix_lm.encoder_decoder_prefix_lm, inputs_length=seq_len,
                           targets_length=t)
    return Objective('prefix_lm', seq_len, seq_len, t, fn)

  if o.name == 'span_corruption':
    shapes = span_corruption.span_shapes(seq_len, o.noise_density, o.mean_span_length,
                                         o.random_roll)
    _check_sentinels(shapes.max_spans, vocab_info.num_sentinels, seq_len)
    t = _targets_length(config, shapes.targets_length)
    fn = functools.partial(span_corruption.span_corruption, vocab_info=vocab_info,
                           shapes=shapes, random_roll=o.random_roll, inputs_length=seq_len,
                           targets_length=t)
    return Objective('span_corruption', shapes.raw_length, seq_len, t, fn)

  if o.name == 'ul2':
    denoisers = mixture.parse_mixture(o.ul2_mixture)
    shapes = mixture.mixture_shapes(denoisers, seq_len, o.ul2_paradigm_tokens, o.random_roll)
    reserved = len(mixture.PARADIGMS) if o.ul2_paradigm_tokens else 0
    _check_sentinels(shapes.max_spans, vocab_info.num_sentinels - reserved, seq_len)
    t = _targets_length(config, shapes.targets_length)
    fn = functools.partial(mixture.ul2, vocab_info=vocab_info, denoisers=denoisers,
                           shapes=shapes, paradigm_tokens=o.ul2_paradigm_tokens,
                           random_roll=o.random_roll, inputs_length=seq_len, targets_length=t)
    return Objective('ul2', shapes.raw_length, seq_len, t, fn)

  raise config_lib.ConfigError('objective.name', o.name, 'a known objective')
