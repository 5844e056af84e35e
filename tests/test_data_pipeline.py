"""Packed pipeline: exact rows against a hand computation and a list-based reference
(per lane), no token lost or duplicated, one global order for any process count,
determinism, exact resume (also on another process count), streaming, mixtures."""
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


def _lane_batches(batches, lane):
  """The rows of one lane (row `lane` of every batch) as one-row batches."""
  return [{k: v[lane:lane + 1] for k, v in b.items()} for b in batches]


def _global(iterators, steps):
  """`steps` global batches: the processes' rows joined in process order."""
  out = []
  for _ in range(steps):
    parts = [next(it) for it in iterators]
    out.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
  return out


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def _random_docs(seed, n=40, max_len=30):
  rng = np.random.default_rng(seed)
  # The first token names the document, so every document is unique.
  return [[1000 + i] + rng.integers(7, 100, rng.integers(0, max_len)).tolist() for i in range(n)]


def test_pack_and_chunk_on_a_hand_built_example():
  docs = [[10, 11, 12], [20, 21], list(range(30, 40))]  # lengths 4, 3, 11 with EOS
  data = lib.split_of_docs(docs)  # one lane: the documents in order
  pack = _rows(lib.iterator(data, mode='pack', batch_size=1))
  np.testing.assert_array_equal(pack, [
      [[10, 11, 12, 1, 20, 21, 1, 0], [1, 1, 1, 1, 2, 2, 2, 0], [0, 1, 2, 3, 0, 1, 2, 0]],
      [[30, 31, 32, 33, 34, 35, 36, 37], [1] * 8, list(range(8))],
      [[38, 39, 1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0], [0, 1, 2, 0, 0, 0, 0, 0]]])
  chunk = _rows(lib.iterator(data, mode='chunk', batch_size=1))
  np.testing.assert_array_equal(chunk, [
      [[10, 11, 12, 1, 20, 21, 1, 30], [1, 1, 1, 1, 2, 2, 2, 3], [0, 1, 2, 3, 0, 1, 2, 0]],
      [list(range(31, 39)), [1] * 8, list(range(8))],
      [[39, 1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0]]])


def test_finite_pass_pads_finished_lanes_and_stops():
  # Two lanes: lane 0 packs documents 0 and 2 (3 rows), lane 1 document 1 (1 row).
  data = lib.split_of_docs([[10, 11, 12], [20, 21], list(range(30, 40))])
  batches = list(lib.iterator(data, batch_size=2, prefetch=2))
  assert [b['tokens'].shape for b in batches] == [(2, 8)] * 3
  assert [bool(b['segment_ids'][1].any()) for b in batches] == [True, False, False]
  np.testing.assert_array_equal(batches[0]['tokens'][1], [20, 21, 1, 0, 0, 0, 0, 0])


@pytest.mark.parametrize('mode', ['pack', 'chunk'])
@pytest.mark.parametrize('L', [8, 16])
def test_rows_match_the_reference_and_keep_every_token_once(mode, L):
  docs = _random_docs(seed=L)
  B = 3  # lane j packs documents j, j + B, ... (one document a chunk, no shuffling)
  batches = list(lib.iterator(lib.split_of_docs(docs), batch_size=B, row_length=L, mode=mode))
  for lane in range(B):
    rows = _lane_batches(batches, lane)
    np.testing.assert_array_equal(_rows(rows), _reference_rows(docs[lane::B], L, mode))
    assert lib.documents_in(rows) == [tuple(d + [1]) for d in docs[lane::B]]
  for b in batches:
    segments = b['segment_ids']
    assert b['tokens'].shape[1] == L
    # Padding only at the end of a row; segments count up by one from 1.
    assert (np.diff((segments > 0).astype(int), axis=1) <= 0).all()
    assert (np.diff(segments, axis=1)[segments[:, 1:] > 0] >= 0).all()


@pytest.mark.parametrize('per_chunk', [1, 3])
def test_shuffled_pass_keeps_every_document_once(per_chunk):
  docs = _random_docs(seed=3)
  batches = list(lib.iterator(lib.split_of_docs(docs, per_chunk), shuffle=True, seed=5,
                              mode='pack', batch_size=3))
  got = [d for lane in range(3) for d in lib.documents_in(_lane_batches(batches, lane))]
  assert sorted(got) == sorted(tuple(d + [1]) for d in docs)
  in_order = [tuple(d + [1]) for j in range(3) for d in docs[j::3]]
  assert got != in_order  # the order did change


@pytest.mark.parametrize('mode', ['pack', 'chunk'])
def test_global_batches_do_not_depend_on_the_process_count(mode):
  data = lib.split_of_docs(_random_docs(seed=4, n=30), per_chunk=2)
  settings = dict(batch_size=4, mode=mode, shuffle=True, seed=3, infinite=True, prefetch=0)
  one = _global([lib.iterator(data, **settings)], 12)
  for count in (2, 4):
    many = [lib.iterator(data, process_index=p, process_count=count, **settings)
            for p in range(count)]
    _assert_batches_equal(_global(many, 12), one)


def test_real_corpus_global_batches_do_not_depend_on_the_process_count():
  config, tok = lib.small_config(), lib.small_tokenizer()
  make = lambda p, count: pipeline.make_pretrain_iterator(config, tok, process_index=p,
                                                          process_count=count)
  one = _global([make(0, 1)], 4)
  _assert_batches_equal(_global([make(p, 2) for p in range(2)], 4), one)
  _assert_batches_equal(_global([make(p, 8) for p in range(8)], 4), one)


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
    epochs.append(state['lanes']['0'][3] // data.num_chunks)  # lane 0's chunk number n
    second = lib.iterator(data, **settings)
    second.set_state(state)
    tail = list(itertools.islice(second, 60 - k))
    second.close()
    for a, b in zip(whole, head + tail, strict=True):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
  assert epochs[0] == 0 and max(epochs) >= 2  # resumed inside and across epoch boundaries


@pytest.mark.parametrize('saved_on, resumed_on', [(2, 1), (1, 2), (4, 2)])
def test_resume_on_another_process_count_continues_exactly(saved_on, resumed_on):
  data = lib.split_of_docs(_random_docs(seed=8, n=20), per_chunk=2)
  settings = dict(batch_size=4, mode='pack', shuffle=True, seed=4, infinite=True, prefetch=2)
  make = lambda count: [lib.iterator(data, process_index=p, process_count=count, **settings)
                        for p in range(count)]
  whole = _global(make(1), 30)
  first = make(saved_on)
  head = _global(first, 13)
  state = json.loads(json.dumps(pipeline.merge_states([it.get_state() for it in first])))
  second = make(resumed_on)
  for it in second:
    it.set_state(state)
  _assert_batches_equal(head + _global(second, 17), whole)
  with pytest.raises(UserError, match='no cursor for rows'):
    make(1)[0].set_state(first[-1].get_state() if saved_on > 1 else  # one process's lanes
                         second[-1].get_state())
  for it in first + second:
    it.close()


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
  batches = list(batches)
  docs = [tok.decode(d) for lane in range(config.train.batch_size)
          for d in lib.documents_in(_lane_batches(batches, lane))]
  texts = [unicodedata.normalize('NFKC', t) for t in sources.texts(config, 'validation')]
  assert sorted(docs) == sorted(t for t in texts if t)  # each document exactly once


def test_token_ids_are_cached_per_chunk_and_reused():
  config, tok = lib.small_config(), lib.small_tokenizer()
  first = pipeline.tokenized_split(config, tok, 'validation')
  folder = pipeline.token_source(config, tok, 'validation').folder
  files = sorted(folder.glob('*.ids'))
  mtimes = [f.stat().st_mtime_ns for f in files]
  second = pipeline.tokenized_split(config, tok, 'validation')
  assert [f.stat().st_mtime_ns for f in files] == mtimes  # read, not made again
  np.testing.assert_array_equal(first.ids, second.ids)
  # The chunks, in order, are the split tokenised in one go.
  texts = list(sources.texts(config, 'validation'))
  expected = np.concatenate([np.asarray(tok.encode(t) + [1], np.int32) for t in texts if t])
  np.testing.assert_array_equal(first.ids, expected)
  assert len(files) == pipeline.token_source(config, tok, 'validation').num_chunks > 1


def test_a_closed_iterator_can_still_resume_and_continue():
  config, tok = lib.small_config(), lib.small_tokenizer()
  it = pipeline.make_pretrain_iterator(config, tok, process_index=0, process_count=1)
  first = [next(it) for _ in range(3)]
  it.close()  # stops the prefetch and tokenising threads
  it.set_state(json.loads(json.dumps(pipeline.merge_states([it.get_state()]))))
  fresh = pipeline.make_pretrain_iterator(config, tok, process_index=0, process_count=1)
  expected = [next(fresh) for _ in range(5)][3:]
  _assert_batches_equal([next(it) for _ in range(2)], expected)
  assert first and it.chunks[0]._closed
  fresh.close()
  it.close()
