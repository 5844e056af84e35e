"""Decoding strategies against hand computation, hand-built models and uncached loops.

`Bigram` is a model with the GPT interface whose next-token logits depend only on the
current token (a table set by hand), so the likelihood of every sequence is known and
sampled frequencies have an exact target.  The tiny random GPT and T5 of
models_testing check the KV-cached loop against a loop, written here, that re-runs the
full forward pass for every new token.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ptlm_jax import errors
from ptlm_jax.decoding import generate
from ptlm_jax.models import attention
from models_testing import init_params, tiny_config

PAD, EOS = 0, 1


class Bigram(nn.Module):
  """logits of the next token = table[current token]; keeps a decode cache like the models."""
  config: Any
  table: tuple

  @nn.compact
  def __call__(self, tokens, segment_ids, positions, prefix_mask=None, decode=False,
               deterministic=True):
    if decode:
      attention.DecodeState(name='state')(segment_ids, positions)
    return jnp.asarray(self.table, jnp.float32)[tokens]


def bigram(probs_VxV):
  probs_VxV = np.asarray(probs_VxV, np.float64)
  config = ml_collections.FrozenConfigDict(
      dict(family='gpt', head='lm', vocab_size=len(probs_VxV), max_len=64))
  with np.errstate(divide='ignore'):
    table = np.log(probs_VxV / probs_VxV.sum(-1, keepdims=True))
  return Bigram(config, tuple(map(tuple, table.tolist()))), np.exp(table)


def run(model, prompts, options, params=None, rng=None, pad_to=0):
  """generate() on right-padded prompts; returns numpy tokens, lengths (and the Output)."""
  lengths = np.array([len(p) for p in prompts])
  prompt = np.zeros((len(prompts), max(lengths.max(), pad_to)), np.int32)
  for r, p in enumerate(prompts):
    prompt[r, :len(p)] = p
  out = generate.generate(model, params if params is not None else {}, prompt, lengths, options,
                          rng=rng)
  return np.asarray(out.tokens_BxG), np.asarray(out.lengths_B), out


# ---------------------------------------------------------------------------
# The handout's example and the logits processors, by hand.

@pytest.mark.parametrize('p, kept', [(1e-6, {1}), (0.45, {1}), (0.6, {1, 3}), (0.79, {1, 3}),
                                     (0.81, {1, 3, 2}), (0.96, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
  logits = np.log(np.array([[0.05, 0.5, 0.15, 0.3]], np.float32))
  out = np.asarray(generate.warp_logits(jnp.asarray(logits), generate.Options('sample', top_p=p)))
  assert set(np.flatnonzero(np.isfinite(out[0]))) == kept
  finite = np.isfinite(out[0])
  np.testing.assert_allclose(out[0][finite], logits[0][finite], rtol=1e-6)  # kept ones unchanged


@pytest.mark.parametrize('k, temperature, kept', [(1, 1.0, {1, 2}), (2, 0.5, {1, 2}),
                                                  (3, 2.0, {1, 2, 3}), (9, 1.0, {0, 1, 2, 3})])
def test_top_k_and_temperature(k, temperature, kept):
  logits = np.array([[1.0, 3.0, 3.0, 2.0]], np.float32)  # a tie at the top stays (as HF)
  out = np.asarray(generate.warp_logits(jnp.asarray(logits),
                                        generate.Options('sample', top_k=k, temperature=temperature)))
  assert set(np.flatnonzero(np.isfinite(out[0]))) == kept
  for i in kept:
    assert out[0, i] == pytest.approx(logits[0, i] / temperature)


def test_repetition_penalty_hf_semantics():
  logits = jnp.array([[2.0, -1.0, 0.5, 3.0, -2.0, 1.0]])
  hist = jnp.array([[0, 1, 4, 3, 3]])  # the first 3 entries are the history; 3 is past it
  out = generate.process_logits(logits, hist, jnp.array([3]), 0,
                                generate.Options(repetition_penalty=2.0))
  np.testing.assert_allclose(out[0], [1.0, -2.0, 0.5, 3.0, -4.0, 1.0])


@pytest.mark.parametrize('n, hist, cur_len, banned', [
    (2, [5, 6, 5, 7, 5, 6], 5, {6, 7}),     # after 5 came 6 and 7; entry 5 is past the history
    (3, [1, 2, 3, 1, 2, 0], 5, {3}),        # (1, 2) was followed by 3
    (3, [1, 2, 3, 1, 4, 0], 5, set()),      # (1, 4) never occurred before
    (2, [4, 4, 0, 0, 0, 0], 2, {4}),        # (4, 4) repeats itself
    (3, [4, 4, 0, 0, 0, 0], 2, set()),      # too short for a 3-gram
])
def test_no_repeat_ngram_hf_semantics(n, hist, cur_len, banned):
  logits = jnp.zeros((1, 8))
  out = generate.process_logits(logits, jnp.array([hist]), jnp.array([cur_len]), 0,
                                generate.Options(no_repeat_ngram_size=n))
  assert set(np.flatnonzero(np.isinf(np.asarray(out[0])))) == banned


def test_token_limit_bans_ids_past_the_tokenizer():
  out = generate.process_logits(jnp.arange(6.0)[None], jnp.zeros((1, 4), jnp.int32),
                                jnp.array([1]), 0, generate.Options(token_limit=4))
  assert np.isinf(np.asarray(out[0, 4:])).all() and np.isfinite(np.asarray(out[0, :4])).all()


def test_min_new_tokens_bans_eos_until_reached():
  logits, hist = jnp.zeros((1, 4)), jnp.zeros((1, 6), jnp.int32)
  o = generate.Options(min_new_tokens=2)
  for step, banned in ((0, True), (1, True), (2, False)):
    out = generate.process_logits(logits, hist, jnp.array([1 + step]), step, o)
    assert bool(jnp.isinf(out[0, EOS])) == banned and bool(jnp.all(jnp.isfinite(out[0, 2:])))


@pytest.mark.parametrize('field, value', [
    ('strategy', 'nucleus'), ('max_new_tokens', 0), ('temperature', 0.0), ('top_k', -1),
    ('top_p', 1.5), ('top_p', 0.0), ('num_beams', 0), ('length_penalty_style', 'gnmt'),
    ('early_stopping', 'sometimes'), ('repetition_penalty', 0.0), ('min_new_tokens', 99)])
def test_bad_options_are_one_line_user_errors(field, value):
  with pytest.raises(errors.UserError, match=f'^{field}={value!r} is invalid: expected'):
    generate.Options(**{field: value}).validate(vocab_size=16)


# ---------------------------------------------------------------------------
# Hand-built models.

def _handout_unigram():
  """Every token is followed by sat / ran / jumped / slept (ids 3..6) with the handout's logits."""
  probs = np.zeros((8, 8))
  probs[:, 3:7] = np.exp([2.5, 1.0, 0.5, 1.5])
  return bigram(probs)


@pytest.mark.parametrize('temperature, top_k, top_p, support', [
    (0.5, 0, 1.0, [3, 4, 5, 6]), (1.0, 0, 1.0, [3, 4, 5, 6]), (2.0, 0, 1.0, [3, 4, 5, 6]),
    (1.0, 2, 1.0, [3, 6]), (1.0, 0, 0.7, [3, 6])])
def test_sampled_frequencies_match_softmax(temperature, top_k, top_p, support):
  """4096 draws (256 rows x 16 steps) against softmax(logits / T) over the kept tokens."""
  model, _ = _handout_unigram()
  o = generate.Options('sample', max_new_tokens=16, temperature=temperature, top_k=top_k,
                       top_p=top_p, eos_id=None)
  tokens, _, _ = run(model, [[3]] * 256, o, rng=jax.random.key(7))
  counts = np.bincount(tokens.ravel(), minlength=8)
  assert counts.sum() == 4096 and counts[[t for t in range(8) if t not in support]].sum() == 0
  z = np.array([2.5, 1.0, 0.5, 1.5])[np.array(support) - 3] / temperature
  expected = 4096 * np.exp(z) / np.exp(z).sum()
  chi2 = float(((counts[support] - expected) ** 2 / expected).sum())
  assert chi2 < 21.1, (counts[support], expected)  # 99.99% quantile for 3 degrees of freedom
  # Steps and rows draw independently: the first step alone also fits (a looser bound).
  first = np.bincount(tokens[:, 0], minlength=8)[support]
  assert float(((first - expected / 16) ** 2 / (expected / 16)).sum()) < 21.1


def _trap():
  """From s (2): a (3) 0.5, b (4) 0.4, c (5) 0.1.  a -> c / d / e (5, 6, 7) about 1/3 each;
  b -> EOS 0.9; c, d, e -> EOS.  Greedy takes a and ends with p ~ 0.17; [b, EOS] has 0.36."""
  probs = np.full((8, 8), 1e-4)
  probs[2, 3:6] = [0.5, 0.4, 0.1]
  probs[3, 5:8] = [0.33, 0.34, 0.33]
  probs[4, [EOS, 5]] = [0.9, 0.1]
  probs[5:8, EOS] = 1.0
  return bigram(probs)


def _best_by_enumeration(probs, start, length, alpha):
  """The highest-scoring sequence of up to `length` new tokens (ending in EOS, or full).

  Depth-first over every sequence; a branch is cut once even its most favourable score
  (log p / length**alpha, alpha >= 0) cannot beat the best found.
  """
  logp_VxV = np.log(probs)
  best = [None, -np.inf]

  def visit(seq, logp):
    if seq and (seq[-1] == EOS or len(seq) == length):
      if logp / len(seq) ** alpha > best[1]:
        best[:] = [list(seq), logp / len(seq) ** alpha]
      return
    if logp / length ** alpha <= best[1]:
      return
    for tok in np.argsort(-logp_VxV[seq[-1] if seq else start]):
      visit(seq + [int(tok)], logp + logp_VxV[seq[-1] if seq else start, tok])

  visit([], 0.0)
  return tuple(best)


@pytest.mark.parametrize('alpha', [0.0, 1.0])
def test_beam_search_beats_greedy_on_a_trap(alpha):
  model, probs = _trap()
  greedy, _, _ = run(model, [[2]], generate.Options(max_new_tokens=3))
  assert greedy[0].tolist() == [3, 6, EOS]
  o = generate.Options('beam', num_beams=2, max_new_tokens=3, length_penalty=alpha,
                       early_stopping='never')
  tokens, lengths, out = run(model, [[2]], o)
  best, best_score = _best_by_enumeration(probs, 2, 3, alpha)
  assert best == [4, EOS]
  assert tokens[0].tolist() == [4, EOS, PAD] and lengths.tolist() == [2]
  assert float(out.beam_scores_BxW[0, 0]) == pytest.approx(best_score, rel=1e-5)
  greedy_logp = np.log(probs[2, 3] * probs[3, 6] * probs[6, EOS])
  assert best_score > greedy_logp / 3 ** alpha
  # The second hypothesis is greedy's: the pool holds the W best finished sequences.
  assert np.asarray(out.beam_tokens_BxWxG)[0, 1].tolist() == [3, 6, EOS]


def test_greedy_breaks_ties_towards_the_lower_id():
  probs = np.full((8, 8), 0.01)
  probs[2, [6, 4, 5]] = 0.3  # 4, 5 and 6 tie; numpy, torch and HF take the first
  model, _ = bigram(probs)
  assert run(model, [[2]], generate.Options(max_new_tokens=1))[0].tolist() == [[4]]


def test_one_beam_equals_greedy_on_a_trap():
  model, _ = _trap()
  o = generate.Options('beam', num_beams=1, max_new_tokens=3)
  assert run(model, [[2]], o)[0].tolist() == [[3, 6, EOS]]


def _stopping_table(case):
  """Tables where early_stopping changes the answer (W = 2, alpha = 1; see the test)."""
  probs = np.full((12, 12), 1e-4)
  probs[9:12, EOS] = 1.0  # filler tokens end at once
  if case == 'A':   # s: EOS .35, x .30, y .25; x: EOS .55 | x2; y -> y2 -> EOS
    probs[2, [EOS, 3, 4, 9, 10, 11]] = [0.35, 0.30, 0.25, 0.033, 0.033, 0.034]
    probs[3, [EOS, 8]] = [0.55, 0.45]
    probs[4, 5] = probs[5, EOS] = probs[8, EOS] = 1.0
  else:             # s: EOS .4, x .35, y .15; x: EOS .9 | x2; y -> y2 -> y3 -> y4 -> EOS
    probs[2, [EOS, 3, 4, 9, 10, 11]] = [0.4, 0.35, 0.15, 0.033, 0.033, 0.034]
    probs[3, [EOS, 8]] = [0.9, 0.1]
    probs[4, 5] = probs[5, 6] = probs[6, 7] = probs[7, EOS] = probs[8, EOS] = 1.0
  return bigram(probs)


@pytest.mark.parametrize('case, early_stopping, expected', [
    # A: after step 2 the pool is full ([x, EOS] -0.90, [EOS] -1.05); the live [y, y2]
    # (log .25 = -1.39) could still win, and does: [y, y2, EOS] scores -1.39 / 3 = -0.46.
    ('A', True, [3, EOS]), ('A', False, [4, 5, EOS]), ('A', 'never', [4, 5, EOS]),
    # B: pool [x, EOS] -0.58, [EOS] -0.92; HF's heuristic scores the live [y, y2] at its
    # length (log .15 / 2 = -0.95) and stops; 'never' scores it at length 6 (-0.32) and goes
    # on to [y, y2, y3, y4, EOS] = log .15 / 5 = -0.38, the best sequence.
    ('B', True, [3, EOS]), ('B', False, [3, EOS]), ('B', 'never', [4, 5, 6, 7, EOS])])
def test_early_stopping_modes(case, early_stopping, expected):
  model, probs = _stopping_table(case)
  o = generate.Options('beam', num_beams=2, max_new_tokens=6, early_stopping=early_stopping)
  tokens, lengths, _ = run(model, [[2]], o)
  assert tokens[0, :lengths[0]].tolist() == expected
  if early_stopping == 'never':  # exact: the best of all sequences, by enumeration
    assert _best_by_enumeration(probs, 2, 6, 1.0)[0] == expected


def _cycle(branch: float = 0.0):
  """2 -> 4 -> EOS (or 5 with weight `branch`); 5 -> 6 -> 7 -> 5 -> ... (never ends)."""
  probs = np.full((8, 8), 1e-3)
  for a, b in ((2, 4), (4, EOS), (5, 6), (6, 7), (7, 5), (3, 5)):
    probs[a, b] = 1.0
  probs[4, 5] = branch
  return bigram(probs)


@pytest.mark.parametrize('strategy', ['greedy', 'sample', 'beam'])
def test_eos_ends_a_row_and_pads_the_rest(strategy):
  model, _ = _cycle()
  o = generate.Options(strategy, max_new_tokens=6, pad_id=3, num_beams=2, temperature=0.1)
  tokens, lengths, _ = run(model, [[2], [5, 6]], o)
  assert tokens.tolist() == [[4, EOS, 3, 3, 3, 3], [7, 5, 6, 7, 5, 6]]
  assert lengths.tolist() == [2, 6]


def test_min_new_tokens_delays_eos():
  model, _ = _cycle(branch=0.5)
  tokens, lengths, _ = run(model, [[2]], generate.Options(max_new_tokens=5))
  assert tokens.tolist() == [[4, EOS, PAD, PAD, PAD]] and lengths.tolist() == [2]
  tokens, lengths, _ = run(model, [[2]], generate.Options(max_new_tokens=5, min_new_tokens=2))
  assert tokens.tolist() == [[4, 5, 6, 7, 5]] and lengths.tolist() == [5]


# ---------------------------------------------------------------------------
# Tiny random GPT and T5: the cached loop against full forward passes.

@pytest.fixture(scope='module')
def gpt():
  return init_params(tiny_config('gpt', max_len=64))


@pytest.fixture(scope='module')
def t5():
  return init_params(tiny_config('t5'))


GPT_PROMPTS = [[11, 12, 13, 14, 15, 16], [40, 41, 42]]
T5_PROMPTS = [[21, 22, 23, 24, 25, 26, 27, EOS], [50, 51, 52, EOS]]


def _uncached_greedy(model, params, prompts, new_tokens):
  """Greedy decoding that re-runs the model on each whole sequence for every new token.

  Each row is decoded alone, in a buffer of one fixed length (one compilation) where the
  unfilled tail is padding (segment id 0): masks come from segment ids, so it is unseen.
  """
  forward = jax.jit(model.apply)
  size = max(map(len, prompts)) + new_tokens
  out = []
  for prompt in prompts:
    seq = []
    for _ in range(new_tokens):
      if model.config.family == 'gpt':
        tokens, n = np.zeros((1, size), np.int32), len(prompt) + len(seq)
        tokens[0, :n] = prompt + seq
        segs = (np.arange(size) < n).astype(np.int32)[None]
        logits = forward({'params': params}, tokens, segs, np.arange(size)[None] * segs)[0, n - 1]
      else:
        enc, dec = np.zeros((1, size), np.int32), np.zeros((1, new_tokens), np.int32)
        enc[0, :len(prompt)], dec[0, 1:len(seq) + 1] = prompt, seq
        enc_segs = (np.arange(size) < len(prompt)).astype(np.int32)[None]
        dec_segs = (np.arange(new_tokens) <= len(seq)).astype(np.int32)[None]
        logits = forward({'params': params}, enc, enc_segs, np.arange(size)[None] * enc_segs,
                         dec, dec_segs, np.arange(new_tokens)[None] * dec_segs)[0, len(seq)]
      seq.append(int(np.argmax(logits)))
    out.append(seq)
  return out


@pytest.mark.parametrize('family', ['gpt', 't5'])
def test_cached_equals_uncached_greedy(family, gpt, t5):
  (model, params), prompts = (gpt, GPT_PROMPTS) if family == 'gpt' else (t5, T5_PROMPTS)
  o = generate.Options(max_new_tokens=8, eos_id=None)
  tokens, lengths, _ = run(model, prompts, o, params)  # one right-padded batch
  assert tokens.tolist() == _uncached_greedy(model, params, prompts, 8)
  assert lengths.tolist() == [8, 8]


@pytest.mark.parametrize('family', ['gpt', 't5'])
def test_top_k_one_and_cold_temperature_equal_greedy(family, gpt, t5):
  (model, params), prompts = (gpt, GPT_PROMPTS) if family == 'gpt' else (t5, T5_PROMPTS)
  greedy, _, _ = run(model, prompts, generate.Options(max_new_tokens=8, eos_id=None), params)
  top1, _, _ = run(model, prompts, generate.Options('sample', max_new_tokens=8, top_k=1,
                                                    eos_id=None), params, jax.random.key(3))
  cold, _, _ = run(model, prompts, generate.Options('sample', max_new_tokens=8, temperature=1e-6,
                                                    eos_id=None), params, jax.random.key(4))
  np.testing.assert_array_equal(top1, greedy)
  np.testing.assert_array_equal(cold, greedy)
  if family == 'gpt':  # the comparison can fail: real sampling differs
    hot, _, _ = run(model, prompts, generate.Options('sample', max_new_tokens=8, temperature=2.0,
                                                     eos_id=None), params, jax.random.key(4))
    assert (hot != greedy).any()


@pytest.mark.parametrize('family', ['gpt', 't5'])
def test_beams_batched_equal_beams_alone_and_one_beam_is_greedy(family, gpt, t5):
  (model, params), prompts = (gpt, GPT_PROMPTS) if family == 'gpt' else (t5, T5_PROMPTS)
  o = generate.Options('beam', num_beams=3, max_new_tokens=8, eos_id=None,
                       no_repeat_ngram_size=2)
  batched, _, out = run(model, prompts, o, params)
  for r, prompt in enumerate(prompts):
    # The prompt "alone": both rows hold it (same shapes, so no new compilation).
    alone, _, out_alone = run(model, [prompt, prompt], o, params,
                              pad_to=max(map(len, prompts)))
    np.testing.assert_array_equal(batched[r], alone[0])
    np.testing.assert_allclose(out.beam_scores_BxW[r], out_alone.beam_scores_BxW[0], rtol=1e-5)
  one_beam, _, _ = run(model, prompts, generate.Options('beam', num_beams=1, max_new_tokens=8,
                                                        eos_id=None), params)
  greedy, _, _ = run(model, prompts, generate.Options(max_new_tokens=8, eos_id=None), params)
  np.testing.assert_array_equal(one_beam, greedy)


def test_prompt_checks(gpt):
  model, params = gpt
  with pytest.raises(errors.UserError, match='exceeds the model\'s 64 positions'):
    run(model, [list(range(7, 67))], generate.Options(max_new_tokens=8), params)
  with pytest.raises(errors.UserError, match='empty prompt'):
    generate.generate(model, params, np.zeros((1, 3), np.int32), [0], generate.Options())
