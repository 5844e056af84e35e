"""Streaming (the first batch reads a few chunks, not the corpus), pipeline errors that
surface at once, and mixtures (proportions within a binomial bound, exact resume)."""
import itertools
import json
import threading
import time

import numpy as np
import pytest

import data_testlib as lib
from ptlm_jax import config_lib
from ptlm_jax.data import local_files, pipeline
from ptlm_jax.errors import ConfigError, UserError


def _call_within(seconds: float, fn):
  """fn() on a helper thread; fails the test (instead of hanging it) after `seconds`."""
  result = {}

  def run():
    try:
      result['value'] = fn()
    except BaseException as e:  # pylint: disable=broad-except
      result['error'] = e

  thread = threading.Thread(target=run, daemon=True)
  start = time.monotonic()
  thread.start()
  thread.join(seconds)
  assert not thread.is_alive(), f'still waiting after {seconds} s'
  return result, time.monotonic() - start


def _files_config(folder, pattern, **data):
  c = lib.small_config()
  c.data.update(corpus='files', train_files=f'{folder}/{pattern}',
                validation_files=f'{folder}/{pattern}', **data)
  return c


# ---------------------------------------------------------------------------
# Streaming.

def test_first_batch_tokenises_a_few_chunks_not_the_corpus(tmp_path, monkeypatch):
  tok = lib.small_tokenizer()  # from the usual cache, before the token cache moves
  monkeypatch.setenv('PTLM_DATA_DIR', str(tmp_path / 'cache'))
  monkeypatch.setattr(local_files, 'CHUNK_BYTES', 4096)
  line = json.dumps({'text': 'To be, or not to be, that is the question. ' * 3})
  (tmp_path / 'big.jsonl').write_text('\n'.join([line] * 20_000) + '\n')  # 2.8 MB
  config = _files_config(tmp_path, 'big.jsonl')
  config.train.batch_size = 4
  it = pipeline.make_pretrain_iterator(config, tok, process_index=0, process_count=1)
  next(it)
  it.close()
  folder = it.chunks[0].folder
  made = len(list(folder.glob('*.ids')))
  # Each lane's first chunk and the one it reads ahead: at most 2 per lane, of ~700.
  assert it.chunks[0].num_chunks > 600 and 1 <= made <= 2 * 4


# ---------------------------------------------------------------------------
# Errors.

def test_a_bad_line_deep_in_a_file_is_one_line_naming_file_and_line(tmp_path, monkeypatch):
  tok = lib.small_tokenizer()
  monkeypatch.setenv('PTLM_DATA_DIR', str(tmp_path / 'cache'))
  monkeypatch.setattr(local_files, 'CHUNK_BYTES', 2048)
  lines = [json.dumps({'text': f'document {i} of the corpus.'}) for i in range(3000)]
  lines[2500] = '{"text": "a line cut off'
  (tmp_path / 'a.jsonl').write_text('\n'.join(lines) + '\n')
  config = _files_config(tmp_path, 'a.jsonl', seq_len=16)
  config.train.batch_size = 4
  it = pipeline.make_pretrain_iterator(config, tok, process_index=0, process_count=1)
  result, seconds = _call_within(60, lambda: [next(it) for _ in range(100_000)])
  error = result.get('error')
  assert isinstance(error, UserError), result
  assert f'{tmp_path}/a.jsonl, line 2501: not a JSON object' in str(error)
  assert '\n' not in str(error) and seconds < 60


def test_a_producer_that_dies_silently_is_an_error_not_a_hang(monkeypatch):
  data = lib.split_of_docs([[10, 11], [12, 13, 14]])
  it = lib.iterator(data, prefetch=2, infinite=True)

  def die(*args, **kwargs):
    raise SystemExit  # ends the thread without the exception reaching the queue

  monkeypatch.setattr(pipeline._Lane, 'fill', die)
  monkeypatch.setattr(threading, 'excepthook', lambda args: None)  # no warning for it
  result, seconds = _call_within(20, lambda: next(it))
  assert isinstance(result.get('error'), UserError), result
  assert 'input pipeline thread stopped' in str(result['error']) and seconds < 10


# ---------------------------------------------------------------------------
# Mixtures.

def _sources(counts=(60, 40, 30)):
  """Source m's documents start with 1000 * (m + 1) + i (lengths 2..9 with EOS)."""
  rng = np.random.default_rng(0)
  return [lib.split_of_docs([[1000 * (m + 1) + i] + rng.integers(7, 99, rng.integers(1, 9)).tolist()
                             for i in range(n)], per_chunk=3)
          for m, n in enumerate(counts)]


def _document_starts(batches):
  """The first token of every document that starts in the batches (position 0)."""
  firsts = []
  for b in batches:
    firsts += b['tokens'][b['positions'] == 0][b['segment_ids'][b['positions'] == 0] > 0].tolist()
  return np.asarray(firsts)


def test_mixture_proportions_hold_within_a_binomial_bound():
  weights = [0.6, 0.3, 0.1]
  it = lib.iterator(_sources(), weights=weights, batch_size=4, row_length=16, infinite=True,
                    shuffle=True, seed=1)
  source_of = _document_starts(itertools.islice(it, 600)) // 1000 - 1
  n = len(source_of)
  assert n > 2000
  for m, p in enumerate(weights):
    count = int((source_of == m).sum())
    # 5 standard deviations: a correct sampler fails this with probability < 1e-6.
    assert abs(count - n * p) <= 5 * np.sqrt(n * p * (1 - p)), (m, count, n * p)


def test_mixture_state_holds_every_source_position_and_resumes_exactly():
  settings = dict(weights=[0.5, 0.3, 0.2], batch_size=4, row_length=16, infinite=True,
                  shuffle=True, seed=2, prefetch=2)
  make = lambda count: [lib.iterator(_sources(), process_index=p, process_count=count, **settings)
                        for p in range(count)]

  def take(iterators, steps):
    return [np.concatenate([next(it)['tokens'] for it in iterators]) for _ in range(steps)]

  whole = take(make(1), 80)
  first = make(2)
  head = take(first, 37)
  state = json.loads(json.dumps(pipeline.merge_states([it.get_state() for it in first])))
  assert len(state['lanes']) == 4
  assert all(len(lane) == 3 + 2 * 3 for lane in state['lanes'].values())  # n, pos per source
  second = make(1)
  second[0].set_state(state)
  tail = take(second, 80 - 37)
  for want, got in zip(whole, head + tail, strict=True):
    np.testing.assert_array_equal(want, got)
  other = lib.iterator(_sources(), **dict(settings, weights=[0.4, 0.4, 0.2]))
  with pytest.raises(UserError, match='weights'):
    other.set_state(state)


def test_a_finite_mixture_pass_reads_every_document_of_every_source_once():
  sources = _sources()
  it = lib.iterator(sources, weights=[0.2, 0.3, 0.5], batch_size=3, row_length=16)
  starts = sorted(_document_starts(list(it)).tolist())
  expected = sorted(int(d[0]) for s in sources for d in s.docs)
  assert starts == expected


@pytest.mark.parametrize('value, words', [
    ('news:0.7,shakespeare:x', "bad weight 'x' for shakespeare"),
    ('news:0.7,nosuch:0.3', "unknown source 'nosuch'"),
    ('news:-1', "bad weight '-1'"),
    ('news:0.5,news:0.5', 'news twice'),
    ('news', 'unknown source'),
])
def test_a_bad_mixture_is_a_one_line_config_error(value, words):
  config = lib.small_config()
  config.data.mixture = value
  with pytest.raises(ConfigError) as e:
    config_lib.validate(config)
  assert 'config.data.mixture' in str(e.value) and words in str(e.value)
  assert '\n' not in str(e.value)


def test_mixture_of_real_corpora_mixes_and_names_both_sources():
  config = lib.small_config(mixture='shakespeare:0.5,news:0.5', seq_len=32)
  it = pipeline.make_pretrain_iterator(config, lib.small_tokenizer(), process_index=0,
                                       process_count=1)
  batches = [next(it) for _ in range(20)]
  state = it.get_state()
  it.close()
  assert [d.split(':')[0] for d in state['data']] == ['shakespeare', 'news']
  lanes = {int(j): lane for j, lane in state['lanes'].items()}
  assert sum(lane[0] for lane in lanes.values()) >= 8  # documents drawn, every lane
  for m in (0, 1):  # each source is being read, or has moved on, in some lane
    assert any(lane[1] == m or lane[3 + 2 * m:5 + 2 * m] != [j, 0] for j, lane in lanes.items())
  assert batches[0]['tokens'].shape == (8, 32)
