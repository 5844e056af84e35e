"""Masked LM: statistics over many rows, exact BERT counts, weights, whole words, static masks."""
import jax
import numpy as np
import pytest

from ptlm_jax import config_lib, errors, objectives
from ptlm_jax.data import vocab

PIECES = 1000
L = 64
# word starts: ids divisible by 3 (a stand-in for SentencePiece's '▁' pieces)
WORD_START = np.arange(PIECES + vocab.NUM_SENTINELS) % 3 == 0
VOCAB = vocab.VocabInfo(piece_count=PIECES, word_start=WORD_START)
SPECIALS = list(vocab.SPECIAL_IDS[1:])  # padding is added separately
P = 8  # max_predictions: below some rows' 15% so that the cap is exercised


def make_rows(seed, batch):
  """Rows mixing ordinary ids, specials and sentinels, padded after a random length."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(vocab.FIRST_ORDINARY_ID, PIECES, (batch, L)).astype(np.int32)
  odd = rng.random((batch, L))
  tokens = np.where(odd < 0.08, rng.choice(SPECIALS, (batch, L)), tokens)
  tokens = np.where(odd > 0.97, VOCAB.sentinel(3), tokens)
  lengths = rng.integers(L // 2, L + 1, batch)
  real = np.arange(L) < lengths[:, None]
  segments = np.where(real, 1 + np.arange(L) // 20, 0).astype(np.int32)
  tokens = np.where(real, tokens, 0).astype(np.int32)
  return {'tokens': tokens, 'segment_ids': segments, 'positions': np.zeros_like(tokens)}


def make_objective(**overrides):
  config = config_lib.base_config('bert', 'tiny')
  config.data.seq_len = L
  for k, v in overrides.items():
    config.objective[k] = v
  config_lib.validate(config)
  return jax.jit(objectives.get_objective(config, VOCAB))


def chosen_positions(inputs, weights):
  """Bool [B, L] of predicted positions, from predict_positions or [B, L] weights."""
  if 'predict_positions' not in inputs:
    return np.asarray(weights) > 0
  chosen = np.zeros(np.asarray(inputs['tokens']).shape, bool)
  for b, (pos, w) in enumerate(zip(np.asarray(inputs['predict_positions']), np.asarray(weights))):
    chosen[b, pos[w > 0]] = True
    assert len(set(pos[w > 0].tolist())) == int((w > 0).sum())  # no position twice
    assert (pos[w == 0] == 0).all()
  return chosen


@pytest.fixture(scope='module')
def fixed_mode():
  objective = make_objective(max_predictions=P)  # fixed count, predict_positions auto -> on
  batch = make_rows(0, 512)
  return batch, objective(batch, jax.random.PRNGKey(0)), objective


def test_fixed_mode_exact_counts_and_never_specials(fixed_mode):
  batch, (inputs, targets, weights), _ = fixed_mode
  assert inputs['predict_positions'].shape == targets.shape == weights.shape == (512, P)
  chosen = chosen_positions(inputs, weights)
  tokens = batch['tokens']
  ordinary = (tokens >= vocab.FIRST_ORDINARY_ID) & (tokens < PIECES)
  assert not (chosen & ~ordinary).any()  # never padding, EOS, specials or sentinels
  for b in range(512):
    n = int(ordinary[b].sum())
    assert chosen[b].sum() == min(P, max(1, round(n * 0.15)))  # Python 3 round, as BERT
  assert {min(P, max(1, round(n * 0.15))) for n in ordinary.sum(1)} >= {P, P - 1}


def test_targets_weights_and_unchosen_positions(fixed_mode):
  batch, (inputs, targets, weights), _ = fixed_mode
  chosen = chosen_positions(inputs, weights)
  tokens, masked = batch['tokens'], np.asarray(inputs['tokens'])
  np.testing.assert_array_equal(masked[~chosen], tokens[~chosen])
  pos, w = np.asarray(inputs['predict_positions']), np.asarray(weights)
  expected = np.where(w > 0, np.take_along_axis(tokens, pos, 1), 0)
  np.testing.assert_array_equal(targets, expected)
  np.testing.assert_array_equal(inputs['segment_ids'], batch['segment_ids'])


def test_80_10_10_split_and_replacement_ids(fixed_mode):
  batch, (inputs, _, weights), _ = fixed_mode
  chosen = chosen_positions(inputs, weights)
  original, masked = batch['tokens'][chosen], np.asarray(inputs['tokens'])[chosen]
  is_mask = masked == vocab.MASK_ID
  replaced = ~is_mask & (masked != original)
  total = chosen.sum()
  assert total > 3000
  assert abs(is_mask.mean() - 0.8) < 0.03
  # a random draw equals the original 1 time in 993: within the bound
  assert abs(replaced.mean() - 0.1) < 0.025
  assert abs((masked == original).mean() - 0.1) < 0.025
  assert ((masked[replaced] >= vocab.FIRST_ORDINARY_ID) & (masked[replaced] < PIECES)).all()


def test_every_candidate_equally_likely(fixed_mode):
  batch, _, objective = fixed_mode
  row = {k: np.repeat(v[:1], 512, 0) for k, v in batch.items()}
  inputs, _, weights = objective(row, jax.random.PRNGKey(1))
  freq = chosen_positions(inputs, weights).mean(0)
  tokens = row['tokens'][0]
  ordinary = (tokens >= vocab.FIRST_ORDINARY_ID) & (tokens < PIECES)
  n = ordinary.sum()
  expected = min(P, max(1, round(n * 0.15))) / n
  assert (freq[~ordinary] == 0).all()
  np.testing.assert_allclose(freq[ordinary], expected, atol=0.075)  # ~5 sd at 512 draws


def test_bernoulli_fraction_and_full_length_weights():
  objective = make_objective(mask_count_mode='bernoulli')  # auto -> no predict_positions
  batch = make_rows(2, 512)
  inputs, targets, weights = objective(batch, jax.random.PRNGKey(2))
  assert 'predict_positions' not in inputs and targets.shape == weights.shape == (512, L)
  chosen = np.asarray(weights) > 0
  tokens = batch['tokens']
  ordinary = (tokens >= vocab.FIRST_ORDINARY_ID) & (tokens < PIECES)
  assert not (chosen & ~ordinary).any()
  assert abs(chosen.sum() / ordinary.sum() - 0.15) < 0.01  # ~24k candidates
  counts = chosen.sum(1)
  assert counts.std() > 1  # varies per row, unlike the fixed count
  np.testing.assert_array_equal(np.asarray(targets)[chosen], tokens[chosen])
  assert (np.asarray(targets)[~chosen] == 0).all()


def test_bernoulli_with_predict_positions_keeps_at_most_p():
  objective = make_objective(mask_count_mode='bernoulli', predict_positions='on',
                             max_predictions=5)
  batch = make_rows(2, 256)
  inputs, targets, weights = objective(batch, jax.random.PRNGKey(2))
  assert targets.shape == (256, 5)
  chosen = chosen_positions(inputs, weights)
  changed = np.asarray(inputs['tokens']) != batch['tokens']
  assert not (changed & ~chosen).any()  # dropped picks stay unmasked
  counts = chosen.sum(1)
  assert counts.max() == 5 and (counts == 5).mean() > 0.5  # ~7 expected per row


def _words(tokens, segments):
  """Word index per position, by the definition in mlm.py, written independently."""
  words, current = np.full(len(tokens), -1), -1
  for i, t in enumerate(tokens):
    if not vocab.FIRST_ORDINARY_ID <= t < PIECES:
      continue
    prev_ok = i > 0 and vocab.FIRST_ORDINARY_ID <= tokens[i - 1] < PIECES
    if WORD_START[t] or not prev_ok or segments[i] != segments[i - 1]:
      current += 1
    words[i] = current
  return words


def test_whole_word_masking_takes_whole_words_up_to_the_count():
  objective = make_objective(whole_word=True)
  batch = make_rows(3, 256)
  inputs, _, weights = objective(batch, jax.random.PRNGKey(3))
  chosen = chosen_positions(inputs, weights)
  fill = []
  for b in range(256):
    words = _words(batch['tokens'][b], batch['segment_ids'][b])
    for w in set(words[chosen[b]].tolist()):
      assert chosen[b][words == w].all()  # never part of a word
    n = int((words >= 0).sum())
    count = min(20, max(1, round(n * 0.15)))
    assert chosen[b].sum() <= count
    fill.append(chosen[b].sum() / count)
  assert np.mean(fill) > 0.97  # BERT's greedy skips words that overflow, then goes on


def test_static_masking_depends_on_the_row_not_the_step():
  objective = make_objective(static_masking=True)
  batch = make_rows(4, 8)
  batch = {k: np.concatenate([v, v[:2]]) for k, v in batch.items()}  # rows 8, 9 = rows 0, 1
  a = objective(batch, jax.random.PRNGKey(5))
  b = objective(batch, jax.random.PRNGKey(6))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(a[0]['tokens'][8:], a[0]['tokens'][:2])
  assert not np.array_equal(a[0]['tokens'][0], a[0]['tokens'][1])

  dupes = make_objective(static_masking=True, dupe_factor=3)
  masks = {np.asarray(dupes(batch, jax.random.PRNGKey(s))[0]['tokens'][0]).tobytes()
           for s in range(30)}
  assert len(masks) == 3  # one of dupe_factor fixed masks per visit


def test_dynamic_masking_changes_with_the_step_rng(fixed_mode):
  batch, (inputs, _, _), objective = fixed_mode
  other = objective(batch, jax.random.PRNGKey(9))[0]
  same = objective(batch, jax.random.PRNGKey(0))[0]
  np.testing.assert_array_equal(same['tokens'], inputs['tokens'])
  assert not np.array_equal(other['tokens'], inputs['tokens'])


def test_config_errors():
  config = config_lib.base_config('bert', 'tiny')
  config.objective.whole_word = True
  with pytest.raises(errors.ConfigError, match='objective.whole_word'):
    objectives.get_objective(config, vocab.VocabInfo(piece_count=PIECES))
  config.objective.predict_positions = 'yes'
  with pytest.raises(errors.ConfigError, match='objective.predict_positions'):
    config_lib.validate(config)
  config = config_lib.base_config('bert', 'tiny')
  config.objective.random_token_rate = 0.3
  with pytest.raises(errors.ConfigError, match='objective.random_token_rate'):
    config_lib.validate(config)
