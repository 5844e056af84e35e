"""The packed input pipeline: documents -> token ids (+EOS) -> rows of fixed length.

  it = pipeline.make_pretrain_iterator(config, tok)          # infinite, shuffled, sharded
  batch = next(it)  # {'tokens', 'segment_ids', 'positions'}: int32[B_local, L]
  state = it.get_state()   # small JSON dict; it2.set_state(state) continues exactly here

Stages:
1. Tokenise a split once (`tokenized_split`) and cache it as two .npy files under
   `<cache>/token_ids/`: `ids` (every document's ids followed by EOS, concatenated) and
   `offsets` (document d is ids[offsets[d]:offsets[d+1]]).  Later runs start in seconds.
2. Shard by document: process p of P reads and tokenises only part p of P even,
   contiguous parts of the split (`tfds.even_splits`, as `tfds.split_for_jax_process`):
   the shards are disjoint, their union is the split, their sizes differ by at most one.
3. Each epoch visits the shard's documents in a permutation drawn from
   (shuffle_seed, epoch, process index); epochs follow each other without a gap.
4. Rows of length L, in one of two modes (`config.data.pack_mode`):
   - `pack` (seqio's trim_and_pack, without the trim): a document is cut into pieces of
     L tokens (the last one shorter), and pieces are packed in order into the current
     row while they fit; a piece that does not fit closes the row (padding the rest)
     and starts the next.  A document never shares a row with a piece of itself.
   - `chunk` (T5's span-corruption input): the token stream is cut every L tokens, so
     rows are full and a document may continue into the next row.
   In both, `segment_ids` number the pieces in a row 1, 2, ... (0 = padding) and
   `positions` count 0, 1, ... from the start of each piece, so attention and
   positions never cross a document boundary inside a row.
5. Batches of B_local = train.batch_size // process_count rows, built ahead on a
   background thread (`config.data.prefetch` batches).

The iterator's state is the cursor at the start of its next row: (epoch, position in
the epoch's order, token offset in that document).  Rows are a pure function of the
cursor, so restoring it replays the same rows; nothing else is carried.

With `infinite=False` the iterator makes one pass over epoch 0 and stops; the last
batch is filled up with empty rows (all zeros) so every batch has the same shape.

Shapes in names: B rows per batch on this process, L row length.
"""
from __future__ import annotations

import array
import os
import pathlib
import queue
import re
import shutil
import threading
import time

import numpy as np
from absl import logging

from ptlm_jax.data import downloads, sources, vocab
from ptlm_jax.errors import ConfigError, UserError

_ENCODE_BATCH = 512  # documents per SentencePiece call while tokenising a split
_MMAP_BYTES = 1 << 29  # token files above 512 MiB are memory-mapped instead of loaded


class TokenizedSplit:
  """All documents of a split as ids (EOS after each) and document offsets."""

  def __init__(self, ids: np.ndarray, offsets: np.ndarray, fingerprint: str):
    self.ids, self.offsets, self.fingerprint = ids, offsets, fingerprint

  @property
  def num_documents(self) -> int:
    return len(self.offsets) - 1

  @property
  def num_tokens(self) -> int:
    return int(self.offsets[-1])


def _cache_dir(config, tokenizer, split: str, shard: tuple[int, int]) -> pathlib.Path:
  name = f'{sources.tfds_name(config.data.corpus)}-{split}'
  name += f'-part{shard[0]}of{shard[1]}' if shard[1] > 1 else ''
  slug = re.sub(r'[^A-Za-z0-9_.-]+', '_', name)
  data_fp = sources.fingerprint(config, split, shard)
  return downloads.cache_dir() / 'token_ids' / f'{slug}-{data_fp}-{tokenizer.fingerprint}'


def _raw_to_npy(raw: pathlib.Path, npy: pathlib.Path, count: int) -> None:
  """Writes the `count` int32 values of `raw` as a .npy file, streamed; deletes `raw`."""
  with open(npy, 'wb') as out, open(raw, 'rb') as src:
    np.lib.format.write_array_header_1_0(
        out, {'descr': '<i4', 'fortran_order': False, 'shape': (count,)})
    shutil.copyfileobj(src, out, 1 << 24)
  raw.unlink()


def tokenized_split(config, tokenizer, split: str,
                    shard: tuple[int, int] = (0, 1)) -> TokenizedSplit:
  """Part `shard=(index, count)` of a split of config.data.corpus as token ids, cached."""
  folder = _cache_dir(config, tokenizer, split, shard)
  if not (folder / 'offsets.npy').exists():
    start = time.time()
    tmp = folder.with_name(f'.{folder.name}.{os.getpid()}')
    tmp.mkdir(parents=True, exist_ok=True)
    lengths, batch = array.array('q'), []  # 8 bytes a document, not a Python int
    # Ids go to disk as they are made, so a corpus larger than memory can be tokenised.
    raw = open(tmp / 'ids.raw', 'wb')  # pylint: disable=consider-using-with

    def flush():
      for ids in tokenizer.encode_batch(batch):
        if ids:  # an empty document would be a lone EOS
          raw.write(np.asarray(ids + [tokenizer.vocab_info.eos_id], '<i4').tobytes())
          lengths.append(len(ids) + 1)
      batch.clear()

    try:
      with raw:
        for text in sources.texts(config, split, shard):
          batch.append(text)
          if len(batch) == _ENCODE_BATCH:
            flush()
        flush()
    except BaseException:  # e.g. a bad line in a local file: leave no half-written cache
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, np.int64))])
    _raw_to_npy(tmp / 'ids.raw', tmp / 'ids.npy', int(offsets[-1]))
    np.save(tmp / 'offsets.npy', offsets)
    try:
      os.replace(tmp, folder)  # atomic; a concurrent writer may have won: keep theirs
    except OSError:
      shutil.rmtree(tmp, ignore_errors=True)
    logging.info('tokenised %s/%s: %d documents, %d tokens in %.1f s -> %s',
                 config.data.corpus, split, len(lengths), offsets[-1], time.time() - start,
                 folder)
  ids_path = folder / 'ids.npy'
  mmap = 'r' if ids_path.stat().st_size > _MMAP_BYTES else None
  return TokenizedSplit(np.load(ids_path, mmap_mode=mmap), np.load(folder / 'offsets.npy'),
                        fingerprint=folder.name)


class _Packer:
  """Builds rows from a cursor (epoch, position, offset) over the documents of a shard."""

  def __init__(self, data: TokenizedSplit, row_length: int, mode: str, shuffle: bool,
               seed: int, process_index: int, infinite: bool):
    self.ids, self.offsets = data.ids, data.offsets
    self.docs = np.arange(data.num_documents)
    self.L, self.pack = row_length, mode == 'pack'
    self.shuffle, self.seed, self.process_index = shuffle, seed, process_index
    self.infinite = infinite
    self._orders: dict[int, np.ndarray] = {}
    self._arange = np.arange(row_length, dtype=np.int32)

  def order(self, epoch: int) -> np.ndarray:
    """Document indices of this shard in the order epoch `epoch` visits them."""
    if epoch not in self._orders:
      if len(self._orders) > 2:
        self._orders.pop(min(self._orders))
      if self.shuffle:
        rng = np.random.default_rng([self.seed, epoch, self.process_index])
        self._orders[epoch] = self.docs[rng.permutation(len(self.docs))]
      else:
        self._orders[epoch] = self.docs
    return self._orders[epoch]

  def fill(self, cursor, tokens_L, segments_L, positions_L):
    """Writes one row from `cursor` into the given zeroed rows; returns the next cursor.

    Returns None instead when a finite iterator has nothing left (the row stays empty).
    """
    epoch, pos, off = cursor
    if epoch > 0 and not self.infinite:
      return None
    L, ids, offsets = self.L, self.ids, self.offsets
    order = self.order(epoch)
    fill = seg = 0
    while fill < L:
      if pos == len(order):  # end of an epoch
        if not self.infinite:
          return None if fill == 0 else (epoch + 1, 0, 0)
        epoch, pos, off = epoch + 1, 0, 0
        order = self.order(epoch)
      doc = order[pos]
      start, end = offsets[doc] + off, offsets[doc + 1]
      take = min(end - start, L if self.pack else L - fill)
      if take > L - fill:  # pack mode: the next piece does not fit this row
        break
      seg += 1
      tokens_L[fill:fill + take] = ids[start:start + take]
      segments_L[fill:fill + take] = seg
      positions_L[fill:fill + take] = self._arange[:take]
      fill += take
      if start + take == end:
        pos, off = pos + 1, 0
      else:
        off += take
    return epoch, pos, off


class PretrainIterator:
  """Yields packed batches; `get_state` / `set_state` make it resumable (see module doc)."""

  def __init__(self, data: TokenizedSplit, *, batch_size: int, row_length: int,
               mode: str, shuffle: bool, seed: int, process_index: int, process_count: int,
               infinite: bool, prefetch: int):
    self.batch_size, self.row_length = batch_size, row_length
    self._packer = _Packer(data, row_length, mode, shuffle, seed, process_index, infinite)
    if not data.num_documents:
      raise UserError(f'process {process_index} of {process_count} has no documents in its '
                      f'part of the split ({data.fingerprint}): use a larger split or fewer '
                      'processes')
    self.num_documents = len(self._packer.docs)
    self._identity = dict(data=data.fingerprint, row_length=row_length, mode=mode,
                          shuffle=shuffle, seed=seed, process_index=process_index,
                          process_count=process_count)
    self._prefetch = prefetch
    self._cursor = (0, 0, 0)  # where the next batch the caller gets starts
    self._thread = None
    self._queue = None
    self._stop = None

  # --- batches --------------------------------------------------------------
  def _make_batch(self, cursor):
    """One batch from `cursor`: (batch dict, cursor after it or None when finished)."""
    shape = (self.batch_size, self.row_length)
    tokens_BxL, segments_BxL, positions_BxL = (np.zeros(shape, np.int32) for _ in range(3))
    for r in range(self.batch_size):
      if cursor is None:
        break
      cursor = self._packer.fill(cursor, tokens_BxL[r], segments_BxL[r], positions_BxL[r])
    return dict(tokens=tokens_BxL, segment_ids=segments_BxL, positions=positions_BxL), cursor

  def _produce(self, cursor, out: queue.Queue, stop: threading.Event):
    """Background thread: puts (batch, cursor after it), then None (or an exception)."""

    def put(item):
      while not stop.is_set():
        try:
          return out.put(item, timeout=0.1)
        except queue.Full:
          pass

    try:
      while cursor is not None and not stop.is_set():
        batch, cursor = self._make_batch(cursor)
        if not batch['segment_ids'][0, 0]:  # the first row is empty: nothing was left
          break
        put((batch, cursor))
    except Exception as e:  # pylint: disable=broad-except  (re-raised in the caller)
      put(e)
    put(None)

  def __iter__(self):
    return self

  def __next__(self):
    if self._cursor is None:
      self._join()
      raise StopIteration
    if self._prefetch == 0:
      batch, cursor = self._make_batch(self._cursor)
      if not batch['segment_ids'][0, 0]:
        self._cursor = None
        raise StopIteration
      self._cursor = cursor
      return batch
    if self._thread is None:
      self._queue, self._stop = queue.Queue(self._prefetch), threading.Event()
      self._thread = threading.Thread(target=self._produce, daemon=True,
                                      args=(self._cursor, self._queue, self._stop))
      self._thread.start()
    item = self._queue.get()
    if item is None:
      self._cursor = None
      self._join()
      raise StopIteration
    if isinstance(item, Exception):
      self._join()
      raise item
    batch, self._cursor = item
    return batch

  def _join(self):
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = self._queue = self._stop = None

  def close(self):
    """Stops the prefetch thread (also done when the iterator is exhausted)."""
    self._join()

  def __del__(self):
    if self._stop is not None:
      self._stop.set()  # the daemon thread ends on its own; no join during teardown

  # --- state ------------------------------------------------------------------
  def get_state(self) -> dict:
    """The position after the last batch returned: a small JSON-serialisable dict."""
    epoch, position, offset = self._cursor if self._cursor else (-1, 0, 0)
    return dict(epoch=int(epoch), position=int(position), offset=int(offset),
                **self._identity)

  def set_state(self, state: dict) -> None:
    """Continues from `state` (from `get_state` of an iterator with the same settings)."""
    theirs = {k: state.get(k) for k in self._identity}
    if theirs != self._identity:
      diff = {k: (state.get(k), v) for k, v in self._identity.items() if state.get(k) != v}
      raise UserError(f'cannot resume the input pipeline: the saved state differs in '
                      f'{diff} (saved, now); resume with the same data settings')
    self._join()
    epoch = int(state['epoch'])
    self._cursor = None if epoch < 0 else (epoch, int(state['position']), int(state['offset']))


def make_pretrain_iterator(config, tokenizer, *, split: str = 'train',
                           row_length: int | None = None, process_index: int | None = None,
                           process_count: int | None = None,
                           infinite: bool = True) -> PretrainIterator:
  """Packed batches of one split for this process (see the module docstring)."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top  (only the process layout)
    process_index, process_count = jax.process_index(), jax.process_count()
  d, batch_size = config.data, config.train.batch_size
  if batch_size % process_count:
    raise ConfigError('train.batch_size', batch_size,
                      f'a multiple of the process count ({process_count})')
  row_length = row_length or d.seq_len
  if row_length <= 0:
    raise ConfigError('data.seq_len', row_length, 'a row length > 0')
  if d.pack_mode not in ('pack', 'chunk'):
    raise ConfigError('data.pack_mode', d.pack_mode, "one of ('pack', 'chunk')")
  data = tokenized_split(config, tokenizer, split, (process_index, process_count))
  return PretrainIterator(
      data, batch_size=batch_size // process_count, row_length=row_length, mode=d.pack_mode,
      shuffle=d.shuffle, seed=d.shuffle_seed, process_index=process_index,
      process_count=process_count, infinite=infinite, prefetch=d.prefetch)

