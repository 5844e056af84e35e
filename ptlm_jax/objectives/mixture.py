"""UL2's mixture of denoisers (Tay et al. 2023, "UL2: Unifying Language Learning Paradigms").

Follows the paper and its appendix code (`ul2_objective`, built on T5's preprocessors):

- R and X denoisers are T5 span corruption with their own (mean span, density); each
  uses its own raw length from T5's `random_spans_helper`, so every denoiser fills the
  encoder as in the appendix code.
- the S denoiser is T5's `prefix_lm` on a chunk of `inputs_length - 1` raw tokens.
- a paradigm token is prepended to the inputs: [NLU] for R, [NLG] for X, [S2S] for S.
- the default mixture is the paper's seven denoisers, sampled uniformly (the
  appendix's `rates=None`): R (3, 0.15), R (8, 0.15), S, X (3, 0.5), X (8, 0.5),
  X (64, 0.15), X (64, 0.5).

Where it differs: the appendix shards the dataset per denoiser and interleaves them
with `sample_from_datasets`; here the denoiser is drawn per row, in the jitted step,
and a row uses the first raw_length(denoiser) of its real tokens (the rest of a row
sized for the longest denoiser is dropped, ~30% of the text at the defaults).  Like
span corruption, a row is one stretch of text (documents are not kept apart).  The
paradigm tokens are not text strings but reserved ids: the three lowest sentinels
(<extra_id_99> = [NLU], <extra_id_98> = [NLG], <extra_id_97> = [S2S]); the spans use
<extra_id_0..96>, then <extra_id_100>, ... (vocab.py: above the block of 100), as many
as the mixture needs (127 for X (3, 0.5) at 512 inputs).  `objectives.reserve_sentinels`
grows model.vocab_size to hold them.  `random_roll` applies to R and X
when set (the appendix code does not roll).

Mixture spec (config.objective.ul2_mixture): comma-separated `R:mean:density`,
`X:mean:density` or `S`, each optionally `=weight` (default 1), e.g.
'R:3:0.15=2,S,X:64:0.5'.

Legend: B batch, L raw row length, S encoder length, T decoder length, D denoisers.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ptlm_jax import errors
from ptlm_jax.data import vocab
from ptlm_jax.objectives import prefix_lm, rows, span_corruption

DEFAULT_MIXTURE = 'R:3:0.15,R:8:0.15,S,X:3:0.5,X:8:0.5,X:64:0.15,X:64:0.5'
PARADIGMS = ('R', 'X', 'S')
PARADIGM_NAMES = {'R': '[NLU]', 'X': '[NLG]', 'S': '[S2S]'}


@dataclasses.dataclass(frozen=True)
class Denoiser:
  paradigm: str                     # R | X | S
  mean_span_length: float = 0.0     # R, X
  noise_density: float = 0.0        # R, X
  weight: float = 1.0


def parse_mixture(spec: str) -> tuple[Denoiser, ...]:
  """Parses a mixture spec; ConfigError naming the field on anything malformed."""
  def bad(why):
    return errors.ConfigError('objective.ul2_mixture', spec, why)

  denoisers = []
  for entry in str(spec).split(','):
    entry = entry.strip()
    body, _, weight = entry.partition('=')
    parts = body.split(':')
    try:
      w = float(weight) if weight else 1.0
      if parts[0] == 'S' and len(parts) == 1:
        d = Denoiser('S', weight=w)
      elif parts[0] in ('R', 'X') and len(parts) == 3:
        d = Denoiser(parts[0], float(parts[1]), float(parts[2]), w)
      else:
        raise ValueError(entry)
    except ValueError:
      raise bad(f"entries 'R:mean:density', 'X:mean:density' or 'S', each optionally "
                f"'=weight'; got {entry!r}") from None
    if d.paradigm != 'S' and not (d.mean_span_length >= 1 and 0 < d.noise_density < 1):
      raise bad(f'mean span >= 1 and density in (0, 1) in {entry!r}')
    if not d.weight > 0:
      raise bad(f'a weight > 0 in {entry!r}')
    denoisers.append(d)
  return tuple(denoisers)


def paradigm_token_ids(vocab_info: vocab.VocabInfo) -> dict[str, int]:
  """Ids of the paradigm tokens: the three lowest sentinels (R, X, S in this order)."""
  last = min(vocab_info.num_sentinels, vocab.NUM_SENTINELS) - 1  # fixed ids: the block's lowest
  return {p: vocab_info.sentinel(last - k) for k, p in enumerate(PARADIGMS)}


@dataclasses.dataclass(frozen=True)
class MixtureShapes:
  raw_length: int            # the longest raw length any denoiser uses
  targets_length: int        # the longest targets
  raw_lengths: np.ndarray    # int32 [D]
  counts: np.ndarray         # int32 [D, raw_length + 1, 2]: span counts per real length
  max_spans: int             # most sentinels any row needs


def mixture_shapes(denoisers, inputs_length: int, paradigm_tokens: bool,
                   random_roll: bool) -> MixtureShapes:
  budget = inputs_length - int(paradigm_tokens)
  raws, targets, spans, tables = [], [], [], []
  for d in denoisers:
    if d.paradigm == 'S':
      raw = budget - 1  # T5's split_tokens_to_inputs_length; the prefix + EOS then fits
      raws.append(raw)
      targets.append(raw)  # suffix (at most raw - 1) + EOS
      tables.append(np.zeros((1, 2), np.int32))
    else:
      sh = span_corruption.span_shapes(budget, d.noise_density, d.mean_span_length, random_roll)
      raws.append(sh.raw_length)
      targets.append(sh.targets_length)
      spans.append(sh.max_spans)
      tables.append(sh.counts)
  raw_length = max(raws)
  counts = np.stack([np.concatenate([t, np.repeat(t[-1:], raw_length + 1 - len(t), 0)])
                     for t in tables])
  return MixtureShapes(raw_length, max(targets), np.array(raws, np.int32), counts,
                       max(spans, default=0))


def ul2(batch, rng, *, vocab_info: vocab.VocabInfo, denoisers, shapes: MixtureShapes,
        paradigm_tokens: bool, random_roll: bool, inputs_length: int, targets_length: int):
  """The objective: packed batch [B, L] -> (t5 inputs, targets_BxT, weights_BxT)."""
  tokens_BxL = jnp.asarray(batch['tokens'])[:, :shapes.raw_length]
  segments_BxL = jnp.asarray(batch['segment_ids'])[:, :shapes.raw_length]
  logits_D = jnp.log(jnp.array([d.weight for d in denoisers], jnp.float32))
  is_s_D = jnp.array([d.paradigm == 'S' for d in denoisers])
  ids = paradigm_token_ids(vocab_info)
  last = min(vocab_info.num_sentinels, vocab.NUM_SENTINELS) - 1
  skip = tuple(last - k for k in range(len(PARADIGMS))) if paradigm_tokens else ()
  span_ids = span_corruption.sentinel_ids(vocab_info, max(shapes.max_spans, 1), skip)
  paradigm_D = jnp.array([ids[d.paradigm] for d in denoisers], jnp.int32)
  raw_D, counts = jnp.asarray(shapes.raw_lengths), jnp.asarray(shapes.counts)
  budget = inputs_length - int(paradigm_tokens)
  idx_L = jnp.arange(tokens_BxL.shape[1])

  def one_row(key, tokens_L, segments_L):
    pick_key, span_key, prefix_key = jax.random.split(key, 3)
    tokens_L, n = rows.left_align(tokens_L, segments_L)
    d = jax.random.categorical(pick_key, logits_D)
    n = jnp.minimum(n, raw_D[d])
    # R / X: span corruption of the first n tokens
    span_in_S, n_in, span_tg_T, n_tg = span_corruption.corrupt_row(
        span_key, tokens_L, n, counts[d, n, 0], counts[d, n, 1], top_id=span_ids,
        random_roll=random_roll, inputs_length=budget, targets_length=targets_length)
    # S: T5's prefix_lm on the same n tokens, as one document
    text_L = (idx_L < n).astype(jnp.int32)
    content_L, split_L, pos_L = prefix_lm.document_split(prefix_key, tokens_L, text_L)
    pre_in_S, pre_in_seg_S, pre_tg_T, pre_tg_seg_T = prefix_lm.split_row(
        tokens_L, text_L, content_L, split_L, pos_L, budget, targets_length)
    s_row = is_s_D[d]
    enc_S = jnp.where(s_row, pre_in_S, span_in_S)
    enc_seg_S = jnp.where(s_row, pre_in_seg_S, (jnp.arange(budget) < n_in).astype(jnp.int32))
    tgt_T = jnp.where(s_row, pre_tg_T, span_tg_T)
    dec_seg_T = jnp.where(s_row, pre_tg_seg_T,
                          (jnp.arange(targets_length) < n_tg).astype(jnp.int32))
    if paradigm_tokens:
      first = (n > 0).astype(jnp.int32)
      enc_S = jnp.concatenate([(paradigm_D[d] * first)[None], enc_S])
      enc_seg_S = jnp.concatenate([first[None], enc_seg_S])
    return rows.encoder_decoder_example(enc_S, enc_seg_S, tgt_T, dec_seg_T)

  keys = rows.per_row_keys(rng, tokens_BxL.shape[0])
  return jax.vmap(one_row)(keys, tokens_BxL, segments_BxL)
