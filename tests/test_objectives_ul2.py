"""UL2 mixture of denoisers: spec parsing, lengths per denoiser, per-row examples."""
import collections

import jax
import numpy as np
import pytest

from ptlm_jax import config_lib, errors, objectives
from ptlm_jax.data import vocab
from ptlm_jax.objectives import mixture
from tests.t5_reference import t5_random_spans_helper, t5_random_spans_noise_mask

VOCAB = vocab.VocabInfo(piece_count=1000)
SEQ_LEN = 64
PARADIGM = {VOCAB.sentinel(99): 'R', VOCAB.sentinel(98): 'X', VOCAB.sentinel(97): 'S'}


def make(mixture_spec=mixture.DEFAULT_MIXTURE, seq_len=SEQ_LEN, random_roll=False):
  config = config_lib.base_config('t5', 'tiny')
  config.objective.name = 'ul2'
  config.objective.ul2_mixture = mixture_spec
  config.objective.random_roll = random_roll
  config.data.seq_len = seq_len
  return objectives.get_objective(config, VOCAB)


def test_parse_default_and_weights():
  ds = mixture.parse_mixture(mixture.DEFAULT_MIXTURE)
  assert [(d.paradigm, d.mean_span_length, d.noise_density) for d in ds] == [
      ('R', 3, 0.15), ('R', 8, 0.15), ('S', 0, 0), ('X', 3, 0.5), ('X', 8, 0.5),
      ('X', 64, 0.15), ('X', 64, 0.5)]
  assert mixture.parse_mixture('S=3, R:3:0.15')[0] == mixture.Denoiser('S', weight=3.0)


@pytest.mark.parametrize('spec', ['R:3', 'Q:3:0.1', 'R:3:1.5', 'S=0', 'R:x:0.1', 'S:3'])
def test_bad_specs_name_the_field(spec):
  with pytest.raises(errors.ConfigError, match='objective.ul2_mixture'):
    mixture.parse_mixture(spec)


def test_lengths_follow_t5_helper_per_denoiser():
  shapes = mixture.mixture_shapes(mixture.parse_mixture(mixture.DEFAULT_MIXTURE), SEQ_LEN,
                                  paradigm_tokens=True, random_roll=False)
  budget = SEQ_LEN - 1  # one encoder slot for the paradigm token

  def inputs_length(n, r, mu):  # what the reference mask gives a full row of n tokens
    mask = t5_random_spans_noise_mask(n, r, (lambda x: x, lambda x: x), mu)
    return n - mask.sum() + np.sum(mask & ~np.pad(mask[:-1], [[1, 0]])) + 1

  def raw(r, mu):
    # T5's helper, unless the real mask needs more: at (64, 0.15) the helper's
    # round(11 / 64) = 0 spans for 73 tokens, but the mask always has >= 1 span,
    # so 73 tokens give 64 inputs; 72 is the longest row that fits
    n = t5_random_spans_helper(budget, r, mu)[0]
    while inputs_length(n, r, mu) > budget:
      n -= 1
    return n

  expected = [raw(r, mu) if p != 'S' else budget - 1
              for p, mu, r in [('R', 3, .15), ('R', 8, .15), ('S', 0, 0), ('X', 3, .5),
                               ('X', 8, .5), ('X', 64, .15), ('X', 64, .5)]]
  assert expected[5] == 72 and t5_random_spans_helper(budget, 0.15, 64)[0] == 73
  assert shapes.raw_lengths.tolist() == expected
  assert shapes.raw_length == max(expected)
  objective = make()
  assert (objective.raw_length, objective.inputs_length) == (max(expected), SEQ_LEN)


def test_t5_base_with_ul2_reserves_the_sentinels_it_needs():
  # X (3, 0.5) at 512 inputs (511 beside the paradigm token): the longest raw row n has
  # n - 0.5n + n/6 + 1 <= 511, n = 765: 382 noise tokens in round(382 / 3) = 127 spans.
  # With the 3 paradigm tokens 130 sentinels: more than the tokenizer's 100 plus the 28
  # spare rows of T5's 32128, so the vocabulary grows to the next multiple of 128.
  from configs import t5 as t5_configs  # pylint: disable=g-import-not-at-top  (conftest: repo root)
  config = t5_configs.get_config('base')
  config.objective.name = 'ul2'
  assert objectives.sentinels_needed(config) == 130
  assert 'sentinels' in objectives.reserve_sentinels(config, 32000)
  assert config.model.vocab_size == 32256
  pieces = vocab.VocabInfo(32000)
  objective = objectives.get_objective(config, pieces)   # the default mixture at 512
  assert objective.inputs_length == 512
  # Too few rows (a pretrained vocabulary): a one-line error naming the field.
  config.model.vocab_size = 32128
  with pytest.raises(errors.ConfigError, match='model.vocab_size=32128'):
    objectives.get_objective(config, pieces)


def test_ul2_sentinels_beyond_the_block_come_from_the_rows_above():
  config = config_lib.base_config('t5', 'tiny')
  config.objective.update(name='ul2', ul2_mixture='X:3:0.5')
  config.data.seq_len = 512
  info = vocab.VocabInfo(1000)
  objective = objectives.get_objective(config, info)
  tokens = np.random.RandomState(0).randint(7, 1000, (2, objective.raw_length)).astype(np.int32)
  batch = dict(tokens=tokens, segment_ids=np.ones_like(tokens), positions=np.zeros_like(tokens))
  inputs, _, _ = objective(batch, jax.random.PRNGKey(0))
  enc = np.asarray(inputs['encoder_tokens'][0])
  assert enc[0] == 1000 + 1                     # [NLG] = <extra_id_98>: its id is unchanged
  sentinels = [t for t in enc[1:].tolist() if t >= 1000]
  # <extra_id_0..96> = 1099 .. 1003 (counting down), then <extra_id_100>, ... = 1100, ...
  expected = list(range(1099, 1002, -1)) + list(range(1100, 1100 + len(sentinels) - 97))
  assert len(sentinels) == 127 and sentinels == expected


def _reconstruct(enc, tgt):
  spans, current = {}, None
  for t in tgt:
    if t >= VOCAB.piece_count:
      current = spans.setdefault(t, [])
    else:
      current.append(t)
  return sum((spans[t] if t >= VOCAB.piece_count else [t] for t in enc), [])


@pytest.mark.parametrize('spec, random_roll, shares', [
    # the paper's mixture, drawn uniformly: R 2/7, X 4/7, S 1/7
    (mixture.DEFAULT_MIXTURE, False, {'R': 2 / 7, 'X': 4 / 7, 'S': 1 / 7}),
    ('R:3:0.15,S=2,X:64:0.5', True, {'R': 1 / 4, 'X': 1 / 4, 'S': 1 / 2}),
])
def test_rows_are_valid_denoising_examples(spec, random_roll, shares):
  objective = make(spec, random_roll=random_roll)
  denoisers = mixture.parse_mixture(spec)
  shapes = mixture.mixture_shapes(denoisers, SEQ_LEN, True, random_roll)
  raws = {}
  for d, raw in zip(denoisers, shapes.raw_lengths):
    raws.setdefault(d.paradigm, set()).add(int(raw))
  rng = np.random.default_rng(0)
  batch_size, length = 350, objective.raw_length
  tokens = rng.integers(vocab.FIRST_ORDINARY_ID, VOCAB.piece_count, (batch_size, length))
  n_real = rng.integers(2, length + 1, batch_size)
  n_real[:20] = length
  segments = (np.arange(length) < n_real[:, None]).astype(np.int32)
  tokens = np.where(segments > 0, tokens, 0).astype(np.int32)
  batch = {'tokens': tokens, 'segment_ids': segments, 'positions': np.zeros_like(tokens)}
  inputs, targets, weights = jax.jit(objective)(batch, jax.random.PRNGKey(1))
  enc_all = np.asarray(inputs['encoder_tokens'])
  targets, weights = np.asarray(targets), np.asarray(weights)
  seen = collections.Counter()
  for b in range(batch_size):
    n_in, n_tg = int(inputs['encoder_segment_ids'][b].sum()), int(weights[b].sum())
    enc, tgt = enc_all[b, :n_in].tolist(), targets[b, :n_tg].tolist()
    paradigm = PARADIGM[enc[0]]
    seen[paradigm] += 1
    assert enc[-1] == vocab.EOS_ID and tgt[-1] == vocab.EOS_ID
    enc, tgt = enc[1:-1], tgt[:-1]
    real = tokens[b, :n_real[b]].tolist()
    if paradigm == 'S':  # prefix -> encoder, rest -> decoder, split in [1, n-1]
      text = real[:min(n_real[b], max(raws['S']))]
      assert enc + tgt == text and 1 <= len(enc) <= len(text) - 1
      assert not any(t >= VOCAB.piece_count for t in enc + tgt)
    else:
      text = _reconstruct(enc, tgt)
      assert len(text) in {min(n_real[b], r) for r in raws[paradigm]}
      assert text == real[:len(text)]
      sentinels = [t for t in enc if t >= VOCAB.piece_count]
      assert sentinels == list(range(VOCAB.sentinel(0), VOCAB.sentinel(len(sentinels)), -1))
  for p, share in shares.items():  # ~4 standard deviations at 350 rows
    assert abs(seen[p] / batch_size - share) < 0.1, seen
