"""Cached decoding (KV cache, T5 cross-attention cache) equals the full forward at every step,
inside `lax.fori_loop`, with right-padded prompts of different lengths and beam-style rows."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptlm_jax import models
from models_testing import arange_positions, model_and_params

STEPS = 6


def _step_loop(model, params, cache, tokens_SxB, positions_SxB, **kw):
  """Feeds one token per row per step inside fori_loop; returns logits [S, B, V]."""
  tokens_SxB, positions_SxB = jnp.asarray(tokens_SxB), jnp.asarray(positions_SxB)
  steps, batch = tokens_SxB.shape
  ones = jnp.ones((batch, 1), jnp.int32)

  def body(k, carry):
    cache, out = carry
    logits, variables = model.apply(
        {'params': params, 'cache': cache}, *kw.get('prefix', ()), tokens_SxB[k][:, None], ones,
        positions_SxB[k][:, None], decode=True, mutable=['cache'], **kw.get('extra', {}))
    return variables['cache'], out.at[k].set(logits[:, 0])

  out = jnp.zeros((steps, batch, model.config.vocab_size), jnp.float32)
  return jax.jit(lambda c: jax.lax.fori_loop(0, steps, body, (c, out))[1])(cache)


@pytest.mark.parametrize('scan', [False, True])
def test_gpt_cached_decoding_equals_full_forward(scan):
  model, apply, params = model_and_params('gpt', scan_layers=scan)
  prompt_lens, prefill = np.array([3, 5]), 5
  total = prefill + STEPS
  rng = np.random.RandomState(0)
  full_tokens = rng.randint(7, 128, (2, total)).astype(np.int32)
  full_segs = np.ones((2, total), np.int32)
  full_segs[0, prompt_lens[0] + STEPS:] = 0  # row 0 is 9 tokens long
  full = np.asarray(apply({'params': params}, full_tokens * full_segs, full_segs,
                          arange_positions(2, total)))

  # Prefill right-padded prompts of 3 and 5 tokens into one cache.
  prompt_segs = (np.arange(prefill)[None] < prompt_lens[:, None]).astype(np.int32)
  prompt = full_tokens[:, :prefill] * prompt_segs
  cache = models.init_cache(model, 2, total)
  logits, variables = apply({'params': params, 'cache': cache}, prompt, prompt_segs,
                            arange_positions(2, prefill), decode=True, mutable=('cache',))
  for r, n in enumerate(prompt_lens):
    np.testing.assert_allclose(logits[r, :n], full[r, :n], atol=1e-5)
  assert int(variables['cache']['decoder']['state']['index']) == prefill

  # Each row continues at its own position; the unwritten slots of row 0 stay masked.
  positions = (prompt_lens[None, :] + np.arange(STEPS)[:, None]).astype(np.int32)
  tokens = np.take_along_axis(full_tokens.T, positions, axis=0)
  steps = np.asarray(_step_loop(model, params, variables['cache'], tokens, positions))
  for r in range(2):
    np.testing.assert_allclose(steps[:, r], full[r, positions[:, r]], atol=1e-5)


@pytest.mark.parametrize('scan', [False, True])
def test_t5_cached_decoding_with_beams_equals_full_forward(scan):
  model, apply, params = model_and_params('t5', scan_layers=scan)
  rng = np.random.RandomState(1)
  enc_tokens = rng.randint(7, 128, (2, 7)).astype(np.int32)
  enc_segs = np.ones((2, 7), np.int32)
  enc_segs[1, 5:] = 0
  enc = (enc_tokens * enc_segs, enc_segs, arange_positions(2, 7))
  dec_tokens = rng.randint(7, 128, (2, STEPS + 1)).astype(np.int32)
  dec_tokens[:, 0] = 0  # start id
  dec = (dec_tokens, np.ones_like(dec_tokens), arange_positions(2, STEPS + 1))
  full = np.asarray(apply({'params': params}, *enc, *dec))

  encoded = apply({'params': params}, *enc, method='encode')  # the encoder runs once
  cache = models.init_cache(model, 2, STEPS + 1, encoder_length=7)
  logits, variables = apply({'params': params, 'cache': cache}, encoded, enc_segs,
                            *(x[:, :1] for x in dec), decode=True, method='decode',
                            mutable=('cache',))
  np.testing.assert_allclose(logits[:, 0], full[:, 0], atol=1e-5)

  # Beams: repeat each row twice; later steps read the cached cross-attention keys.
  rows = np.array([0, 0, 1, 1])
  beams = models.gather_cache(variables['cache'], rows)
  tokens = dec_tokens[rows, 1:].T
  positions = np.broadcast_to(np.arange(1, STEPS + 1)[:, None], tokens.shape).astype(np.int32)
  steps = np.asarray(_step_loop(model, params, beams, tokens, positions,
                                prefix=(None, None), extra={'method': 'decode'}))
  for b, r in enumerate(rows):
    np.testing.assert_allclose(steps[:, b], full[r, 1:], atol=1e-5)


def test_cache_arrays_keep_batch_first_in_both_layouts():
  for scan in (False, True):
    model, _, _ = model_and_params('t5', scan_layers=scan)
    cache = models.init_cache(model, 3, 5, encoder_length=4)
    for path, x in jax.tree_util.tree_leaves_with_path(cache):
      assert x.ndim == 0 or x.shape[0] == 3, (scan, path, x.shape)
    assert int(cache['decoder']['state']['index']) == 0
