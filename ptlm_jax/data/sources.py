"""Text sources by name: the offline corpora and TFDS catalog datasets, with clear errors.

`config.data.corpus` names a source: `news` / `shakespeare` (offline, `corpora.py`), or
`tfds:<name>[/<config>]` for any TFDS dataset (`tfds:lm1b`, `tfds:c4/en`,
`tfds:imdb_reviews`, `tfds:glue/sst2`, and the offline ones as `tfds:rotten_tomatoes`).

  texts = sources.texts(config, 'train')        # iterator of str, in a fixed order
  src = sources.open_source(config, 'train')   # random access: src.read(chunk) -> list of str
  recs = sources.load_split('rotten_tomatoes', 'validation')  # {'text': [...], 'label': int64[N]}

Catalog datasets are never downloaded unless `config.data.download` is True: TFDS's own
download retries for minutes when offline.  Instead a dataset that is not prepared in
`data_dir` is a `UserError` saying how to enable the download, and with download on, the
host in `config.data.network_probe` is tried first with a short socket timeout, so a
missing network is reported within seconds, before TFDS starts.

`open_source` gives the streaming pipeline random access without reading the split first:
the split is cut into `num_chunks` chunks of consecutive documents (a few KiB to 1 MiB of
text each) whose number comes from metadata alone (TFDS split sizes, file sizes), and
`read(chunk)` returns one chunk's documents.  A TFDS split of at most `IN_MEMORY_BYTES`
is read whole on the first `read` (TFRecord files have no random access; the offline
corpora are 1-12 MB) and cut into small chunks; a larger one reads each chunk as its
own TFDS slice (`tfds.even_splits(split, n=num_chunks)[chunk]`), so nothing scans the
whole split before the first batch.
"""
from __future__ import annotations

import hashlib
import json
import math
import socket
import ssl
import threading
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from ptlm_jax.data import corpora, local_files
from ptlm_jax.errors import UserError

PROBE_TIMEOUT_S = 3.0
IN_MEMORY_BYTES = 256 << 20  # TFDS splits up to this size are read whole (once, lazily)
SMALL_CHUNK_BYTES = 16 << 10  # text per chunk of a split held in memory
LARGE_CHUNK_BYTES = 1 << 20   # text per chunk read as its own TFDS slice (tf.data start-up)


def tfds_name(corpus: str) -> str:
  """The TFDS name of a config.data.corpus value ('news' -> 'news', 'tfds:c4/en' -> 'c4/en')."""
  return corpus[len('tfds:'):] if corpus.startswith('tfds:') else corpus


def check_network(probe: str, timeout: float = PROBE_TIMEOUT_S) -> None:
  """Raises UserError unless `probe` ('host:port') answers within `timeout` seconds.

  Port 443 gets a verified TLS handshake too: behind a proxy that accepts every
  connection, only a real certificate for `host` shows the host is reachable.
  """
  host, _, port = probe.rpartition(':')
  try:
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
      if int(port) == 443:
        with ssl.create_default_context().wrap_socket(sock, server_hostname=host):
          pass
  except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
    raise UserError(
        f'no network: cannot reach {probe} (config.data.network_probe) within {timeout:g} s '
        f'({e}); TFDS downloads need it. Prepare the dataset on a connected machine and '
        'point config.data.data_dir at it, or use an offline corpus (news, shakespeare)') from e


def get_builder(name: str, *, data_dir: str = '', download: bool = False,
                network_probe: str = 'storage.googleapis.com:443'):
  """A prepared TFDS builder for `name`; offline corpora are prepared from their archive."""
  data_dir = data_dir or corpora.default_data_dir()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserError(f'no TFDS dataset named {name!r} (config.data.corpus); see '
                    'https://www.tensorflow.org/datasets/catalog') from e
  except ValueError as e:  # e.g. an unknown builder config 'glue/nope'
    raise UserError(f'TFDS dataset {name!r}: {str(e).splitlines()[0]}') from e
  if builder.is_prepared():
    return builder
  if name.split('/')[0] in corpora.BUILDERS:
    builder.download_and_prepare()  # reads the pip-fetched archive: no TFDS download
    return builder
  if not download:
    raise UserError(
        f'TFDS dataset {name!r} is not prepared in {data_dir} and config.data.download=False; '
        f'set --config.data.download=True to download it (needs network), or point '
        '--config.data.data_dir at a folder where it is prepared')
  check_network(network_probe)
  builder.download_and_prepare()
  return builder


def _shard_of(split: str, shard: tuple[int, int]):
  """Part `index` of `count` even, contiguous parts of `split` (tfds.split_for_jax_process)."""
  index, count = shard
  return split if count == 1 else tfds.even_splits(split, n=count)[index]


def _split_info(info, split):
  """The SplitInfo of `split`, which may use TFDS slicing ('train[:10%]', 'train[:5000]')."""
  try:
    return info.splits[split]
  except (KeyError, ValueError) as e:
    raise UserError(f'TFDS dataset {info.full_name!r} has no split {split!r} ({e}); it has '
                    f'{ {k: v.num_examples for k, v in info.splits.items()} }') from e


def _split(builder, split):
  _split_info(builder.info, split)
  return tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))


def _builder_for(config):
  d = config.data
  return get_builder(tfds_name(d.corpus), data_dir=d.data_dir, download=d.download,
                     network_probe=d.network_probe)


def texts(config, split: str, shard: tuple[int, int] = (0, 1)) -> Iterator[str]:
  """The documents of a split of config.data.corpus as str, in the dataset's fixed order.

  `shard=(index, count)` reads only part `index` of `count` even, contiguous parts
  (corpus 'files': every count-th document, see local_files.py).
  """
  if config.data.corpus == 'files':
    yield from local_files.corpus_texts(config, split, shard)
    return
  builder = _builder_for(config)
  key = config.data.text_key
  if key not in builder.info.features.keys():
    raise UserError(f'config.data.text_key={key!r} is not a feature of '
                    f'{builder.info.full_name!r}: expected one of '
                    f'{sorted(builder.info.features.keys())}')
  for example in _split(builder, _shard_of(split, shard)):
    yield example[key].decode('utf-8')


def fingerprint(config, split: str, shard: tuple[int, int] = (0, 1)) -> str:
  """A content fingerprint of a split, from TFDS metadata (no reading): name, version, sizes.

  `split` may be a TFDS slice ('train[:10%]'): a way to use part of a huge corpus.
  Tokenizer and token-id caches are keyed by it.  The offline corpora are pinned by
  their archive's sha256 and the builder version; catalog datasets by their version;
  corpus 'files' by the files' paths, sizes and modification times.
  """
  if config.data.corpus == 'files':
    return local_files.fingerprint(config, split, shard)
  info = _builder_for(config).info
  s = _split_info(info, _shard_of(split, shard))
  key = [info.full_name, split, list(shard), s.num_examples, list(s.shard_lengths),
         sorted((k, v.num_examples, v.num_bytes) for k, v in info.splits.items())]
  return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def load_split(name: str, split: str, *, data_dir: str = '', download: bool = False,
               network_probe: str = 'storage.googleapis.com:443') -> dict[str, np.ndarray]:
  """A whole split of a labelled dataset as numpy columns (str objects for text).

  For fine-tuning sets small enough to hold in memory: `rotten_tomatoes` gives
  {'text': object[N], 'label': int64[N], 'movie': object[N]}, `news_headlines`
  {'id', 'article', 'title'}, `glue/sst2` {'idx', 'label', 'sentence'}.
  """
  builder = get_builder(name, data_dir=data_dir, download=download, network_probe=network_probe)
  columns: dict[str, list] = {}
  for example in _split(builder, split):
    for key, value in example.items():
      if isinstance(value, bytes):
        value = value.decode('utf-8')
      columns.setdefault(key, []).append(value)
  return {k: np.array(v, dtype=object if isinstance(v[0], str) else None)
          for k, v in columns.items()}


# ---------------------------------------------------------------------------
# Random access by chunk, for the streaming pipeline.

class TfdsSource:
  """A TFDS split as `num_chunks` chunks of consecutive examples (module docstring)."""

  def __init__(self, config, split: str):
    self.builder = _builder_for(config)
    key = config.data.text_key
    if key not in self.builder.info.features.keys():
      raise UserError(f'config.data.text_key={key!r} is not a feature of '
                      f'{self.builder.info.full_name!r}: expected one of '
                      f'{sorted(self.builder.info.features.keys())}')
    self.key, self.split = key, split
    info = self.builder.info
    self.num_examples = _split_info(info, split).num_examples
    base = _split_info(info, split.split('[')[0])  # slices report no byte size
    num_bytes = int(base.num_bytes) * self.num_examples / max(base.num_examples, 1)
    self.in_memory = num_bytes <= IN_MEMORY_BYTES
    target = SMALL_CHUNK_BYTES if self.in_memory else LARGE_CHUNK_BYTES
    self.num_chunks = max(1, min(self.num_examples, math.ceil(num_bytes / target)))
    self.layout = f'tfds-{"mem" if self.in_memory else "slices"}-{self.num_chunks}'
    self.name = f'{info.full_name}:{split}'
    self._texts: list[str] | None = None
    self._lock = threading.Lock()

  def _bounds(self, chunk: int) -> tuple[int, int]:
    n, c = self.num_examples, self.num_chunks
    return chunk * n // c, (chunk + 1) * n // c

  def read(self, chunk: int) -> list[str]:
    """The documents of chunk `chunk` (0 <= chunk < num_chunks), in dataset order."""
    if not self.in_memory:
      part = tfds.even_splits(self.split, n=self.num_chunks)[chunk]
      return [ex[self.key].decode('utf-8') for ex in _split(self.builder, part)]
    with self._lock:  # read-ahead threads share one copy
      if self._texts is None:
        self._texts = [ex[self.key].decode('utf-8') for ex in _split(self.builder, self.split)]
    start, stop = self._bounds(chunk)
    return self._texts[start:stop]


class FileSource:
  """Corpus 'files': byte ranges of the files as chunks (see local_files.corpus_chunks)."""

  def __init__(self, config, split: str):
    self.config = config
    self.chunks = local_files.corpus_chunks(config, split)
    self.num_chunks = len(self.chunks)
    self.layout = f'files-{local_files.CHUNK_BYTES}'
    self.name = f'files:{split}'

  def read(self, chunk: int) -> list[str]:
    return local_files.chunk_texts(self.config, self.chunks[chunk])


def open_source(config, split: str):
  """Random access to a split of config.data.corpus by chunk: `.num_chunks`, `.read(c)`."""
  if config.data.corpus == 'files':
    return FileSource(config, split)
  return TfdsSource(config, split)
