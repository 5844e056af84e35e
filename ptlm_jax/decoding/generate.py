r"""Text generation: greedy, sampling (temperature, top-k, top-p) and beam search, KV-cached.

One jit-compiled loop per (model, options, input shape): the prompt fills the model's KV
cache once (T5: the encoder runs once and the decoder caches its cross-attention keys and
values), then `lax.while_loop` feeds one token per row per step, and stops as soon as
every row has finished; no token goes back to the host in between.

  options = generate.Options(strategy='sample', temperature=0.7, top_p=0.9, max_new_tokens=64)
  out = generate.generate(model, params, prompt_BxL, lengths_B, options, rng=jax.random.key(0))
  out.tokens_BxG    # the new tokens of each row; pad after the row's EOS

GPT continues the prompt; T5 reads it with the encoder and decodes from
`decoder_start_id`.  Prompts are right-padded to one length and `lengths_B` says how long
each is: every row continues at its own position, so a batch gives exactly what each
prompt gives alone.  Text in, text out (tokenizers, checkpoints) lives in `inference.py`,
the command line in `ptlm_jax/main/generate.py`:

  python -m ptlm_jax.main.generate --workdir=runs/gpt --prompt="Once upon a time" --strategy=beam
  python -m ptlm_jax.main.generate --workdir=runs/bert --fill_mask="The cat sat on the [MASK]."

Semantics follow HF transformers' `generate` (4.57), so the two can be compared:
- logits processors, in HF's order: repetition penalty (CTRL: the logit of a token already
  in the prompt or output is divided by the penalty when positive, multiplied when
  negative), no-repeat n-gram (bans a token that would repeat an n-gram of prompt +
  output), min_new_tokens (EOS banned before); sampling then applies temperature, top-k
  and top-p (nucleus: the smallest set of most likely tokens whose mass reaches p, at
  least one token);
- beam search scores log-probabilities: each step keeps the 2W best continuations of the
  W live beams; one that ends (EOS, or the last step) joins the finished pool if it ranks
  among the first W; the pool keeps the W best by sum(log p) / penalty(len), len = new
  tokens including the EOS, penalty 'hf' = len**alpha or 't5x' = ((5 + len) / 6)**alpha.
  early_stopping=True closes a row once W hypotheses have finished; False (HF's
  heuristic) once the best live beam, scored at its current length, cannot beat the
  worst finished one; 'never' scores it at the most favourable length it could reach,
  so the search stops only when no live beam can improve the pool.

Legend: B batch (prompts), L prompt length (padded), M history (prompt + new tokens),
G max new tokens, W beams, C candidates (2W), V vocab, S encoder length.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ptlm_jax import errors, families, models

STRATEGIES = ('greedy', 'sample', 'beam')
PENALTY_STYLES = ('hf', 't5x')
# Score of an empty beam slot: finite (as in HF), so sums and divisions never give NaN.
_NEG = -1e9


@dataclasses.dataclass(frozen=True)
class Options:
  """How to decode; hashable, so each distinct Options compiles its own loop."""
  strategy: str = 'greedy'           # greedy | sample | beam
  max_new_tokens: int = 32           # G: new tokens per row, EOS included
  min_new_tokens: int = 0            # EOS is banned before this many new tokens
  temperature: float = 1.0           # sample: logits / temperature
  top_k: int = 0                     # sample: keep the k most likely tokens (0 = off)
  top_p: float = 1.0                 # sample: keep the smallest set with mass >= p (1 = off)
  num_beams: int = 4                 # beam: W live beams and W finished hypotheses
  length_penalty: float = 1.0        # beam: alpha (0 = plain log-likelihood)
  length_penalty_style: str = 'hf'   # beam: hf (len**alpha) | t5x (((5 + len) / 6)**alpha)
  early_stopping: bool | str = False  # beam: True | False | 'never' (module docstring)
  repetition_penalty: float = 1.0    # > 1 discourages tokens already present (1 = off)
  no_repeat_ngram_size: int = 0      # ban repeating any n-gram of this size (0 = off)
  token_limit: int = 0               # ids >= this are never produced: embedding rows past
                                     # the tokenizer's vocabulary (0 = no limit)
  eos_id: int | None = 1             # ends a row (None: rows run to max_new_tokens)
  pad_id: int = 0                    # fills a row after its EOS
  decoder_start_id: int = 0          # T5: the decoder's first input

  def validate(self, vocab_size: int | None = None) -> None:
    """UserError naming the first bad field (before anything compiles)."""
    def check(ok, field, allowed):
      if not ok:
        raise errors.UserError(f'{field}={getattr(self, field)!r} is invalid: expected {allowed}')
    is_int = lambda x: isinstance(x, (int, np.integer)) and not isinstance(x, bool)
    check(self.strategy in STRATEGIES, 'strategy', f'one of {STRATEGIES}')
    check(is_int(self.max_new_tokens) and self.max_new_tokens >= 1, 'max_new_tokens',
          'an integer >= 1')
    check(is_int(self.min_new_tokens) and 0 <= self.min_new_tokens <= self.max_new_tokens,
          'min_new_tokens', f'an integer in [0, max_new_tokens={self.max_new_tokens}]')
    check(self.temperature > 0 and math.isfinite(self.temperature), 'temperature',
          'a number > 0 (use --strategy=greedy for the argmax)')
    check(is_int(self.top_k) and self.top_k >= 0, 'top_k', 'an integer >= 0 (0 = off)')
    check(0 < self.top_p <= 1, 'top_p', 'a number in (0, 1] (1 = off)')
    check(is_int(self.num_beams) and self.num_beams >= 1, 'num_beams', 'an integer >= 1')
    check(math.isfinite(self.length_penalty), 'length_penalty', 'a finite number')
    check(self.length_penalty_style in PENALTY_STYLES, 'length_penalty_style',
          f'one of {PENALTY_STYLES}')
    check(self.early_stopping is True or self.early_stopping is False
          or self.early_stopping == 'never', 'early_stopping', "True, False or 'never'")
    check(self.repetition_penalty > 0, 'repetition_penalty', 'a number > 0 (1 = off)')
    check(is_int(self.no_repeat_ngram_size) and self.no_repeat_ngram_size >= 0,
          'no_repeat_ngram_size', 'an integer >= 0 (0 = off)')
    check(is_int(self.token_limit) and self.token_limit >= 0, 'token_limit',
          'an integer >= 0 (0 = no limit)')
    if vocab_size is not None:
      for field in ('eos_id', 'pad_id', 'decoder_start_id'):
        value = getattr(self, field)
        check(value is None and field == 'eos_id' or is_int(value) and 0 <= value < vocab_size,
              field, f'a token id in [0, {vocab_size})')
      usable = min(self.token_limit or vocab_size, vocab_size)
      check(self.token_limit == 0 or usable > max(self.eos_id or 0, 1), 'token_limit',
            'above the EOS id')
      if self.strategy == 'beam':
        check(2 * self.num_beams <= usable, 'num_beams', f'<= usable vocab / 2 = {usable // 2}')


class Output(NamedTuple):
  tokens_BxG: jax.Array        # new tokens of the best sequence; pad after EOS
  lengths_B: jax.Array         # new tokens per row, EOS included
  beam_tokens_BxWxG: Any = None  # beam: every finished hypothesis, best first
  beam_scores_BxW: Any = None    # beam: their length-penalised scores


# ---------------------------------------------------------------------------
# Logits processing (one step, every row at once).

def _seen_BxV(hist_BxM, cur_len_B, vocab: int):
  """True where a token occurs in the first cur_len entries of the row's history."""
  b, m = hist_BxM.shape
  ids_BxM = jnp.where(jnp.arange(m) < cur_len_B[:, None], hist_BxM, vocab)  # vocab: dropped
  return jnp.zeros((b, vocab), bool).at[jnp.arange(b)[:, None], ids_BxM].set(True, mode='drop')


def _ngram_bans_BxV(hist_BxM, cur_len_B, n: int, vocab: int):
  """Tokens that would complete an n-gram already present in the row's history (HF)."""
  b, m = hist_BxM.shape
  starts = m - n + 1
  if starts <= 0:
    return jnp.zeros((b, vocab), bool)
  # The n-1 tokens the next one follows, and every earlier n-gram whose head equals them.
  tail_idx_BxN = jnp.clip(cur_len_B[:, None] - (n - 1) + jnp.arange(n - 1), 0, m - 1)
  tail_BxN = jnp.take_along_axis(hist_BxM, tail_idx_BxN, axis=1)
  match_BxJ = jnp.arange(starts)[None, :] + n - 1 < cur_len_B[:, None]
  for k in range(n - 1):
    match_BxJ &= hist_BxM[:, k:k + starts] == tail_BxN[:, k:k + 1]
  banned_BxJ = jnp.where(match_BxJ, hist_BxM[:, n - 1:], vocab)
  return jnp.zeros((b, vocab), bool).at[jnp.arange(b)[:, None], banned_BxJ].set(True, mode='drop')


def process_logits(logits_BxV, hist_BxM, cur_len_B, step, o: Options):
  """Repetition penalty, no-repeat n-gram and min_new_tokens (HF's processors, its order),
  then the token limit.

  hist_BxM holds each row's prompt (T5: the decoder start) then its new tokens;
  cur_len_B entries of it are filled; `step` new tokens exist so far.
  """
  vocab = logits_BxV.shape[-1]
  if o.repetition_penalty != 1.0:
    penalised_BxV = jnp.where(logits_BxV < 0, logits_BxV * o.repetition_penalty,
                              logits_BxV / o.repetition_penalty)
    logits_BxV = jnp.where(_seen_BxV(hist_BxM, cur_len_B, vocab), penalised_BxV, logits_BxV)
  if o.no_repeat_ngram_size:
    bans_BxV = _ngram_bans_BxV(hist_BxM, cur_len_B, o.no_repeat_ngram_size, vocab)
    logits_BxV = jnp.where(bans_BxV, -jnp.inf, logits_BxV)
  if o.min_new_tokens and o.eos_id is not None:
    eos_B = jnp.where(step < o.min_new_tokens, -jnp.inf, logits_BxV[:, o.eos_id])
    logits_BxV = logits_BxV.at[:, o.eos_id].set(eos_B)
  if 0 < o.token_limit < vocab:
    logits_BxV = logits_BxV.at[:, o.token_limit:].set(-jnp.inf)
  return logits_BxV


def warp_logits(logits_BxV, o: Options):
  """Temperature, then top-k, then top-p (HF's warpers); removed tokens get -inf."""
  if o.temperature != 1.0:
    logits_BxV = logits_BxV / o.temperature
  vocab = logits_BxV.shape[-1]
  if 0 < o.top_k < vocab:
    kth_Bx1 = jax.lax.top_k(logits_BxV, o.top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)  # ties stay, as in HF
  if o.top_p < 1.0:
    sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    # Keep a token while the mass of the more likely ones is still below p.
    before_BxV = jnp.concatenate(
        [jnp.zeros_like(probs_BxV[:, :1]), jnp.cumsum(probs_BxV, axis=-1)[:, :-1]], axis=-1)
    keep_Bx1 = jnp.maximum(jnp.sum(before_BxV < o.top_p, axis=-1, keepdims=True), 1)
    cutoff_Bx1 = jnp.take_along_axis(sorted_BxV, keep_Bx1 - 1, axis=-1)
    logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
  return logits_BxV


# ---------------------------------------------------------------------------
# The two model families behind one interface.

class _Start(NamedTuple):
  logits_BxV: jax.Array   # next-token logits after the prompt (T5: after the start id)
  cache: Any              # the KV cache with the prompt in it
  hist_BxM: jax.Array     # prompt (T5: the start id), then pad up to M
  len0_B: jax.Array       # filled history entries = position of new token 0


def _gpt_step(model, params, cache, tokens_B, positions_B):
  ones_Bx1 = jnp.ones((tokens_B.shape[0], 1), jnp.int32)
  logits_Bx1xV, variables = model.apply(
      {'params': params, 'cache': cache}, tokens_B[:, None], ones_Bx1, positions_B[:, None],
      decode=True, mutable=['cache'])
  return logits_Bx1xV[:, 0], variables['cache']


def _gpt_loop_step(model, params) -> Callable:
  """`_gpt_step` for the decode loop, with the tied LM head transposed once, before it.

  The step's logits are h [B, 1, D] against the whole [V, D] embedding table; as a
  [D, V] operand, XLA:CPU streams it row-major instead of transposing it every step
  (~8 % of a small model's decode step).  Same products, accumulated in float32.
  """
  if not hasattr(model, 'lm_head_inputs'):  # a stand-in model (tests): its own logits
    return functools.partial(_gpt_step, model)
  table_VxD = model.apply({'params': params}, method=lambda m: m.lm_head_table())
  head_DxV = jnp.transpose(table_VxD)

  def step(params, cache, tokens_B, positions_B):
    ones_Bx1 = jnp.ones((tokens_B.shape[0], 1), jnp.int32)
    h_Bx1xD, variables = model.apply(
        {'params': params, 'cache': cache}, tokens_B[:, None], ones_Bx1, positions_B[:, None],
        decode=True, method='encode', mutable=['cache'])
    logits_Bx1xV = jnp.einsum('btd,dv->btv', h_Bx1xD, head_DxV.astype(h_Bx1xD.dtype),
                              preferred_element_type=jnp.float32)
    return logits_Bx1xV[:, 0], variables['cache']
  return step


def _gpt_start(model, params, prompt_BxL, lengths_B, o: Options) -> _Start:
  b, l = prompt_BxL.shape
  slots_BxL = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
  # Every prompt token but the row's last one fills the cache; the last is the first
  # step's input.  So the prefill's logits are never used and XLA drops its vocab matmul.
  segs_BxL = (slots_BxL < lengths_B[:, None] - 1).astype(jnp.int32)
  cache = models.init_cache(model, b, l + o.max_new_tokens)
  _, variables = model.apply({'params': params, 'cache': cache}, prompt_BxL * segs_BxL, segs_BxL,
                             slots_BxL * segs_BxL, decode=True, mutable=['cache'])
  last_B = jnp.take_along_axis(prompt_BxL, lengths_B[:, None] - 1, axis=1)[:, 0]
  logits_BxV, cache = _gpt_step(model, params, variables['cache'], last_B, lengths_B - 1)
  hist_BxL = jnp.where(slots_BxL < lengths_B[:, None], prompt_BxL, o.pad_id)
  hist_BxM = jnp.pad(hist_BxL, ((0, 0), (0, o.max_new_tokens)), constant_values=o.pad_id)
  return _Start(logits_BxV, cache, hist_BxM, lengths_B)


def _t5_step(model, params, cache, tokens_B, positions_B, encoded=None, encoder_segs=None):
  ones_Bx1 = jnp.ones((tokens_B.shape[0], 1), jnp.int32)
  logits_Bx1xV, variables = model.apply(
      {'params': params, 'cache': cache}, encoded, encoder_segs, tokens_B[:, None], ones_Bx1,
      positions_B[:, None], decode=True, method='decode', mutable=['cache'])
  return logits_Bx1xV[:, 0], variables['cache']


def _t5_start(model, params, prompt_BxS, lengths_B, o: Options) -> _Start:
  b, s = prompt_BxS.shape
  segs_BxS = (jnp.arange(s) < lengths_B[:, None]).astype(jnp.int32)
  positions_BxS = jnp.arange(s, dtype=jnp.int32) * segs_BxS
  encoded_BxSxD = model.apply({'params': params}, prompt_BxS * segs_BxS, segs_BxS, positions_BxS,
                              method='encode')
  # Decoder slots: the start id, then new tokens 0 .. G-2 (the last one is never fed).
  cache = models.init_cache(model, b, o.max_new_tokens, encoder_length=s)
  start_B = jnp.full((b,), o.decoder_start_id, jnp.int32)
  logits_BxV, cache = _t5_step(model, params, cache, start_B, jnp.zeros_like(start_B),
                               encoded_BxSxD, segs_BxS)
  hist_BxM = jnp.full((b, 1 + o.max_new_tokens), o.pad_id, jnp.int32).at[:, 0].set(start_B)
  return _Start(logits_BxV, cache, hist_BxM, jnp.ones((b,), jnp.int32))


def _family_fns(model) -> tuple[Callable, Callable]:
  """(start_fn, loop_step_fn): loop_step_fn(model, params) is the loop's decode step."""
  family = model.config.family
  if model.config.head != 'lm':
    raise errors.UserError(f'model.head={model.config.head!r} cannot generate text: expected '
                               "'lm' (a task head predicts labels, not tokens)")
  if families.get(family).decoder_only:
    return _gpt_start, _gpt_loop_step
  if families.get(family).encoder_decoder:
    return _t5_start, lambda model, params: functools.partial(_t5_step, model)
  raise errors.UserError(f'model.family={family!r} cannot generate text: expected gpt or t5 '
                             '(BERT fills masks: fill_mask)')


# ---------------------------------------------------------------------------
# Greedy and sampling.

def _argmax(logits_BxV):
  """The first index of each row's maximum: jnp.argmax's answer, in two plain reductions
  (XLA's CPU argmax, a variadic reduce, takes several times longer)."""
  vocab = logits_BxV.shape[-1]
  max_Bx1 = jnp.max(logits_BxV, axis=-1, keepdims=True)
  return jnp.min(jnp.where(logits_BxV == max_Bx1, jnp.arange(vocab), vocab), axis=-1)


def _pick_loop(model, o: Options, params, prompt_BxL, lengths_B, rng) -> Output:
  start_fn, loop_step_fn = _family_fns(model)
  start = start_fn(model, params, prompt_BxL, lengths_B, o)
  step_fn = loop_step_fn(model, params)
  len0_B, g = start.len0_B, o.max_new_tokens
  rows_B = jnp.arange(prompt_BxL.shape[0])

  def pick(t, logits_BxV, hist_BxM, done_B, count_B):
    logits_BxV = process_logits(logits_BxV, hist_BxM, len0_B + t, t, o)
    if o.strategy == 'sample':
      key = jax.random.fold_in(rng, t)
      tok_B = jax.random.categorical(key, warp_logits(logits_BxV, o), axis=-1)
    else:
      tok_B = _argmax(logits_BxV)
    tok_B = jnp.where(done_B, o.pad_id, tok_B.astype(jnp.int32))
    count_B = count_B + (~done_B).astype(jnp.int32)
    if o.eos_id is not None:
      done_B = done_B | (tok_B == o.eos_id)
    return tok_B, hist_BxM.at[rows_B, len0_B + t].set(tok_B), done_B, count_B

  zeros_B = jnp.zeros_like(len0_B)
  tok_B, hist_BxM, done_B, count_B = pick(0, start.logits_BxV, start.hist_BxM,
                                          zeros_B.astype(bool), zeros_B)

  def cond(carry):
    t, _, _, _, done_B, _ = carry
    return (t < g) & ~jnp.all(done_B)

  def body(carry):
    t, cache, tok_B, hist_BxM, done_B, count_B = carry
    logits_BxV, cache = step_fn(params, cache, tok_B, len0_B + t - 1)
    tok_B, hist_BxM, done_B, count_B = pick(t, logits_BxV, hist_BxM, done_B, count_B)
    return t + 1, cache, tok_B, hist_BxM, done_B, count_B

  carry = (jnp.int32(1), start.cache, tok_B, hist_BxM, done_B, count_B)
  _, _, _, hist_BxM, _, count_B = jax.lax.while_loop(cond, body, carry)
  cols_BxG = len0_B[:, None] + jnp.arange(g)
  return Output(jnp.take_along_axis(hist_BxM, cols_BxG, axis=1), count_B)


# ---------------------------------------------------------------------------
# Beam search.

def _penalty(length, o: Options):
  length = jnp.asarray(length, jnp.float32)
  if o.length_penalty_style == 't5x':
    return ((5.0 + length) / 6.0) ** o.length_penalty
  return length ** o.length_penalty


class _Beams(NamedTuple):
  alive_hist_BxWxM: jax.Array
  alive_logp_BxW: jax.Array      # sum of log-probabilities, best first
  alive_tok_BxW: jax.Array       # each live beam's newest token (the next step's input)
  alive_src_BxW: jax.Array       # the beam (of the previous step) it extends
  fin_hist_BxWxM: jax.Array
  fin_score_BxW: jax.Array       # length-penalised scores, best first; _NEG = empty slot
  fin_flag_BxW: jax.Array        # slot holds a finished hypothesis
  done_B: jax.Array              # row closed: its finished pool no longer changes


def _take_beams(x_BxCx, idx_BxW):
  idx = idx_BxW.reshape(idx_BxW.shape + (1,) * (x_BxCx.ndim - 2))
  return jnp.take_along_axis(x_BxCx, idx, axis=1)


def _beam_extend(o: Options, t, logits_BWxV, s: _Beams, len0_B) -> _Beams:
  """Extends every live beam by one token (the (t+1)-th new one) and updates the pools."""
  b, w, m = s.alive_hist_BxWxM.shape
  vocab, g = logits_BWxV.shape[-1], o.max_new_tokens
  logp_BWxV = jax.nn.log_softmax(logits_BWxV, axis=-1)
  logp_BWxV = process_logits(logp_BWxV, s.alive_hist_BxWxM.reshape(b * w, m),
                             jnp.repeat(len0_B, w) + t, t, o)
  cand_BxWV = (s.alive_logp_BxW[:, :, None] + logp_BWxV.reshape(b, w, vocab)).reshape(b, w * vocab)
  top_logp_BxC, top_idx_BxC = jax.lax.top_k(cand_BxWV, 2 * w)
  src_BxC, tok_BxC = top_idx_BxC // vocab, (top_idx_BxC % vocab).astype(jnp.int32)
  hist_BxCxM = _take_beams(s.alive_hist_BxWxM, src_BxC)
  at_col_Bx1x1 = (len0_B + t)[:, None, None]
  hist_BxCxM = jnp.where(jnp.arange(m) == at_col_Bx1x1, tok_BxC[..., None], hist_BxCxM)
  ends_BxC = jnp.broadcast_to(t + 1 >= g, tok_BxC.shape)
  if o.eos_id is not None:
    ends_BxC = ends_BxC | (tok_BxC == o.eos_id)

  # Finished pool: continuations that end and rank among the first W join it (HF).
  joins_BxC = ends_BxC & (jnp.arange(2 * w) < w) & ~s.done_B[:, None]
  new_score_BxC = jnp.where(joins_BxC, top_logp_BxC / _penalty(t + 1, o), _NEG)
  fin_score_BxW, sel_BxW = jax.lax.top_k(
      jnp.concatenate([s.fin_score_BxW, new_score_BxC], axis=1), w)
  fin_hist_BxWxM = _take_beams(jnp.concatenate([s.fin_hist_BxWxM, hist_BxCxM], axis=1), sel_BxW)
  fin_flag_BxW = _take_beams(jnp.concatenate([s.fin_flag_BxW, joins_BxC], axis=1), sel_BxW)

  # Live beams: the best W continuations that did not end.
  alive_logp_BxW, sel_BxW = jax.lax.top_k(top_logp_BxC + ends_BxC * _NEG, w)
  alive = (_take_beams(hist_BxCxM, sel_BxW), alive_logp_BxW, _take_beams(tok_BxC, sel_BxW),
           _take_beams(src_BxC, sel_BxW))

  # Close a row once its pool is full and (early_stopping=True) or no live beam can win.
  full_B = jnp.all(fin_flag_BxW, axis=1)
  best_len = g if (o.early_stopping == 'never' and o.length_penalty > 0) else t + 1
  best_possible_B = alive_logp_BxW[:, 0] / _penalty(best_len, o)
  improvable_B = ~full_B | (best_possible_B > jnp.min(fin_score_BxW, axis=1))
  done_B = s.done_B | ~improvable_B
  if o.early_stopping is True:
    done_B = done_B | full_B
  return _Beams(*alive, fin_hist_BxWxM, fin_score_BxW, fin_flag_BxW, done_B)


def _beam_loop(model, o: Options, params, prompt_BxL, lengths_B, rng) -> Output:
  del rng  # deterministic
  start_fn, loop_step_fn = _family_fns(model)
  start = start_fn(model, params, prompt_BxL, lengths_B, o)
  step_fn = loop_step_fn(model, params)
  b, m = start.hist_BxM.shape
  w, g = o.num_beams, o.max_new_tokens
  len0_B, len0_BW = start.len0_B, jnp.repeat(start.len0_B, w)
  # Every beam of a row starts as the prompt; only the first is live, so step 0 does not
  # pick the same token W times.
  rep_BW = jnp.repeat(jnp.arange(b), w)
  hist_BxWxM = start.hist_BxM[rep_BW].reshape(b, w, m)
  zeros_BxW = jnp.zeros((b, w), jnp.int32)
  s = _Beams(hist_BxWxM, jnp.where(jnp.arange(w) == 0, 0.0, _NEG) * jnp.ones((b, 1)),
             zeros_BxW, zeros_BxW, jnp.full_like(hist_BxWxM, o.pad_id),
             jnp.full((b, w), _NEG), zeros_BxW.astype(bool), jnp.zeros((b,), bool))
  s = _beam_extend(o, 0, start.logits_BxV[rep_BW], s, len0_B)
  cache = models.gather_cache(start.cache, rep_BW)  # the W copies of a row are identical
  # Beam j of row r extends row r's beam src: its cache is row r * W + src.
  cache_rows = lambda s: (jnp.arange(b)[:, None] * w + s.alive_src_BxW).reshape(-1)

  def cond(carry):
    t, _, s = carry
    return (t < g) & ~jnp.all(s.done_B)

  def body(carry):
    t, cache, s = carry
    logits_BWxV, cache = step_fn(params, cache, s.alive_tok_BxW.reshape(-1), len0_BW + t - 1)
    s = _beam_extend(o, t, logits_BWxV, s, len0_B)
    return t + 1, models.gather_cache(cache, cache_rows(s)), s

  _, _, s = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, s))
  cols_Bx1xG = len0_B[:, None, None] + jnp.arange(g)
  tokens_BxWxG = jnp.take_along_axis(s.fin_hist_BxWxM, jnp.broadcast_to(cols_Bx1xG, (b, w, g)),
                                     axis=2)
  lengths_B = jnp.full((b,), g, jnp.int32)
  if o.eos_id is not None:
    is_eos_BxG = tokens_BxWxG[:, 0] == o.eos_id
    lengths_B = jnp.where(is_eos_BxG.any(-1), jnp.argmax(is_eos_BxG, -1) + 1, g).astype(jnp.int32)
  return Output(tokens_BxWxG[:, 0], lengths_B, tokens_BxWxG, s.fin_score_BxW)


# ---------------------------------------------------------------------------
# Entry points.

@functools.lru_cache(maxsize=64)
def _compiled(model, options: Options) -> Callable:
  loop = _beam_loop if options.strategy == 'beam' else _pick_loop
  return jax.jit(functools.partial(loop, model, options))


def check_prompts(model_config, lengths_B, prompt_length: int, options: Options) -> None:
  """UserError for an empty prompt or one that does not fit the model's position table."""
  lengths_B = np.asarray(lengths_B)
  if lengths_B.ndim != 1 or lengths_B.size == 0:
    raise errors.UserError(f'prompt lengths must be one number per prompt, got shape '
                               f'{lengths_B.shape}')
  if lengths_B.min() < 1 or lengths_B.max() > prompt_length:
    raise errors.UserError(f'prompt lengths {lengths_B.tolist()} must lie in [1, '
                               f'{prompt_length}] (an empty prompt has nothing to continue)')
  if families.get(model_config.family).decoder_only:
    longest = int(lengths_B.max()) + options.max_new_tokens
    if longest > model_config.max_len:
      raise errors.UserError(
          f'max_new_tokens={options.max_new_tokens} is invalid: prompt ({int(lengths_B.max())} '
          f'tokens) + new tokens = {longest} exceeds the model\'s {model_config.max_len} positions')


def generate(model, params, prompt_BxL, lengths_B, options: Options = Options(),
             rng=None) -> Output:
  """Decodes up to `options.max_new_tokens` new tokens for each prompt (GPT or T5).

  prompt_BxL: int token ids, right-padded; lengths_B: real tokens per row (>= 1).
  For T5 the prompt is the encoder input (with its EOS, if the model was trained so).
  rng: a jax key (sampling only; default key 0).  Compiles once per shape and options.
  """
  options.validate(model.config.vocab_size)
  _family_fns(model)  # a BERT or a task head: UserError before anything is traced
  prompt_BxL = jnp.asarray(prompt_BxL, jnp.int32)
  check_prompts(model.config, lengths_B, prompt_BxL.shape[1], options)
  rng = jax.random.key(0) if rng is None else rng
  return _compiled(model, options)(params, prompt_BxL, jnp.asarray(lengths_B, jnp.int32), rng)


@functools.lru_cache(maxsize=16)
def _fill_mask_fn(model, top_k: int) -> Callable:
  def fn(params, tokens_BxL, lengths_B):
    b, l = tokens_BxL.shape
    segs_BxL = (jnp.arange(l) < lengths_B[:, None]).astype(jnp.int32)
    positions_BxL = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l)) * segs_BxL
    logits_BxLxV = model.apply({'params': params}, tokens_BxL * segs_BxL, segs_BxL, positions_BxL)
    return jax.lax.top_k(jax.nn.softmax(logits_BxLxV, axis=-1), top_k)
  return jax.jit(fn)


def fill_mask(model, params, tokens_BxL, lengths_B, mask_id: int, top_k: int = 5):
  """The top_k (token id, probability) pairs at every mask_id position of a BERT input.

  Returns one list per row of (position, [(id, prob), ...]) for its masked positions.
  """
  if not families.get(model.config.family).bidirectional or model.config.head != 'lm':
    raise errors.UserError(f'fill-mask needs a BERT masked-LM model, got family='
                               f'{model.config.family!r}, head={model.config.head!r}')
  tokens_BxL = np.asarray(tokens_BxL, np.int32)
  top_k = min(int(top_k), model.config.vocab_size)
  probs_BxLxK, ids_BxLxK = jax.device_get(_fill_mask_fn(model, top_k)(
      params, tokens_BxL, jnp.asarray(lengths_B, jnp.int32)))
  out = []
  for r, n in enumerate(np.asarray(lengths_B)):
    positions = [int(i) for i in np.flatnonzero(tokens_BxL[r, :n] == mask_id)]
    out.append([(i, list(zip(ids_BxLxK[r, i].tolist(), probs_BxLxK[r, i].tolist())))
                for i in positions])
  return out
