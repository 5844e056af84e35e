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

from ptlm_jax import config_lib, errors, families
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
    raise errors.ConfigError('objective.targets_length', asked,
                                 f'0 (derived) or >= {derived} for {config.objective.name} '
                                 f'at data.seq_len={config.data.seq_len}')
  return asked or derived


def sentinels_needed(config) -> int:
  """Sentinel ids the configured objective uses (spans, plus UL2's paradigm tokens); 0
  for objectives without sentinels.  Static: from the shapes alone."""
  o, seq_len = config.objective, config.data.seq_len
  if not families.get(config.model.family).encoder_decoder:
    return 0
  if o.name == 'span_corruption':
    return span_corruption.span_shapes(seq_len, o.noise_density, o.mean_span_length,
                                       o.random_roll).max_spans
  if o.name == 'ul2':
    shapes = mixture.mixture_shapes(mixture.parse_mixture(o.ul2_mixture), seq_len,
                                    o.ul2_paradigm_tokens, o.random_roll)
    return shapes.max_spans + (len(mixture.PARADIGMS) if o.ul2_paradigm_tokens else 0)
  return 0


def reserve_sentinels(config, piece_count: int) -> str:
  """Grows `config.model.vocab_size` (to a multiple of 128) when the objective needs more
  sentinels than the tokenizer's 100 and the rows above them hold (vocab.py); returns a
  note saying so, or ''.  A model from `init.source` keeps its vocabulary (get_objective
  then names the problem)."""
  rows = piece_count + max(sentinels_needed(config), vocab.NUM_SENTINELS)
  if rows <= config.model.vocab_size or config.init.source:
    return ''
  old = config.model.vocab_size
  config.model.vocab_size = int(-(-rows // 128) * 128)
  return (f'model.vocab_size {old} -> {config.model.vocab_size}: objective '
          f'{config.objective.name} at data.seq_len={config.data.seq_len} uses '
          f'{rows - piece_count} sentinels (the tokenizer reserves {vocab.NUM_SENTINELS})')


def _with_sentinels(config, vocab_info: vocab.VocabInfo, needed: int) -> vocab.VocabInfo:
  """vocab_info extended to `needed` sentinels (the extra ones above the block), if the
  model's rows hold them; else a ConfigError saying what would."""
  if needed <= vocab_info.num_sentinels:
    return vocab_info
  rows = vocab_info.piece_count + needed
  if rows > config.model.vocab_size:
    raise errors.ConfigError(
        'model.vocab_size', config.model.vocab_size,
        f'>= {rows}: {config.objective.name} at data.seq_len={config.data.seq_len} uses '
        f'{needed} sentinels (train.run reserves them when the model is trained from scratch); '
        'or shorten data.seq_len / lower the noise density / raise the mean span length')
  return dataclasses.replace(vocab_info, num_sentinels=needed)


def get_objective(config, vocab_info: vocab.VocabInfo) -> Objective:
  """Builds the objective named by config.objective.name for config.model.family."""
  o, family, seq_len = config.objective, config.model.family, config.data.seq_len
  allowed = families.get(family).objectives
  if o.name not in allowed:
    raise errors.ConfigError('objective.name', o.name,
                             f'one of {allowed} for model.family={family!r}')
  if vocab_info.size > config.model.vocab_size:
    raise errors.ConfigError('model.vocab_size', config.model.vocab_size,
                                 f'>= {vocab_info.size}, the tokenizer pieces plus sentinels')
  if seq_len < 4:
    raise errors.ConfigError('data.seq_len', seq_len, 'an integer >= 4')
  if o.name in ('span_corruption', 'ul2', 'prefix_lm') and vocab_info.eos_id != vocab.EOS_ID:
    # These write EOS (and T5's decoder start, pad 0) as constants: T5's ids, this project's.
    raise errors.ConfigError('objective.name', o.name,
                             f'causal_lm or mlm with this tokenizer (its EOS is id '
                             f'{vocab_info.eos_id}; {o.name} assumes id {vocab.EOS_ID})')

  if o.name == 'mlm':
    predict = {'on': True, 'off': False, 'auto': o.mask_count_mode == 'fixed'}[o.predict_positions]
    if vocab_info.mask_id is None:
      raise errors.ConfigError('objective.name', 'mlm', 'an objective the tokenizer serves: it '
                               'has no [MASK] token')
    if o.whole_word and vocab_info.word_start is None:
      raise errors.ConfigError('objective.whole_word', True,
                                   'a tokenizer with word-start pieces (VocabInfo.word_start)')
    settings = mlm.MlmSettings(
        piece_count=vocab_info.piece_count, rate=o.mask_rate, count_mode=o.mask_count_mode,
        max_predictions=config_lib.max_predictions(config), whole_word=o.whole_word,
        predict_positions=predict,
        mask_token_rate=o.mask_token_rate, random_token_rate=o.random_token_rate,
        static=o.static_masking, dupe_factor=o.dupe_factor, seed=config.train.seed,
        word_start=vocab_info.word_start, mask_id=vocab_info.mask_id,
        ordinary_ids=vocab_info.ordinary_ids)
    return Objective('mlm', seq_len, seq_len, settings.max_predictions if predict else seq_len,
                     functools.partial(mlm.masked_lm, settings=settings))

  if o.name == 'causal_lm':
    return Objective('causal_lm', seq_len, seq_len, seq_len, causal.causal_lm)

  if o.name == 'prefix_lm' and families.get(family).kind == 'decoder':
    return Objective('prefix_lm', seq_len, seq_len, seq_len, prefix_lm.decoder_prefix_lm)

  if o.name == 'prefix_lm':
    t = _targets_length(config, seq_len)
    fn = functools.partial(prefix_lm.encoder_decoder_prefix_lm, inputs_length=seq_len,
                           targets_length=t)
    return Objective('prefix_lm', seq_len, seq_len, t, fn)

  if o.name == 'span_corruption':
    shapes = span_corruption.span_shapes(seq_len, o.noise_density, o.mean_span_length,
                                         o.random_roll)
    vocab_info = _with_sentinels(config, vocab_info, shapes.max_spans)
    t = _targets_length(config, shapes.targets_length)
    fn = functools.partial(span_corruption.span_corruption, vocab_info=vocab_info,
                           shapes=shapes, random_roll=o.random_roll, inputs_length=seq_len,
                           targets_length=t)
    return Objective('span_corruption', shapes.raw_length, seq_len, t, fn)

  if o.name == 'ul2':
    denoisers = mixture.parse_mixture(o.ul2_mixture)
    shapes = mixture.mixture_shapes(denoisers, seq_len, o.ul2_paradigm_tokens, o.random_roll)
    vocab_info = _with_sentinels(config, vocab_info, sentinels_needed(config))
    t = _targets_length(config, shapes.targets_length)
    fn = functools.partial(mixture.ul2, vocab_info=vocab_info, denoisers=denoisers,
                           shapes=shapes, paradigm_tokens=o.ul2_paradigm_tokens,
                           random_roll=o.random_roll, inputs_length=seq_len, targets_length=t)
    return Objective('ul2', shapes.raw_length, seq_len, t, fn)

  raise errors.ConfigError('objective.name', o.name, 'a known objective')
