"""Packed pipeline: exact rows against a hand computation and a list-based reference,
no token lost or duplicated, shards, determinism, and exact resume."""
import itertools
import json
import unicodedata

import numpy as np
import pytest

import data_testlib as lib
from ptlm_jax.data import pipeline, sources
from ptlm_jax.errors import UserError


def _rows(batches):
  """All non-empty rows of a finite pass, as (tokens, segment_ids, positions) int arrays."""
  out = []
  for b in batches:
    for r in range(b['tokens'].shape[0]):
      if b['segment_ids'][r].any():
        out.append(np.stack([b['tokens'][r], b['segment_ids'][r], b['positions'][r]]))
  return np.array(out)


def _reference_rows(docs, L, mode):
  """The two modes written out plainly with lists (the specification, not the code)."""
  rows = []
  if mode == 'chunk':
    stream = [(t, i) for i, d in enumerate(docs) for t in d + [1]]
    for start in range(0, len(stream), L):
      row, seg, prev, pos = [], 0, None, 0
      for t, doc in stream[start:start + L]:
        if doc != prev:
          seg, pos, prev = seg + 1, 0, doc
        row.append((t, seg, pos))
        pos += 1
      rows.append(row)
  else:
    pieces = [(d + [1])[i:i + L] for d in docs for i in range(0, len(d) + 1, L)]
    row = []
    for p in pieces:
      if len(row) + len(p) > L:
        rows.append(row)
        row = []
      seg = row[-1][1] + 1 if row else 1
      row += [(t, seg, i) for i, t in enumerate(p)]
    rows.append(row)
  out = np.zeros((len(rows), 3, L), np.int32)
  for r, row in enumerate(rows):
    out[r, :, :len(row)] = np.array(row).T
  return out


def _random_docs(seed, n=40, max_len=30):
  rng = np.random.default_rng(seed)
  # The first token names the document, so every document is unique.
  return [[1000 + i] + rng.integers(7, 100, rng.integers(0, max_len)).tolist() for i in range(n)]


def test_pack_and_chunk_on_a_hand_built_example():
  docs = [[10, 11, 12], [20, 21], list(range(30, 40))]  # lengths 4, 3, 11 with EOS
  data = lib.split_of_docs(docs)
  pack = _rows(lib.iterator(data, mode='pack'))
  np.testing.assert_array_equal(pack, [
      [[10, 11, 12, 1, 20, 21, 1, 0], [1, 1, 1, 1, 2, 2, 2, 0], [0, 1, 2, 3, 0, 1, 2, 0]],
      [[30, 31, 32, 33, 34, 35, 36, 37], [1] * 8, list(range(8))],
      [[38, 39, 1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0], [0, 1, 2, 0, 0, 0, 0, 0]]])
  chunk = _rows(lib.iterator(data, mode='chunk'))
  np.testing.assert_array_equal(chunk, [
      [[10, 11, 12, 1, 20, 21, 1, 30], [1, 1, 1, 1, 2, 2, 2, 3], [0, 1, 2, 3, 0, 1, 2, 0]],
      [list(range(31, 39)), [1] * 8, list(range(8))],
      [[39, 1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0]]])


def test_finite_pass_pads_the_last_batch_and_stops():
  data = lib.split_of_docs([[10, 11, 12], [20, 21], list(range(30, 40))])
  batches = list(lib.iterator(data, batch_size=2, prefetch=2))
  assert [b['tokens'].shape for b in batches] == [(2, 8), (2, 8)]
  assert not batches[1]['segment_ids'][1].any()  # the filler row is empty


@pytest.mark.parametrize('mode', ['pack', 'chunk'])
@pytest.mark.parametrize('L', [8, 16])
def test_rows_match_the_reference_and_keep_every_token_once(mode, L):
  docs = _random_docs(seed=L)
  batches = list(lib.iterator(lib.split_of_docs(docs), batch_size=3, row_length=L, mode=mode))
  np.testing.assert_array_equal(_rows(batches), _reference_rows(docs, L, mode))
  assert lib.documents_in(batches) == [tuple(d + [1]) for d in docs]
  for b in batches:
    segments = b['segment_ids']
    assert b['tokens'].shape[1] == L
    # Padding only at the end of a row; segments count up by one from 1.
    assert (np.diff((segments > 0).astype(int), axis=1) <= 0).all()
    assert (np.diff(segments, axis=1)[segments[:, 1:] > 0] >= 0).all()


def test_shuffled_pass_keeps_every_document_once():
  docs = _random_docs(seed=3)
  batches = list(lib.iterator(lib.split_of_docs(docs), shuffle=True, seed=5, mode='pack'))
  got = lib.documents_in(batches)
  assert sorted(got) == sorted(tuple(d + [1]) for d in docs)
  assert got != [tuple(d + [1]) for d in docs]  # the order did change


@pytest.mark.parametrize('count', [2, 3])
def test_process_shards_are_disjoint_and_cover_the_split(count):
  config, tok = lib.small_config(), lib.small_tokenizer()
  config.train.batch_size = 6

  def docs(index, count):
    return lib.documents_in(pipeline.make_pretrain_iterator(
        config, tok, split='validation', process_index=index, process_count=count,
        infinite=False))

  whole = docs(0, 1)
  shards = [docs(p, count) for p in range(count)]
  seen = [d for s in shards for d in s]
  assert len(seen) == len(set(seen)) == len(whole) == len(set(whole))  # disjoint
  assert set(seen) == set(whole)  # and together the whole split
  assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize('prefetch', [0, 2])
@pytest.mark.parametrize('mode', ['pack', 'chunk'])
def test_resume_yields_exactly_the_uninterrupted_batches(prefetch, mode):
  data = lib.split_of_docs(_random_docs(seed=6, n=12))
  settings = dict(batch_size=3, mode=mode, shuffle=True, seed=2, infinite=True,
                  prefetch=prefetch)
  whole = list(itertools.islice(lib.iterator(data, **settings), 60))
  epochs = []
  for k in (1, 5, 17, 33):  # mid-epoch 0 and in later epochs (an epoch is ~10 batches)
    first = lib.iterator(data, **settings)
    head = list(itertools.islice(first, k))
    state = json.loads(json.dumps(first.get_state()))
    first.close()
    epochs.append(state['epoch'])
    second = lib.iterator(data, **settings)
    second.set_state(state)
    tail = list(itertools.islice(second, 60 - k))
    second.close()
    for a, b in zip(whole, head + tail, strict=True):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
  assert epochs[0] == 0 and max(epochs) >= 2  # resumed inside and across epoch boundaries


def test_state_from_other_settings_is_refused():
  data = lib.split_of_docs(_random_docs(seed=7, n=5))
  state = lib.iterator(data, seed=1).get_state()
  with pytest.raises(UserError, match='seed'):
    lib.iterator(data, seed=2).set_state(state)


def test_real_corpus_is_deterministic_and_seeded():
  tok = lib.small_tokenizer()
  config = lib.small_config()
  make = lambda seed: pipeline.make_pretrain_iterator(
      lib.small_config(shuffle_seed=seed), tok, process_index=1, process_count=2)
  a, b, c = make(0), make(0), make(1)
  for _ in range(3):
    x, y, z = next(a), next(b), next(c)
    assert x['tokens'].shape == (config.train.batch_size // 2, config.data.seq_len)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  assert not np.array_equal(x['tokens'], z['tokens'])
  for it in (a, b, c):
    it.close()


def test_real_corpus_round_trips_through_the_pipeline():
  config, tok = lib.small_config(pack_mode='chunk', shuffle=False), lib.small_tokenizer()
  batches = pipeline.make_pretrain_iterator(config, tok, split='validation', infinite=False,
                                            process_index=0, process_count=1)
  docs = [tok.decode(d) for d in lib.documents_in(batches)]
  texts = [unicodedata.normalize('NFKC', t) for t in sources.texts(config, 'validation')]
  assert docs == [t for t in texts if t]


def test_token_ids_are_cached_and_reused():
  config, tok = lib.small_config(), lib.small_tokenizer()
  first = pipeline.tokenized_split(config, tok, 'validation')
  folder = pipeline._cache_dir(config, tok, 'validation', (0, 1))
  mtime = (folder / 'ids.npy').stat().st_mtime_ns
  second = pipeline.tokenized_split(config, tok, 'validation')
  assert (folder / 'ids.npy').stat().st_mtime_ns == mtime
  np.testing.assert_array_equal(first.ids, second.ids)
  assert first.num_tokens == len(first.ids) and first.ids[first.offsets[1:] - 1].tolist() == [
      1] * first.num_documents  # every document ends with EOS
