"""Causal and prefix LM on hand-built packed rows: targets, weights, masks, segments."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptlm_jax import config_lib, objectives
from ptlm_jax.data import vocab
from ptlm_jax.objectives import prefix_lm

EOS = vocab.EOS_ID
VOCAB = vocab.VocabInfo(piece_count=1000)
# row 0: [10 11 12 EOS] [20 21 EOS] [30 31] (no EOS: a document cut short) pad pad
# row 1: a 9-token document, then a 1-token document cut by the row end
TOKENS = np.array([[10, 11, 12, EOS, 20, 21, EOS, 30, 31, 0, 0],
                   [40, 41, 42, 43, 44, 45, 46, 47, 48, EOS, 50]], np.int32)
SEGMENTS = np.array([[1, 1, 1, 1, 2, 2, 2, 3, 3, 0, 0],
                     [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]], np.int32)
POSITIONS = np.array([[0, 1, 2, 3, 0, 1, 2, 0, 1, 0, 0],
                      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]], np.int32)
BATCH = {'tokens': TOKENS, 'segment_ids': SEGMENTS, 'positions': POSITIONS}


def get(family, name, seq_len=11):
  config = config_lib.base_config(family, 'tiny')
  config.objective.name = name
  config.data.seq_len = seq_len
  return objectives.get_objective(config, VOCAB)


def test_causal_targets_and_weights_by_hand():
  inputs, targets, weights = get('gpt', 'causal_lm')(BATCH, jax.random.PRNGKey(0))
  # EOS is a target (learned stop); no prediction crosses a document or enters padding;
  # the last document of row 0 has no EOS in the row, so its last token predicts nothing.
  np.testing.assert_array_equal(targets, [[11, 12, EOS, 0, 21, EOS, 0, 31, 0, 0, 0],
                                          [41, 42, 43, 44, 45, 46, 47, 48, EOS, 0, 0]])
  np.testing.assert_array_equal(weights, [[1, 1, 1, 0, 1, 1, 0, 1, 0, 0, 0],
                                          [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]])
  assert weights.dtype == jnp.float32 and 'prefix_mask' not in inputs
  for k in ('tokens', 'segment_ids', 'positions'):
    np.testing.assert_array_equal(inputs[k], BATCH[k])


def _doc_slices(segments):
  return [np.flatnonzero(segments == s) for s in np.unique(segments[segments > 0])]


def _content_length(tokens, idx):
  return len(idx) - int(tokens[idx[-1]] == EOS)


def test_decoder_prefix_lm_masks_and_weights():
  objective = jax.jit(get('gpt', 'prefix_lm'))
  causal_targets, causal_weights = get('gpt', 'causal_lm')(BATCH, None)[1:]
  splits = collections.Counter()
  for seed in range(60):
    inputs, targets, weights = objective(BATCH, jax.random.PRNGKey(seed))
    np.testing.assert_array_equal(targets, causal_targets)  # targets as causal LM
    prefix_mask = np.asarray(inputs['prefix_mask'])
    for b in range(2):
      assert not prefix_mask[b][SEGMENTS[b] == 0].any()
      for idx in _doc_slices(SEGMENTS[b]):
        n = _content_length(TOKENS[b], idx)
        p = int(prefix_mask[b, idx].sum())
        assert prefix_mask[b, idx].tolist() == [i < p for i in range(len(idx))]  # a prefix
        assert (1 <= p <= n - 1) if n >= 2 else p == 0
        # loss exactly on predictions of suffix tokens (the first from the last prefix token)
        expected = causal_weights[b, idx] * (np.arange(len(idx)) >= p - 1)
        np.testing.assert_array_equal(weights[b, idx], expected)
        if b == 1 and len(idx) == 10:
          splits[p] += 1
  # the 9-token document: split uniform over 1..8
  assert sorted(splits) == list(range(1, 9)) and max(splits.values()) <= 18


def test_encoder_decoder_split_by_hand():
  # splits 2, 1, 1 for the three documents of row 0
  split_L = jnp.array([2, 2, 2, 2, 1, 1, 1, 1, 1, 0, 0])
  content_L = jnp.array([3, 3, 3, 3, 2, 2, 2, 2, 2, 0, 0])
  pos_L = jnp.asarray(POSITIONS[0])
  enc, enc_seg, tgt, dec_seg = prefix_lm.split_row(jnp.asarray(TOKENS[0]), jnp.asarray(SEGMENTS[0]),
                                                   content_L, split_L, pos_L, 11, 11)
  assert enc.tolist() == [10, 11, EOS, 20, EOS, 30, EOS, 0, 0, 0, 0]
  assert enc_seg.tolist() == [1, 1, 1, 2, 2, 3, 3, 0, 0, 0, 0]
  assert tgt.tolist() == [12, EOS, 21, EOS, 31, EOS, 0, 0, 0, 0, 0]
  assert dec_seg.tolist() == [1, 1, 2, 2, 3, 3, 0, 0, 0, 0, 0]


def test_encoder_decoder_prefix_lm_per_document():
  objective = get('t5', 'prefix_lm')
  assert (objective.raw_length, objective.inputs_length, objective.targets_length) == (11, 11, 11)
  inputs, targets, weights = jax.jit(objective)(BATCH, jax.random.PRNGKey(3))
  inputs = {k: np.asarray(v) for k, v in inputs.items()}
  for b in range(2):
    enc_docs, dec_docs = [], []
    for idx in _doc_slices(SEGMENTS[b]):
      content = [t for t in TOKENS[b, idx][:_content_length(TOKENS[b], idx)]]
      k = SEGMENTS[b, idx[0]]
      enc = inputs['encoder_tokens'][b][inputs['encoder_segment_ids'][b] == k].tolist()
      tgt = np.asarray(targets)[b][inputs['decoder_segment_ids'][b] == k].tolist()
      p = len(enc) - 1
      assert enc == content[:p] + [EOS] and tgt == content[p:] + [EOS]
      assert (1 <= p <= len(content) - 1) if len(content) >= 2 else p == 0
      enc_docs.append(len(enc))
      dec_docs.append(len(tgt))
    # segments are contiguous, in document order, then padding
    n_enc, n_dec = sum(enc_docs), sum(dec_docs)
    assert inputs['encoder_segment_ids'][b].tolist() == sum(
        ([k + 1] * n for k, n in enumerate(enc_docs)), []) + [0] * (11 - n_enc)
    assert inputs['encoder_positions'][b].tolist() == sum(
        (list(range(n)) for n in enc_docs), []) + [0] * (11 - n_enc)
    np.testing.assert_array_equal(weights[b], np.arange(11) < n_dec)
    dec = inputs['decoder_tokens'][b]
    starts = np.cumsum([0] + dec_docs[:-1])
    for s, n in zip(starts, dec_docs):  # shifted right behind 0, per document
      assert dec[s] == 0
      assert dec[s + 1:s + n].tolist() == np.asarray(targets)[b, s:s + n - 1].tolist()
    assert (dec[n_dec:] == 0).all()


def test_objective_checks_row_length():
  with pytest.raises(ValueError, match='raw_length'):
    get('gpt', 'causal_lm', seq_len=16)(BATCH, None)
