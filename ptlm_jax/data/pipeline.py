"""The packed input pipeline: chunks of documents -> token ids (+EOS) -> rows -> batches.

  it = pipeline.make_pretrain_iterator(config, tok)          # infinite, shuffled, this process's rows
  batch = next(it)  # {'tokens', 'segment_ids', 'positions'}: int32[B_local, L]
  state = it.get_state()   # small JSON dict; it2.set_state(state) continues exactly here

One global order.  Row r of every global batch is made by lane r (B lanes for a global
batch of B rows), and what a lane packs depends on (seed, r) alone, so the global batch
at step s is a function of (seed, s) whatever the number of processes: process p of P
runs lanes [p B/P, (p+1) B/P) and yields their rows.  A checkpoint holds every lane's
cursor, so a run saved on P processes resumes on any P' that divides the batch.

What a lane reads.  A source (a split of a corpus: `sources.open_source`) is C chunks of
consecutive documents, C known from metadata.  Epoch e visits the chunks in a permutation
drawn from (seed, source, e) and each chunk's documents in a permutation drawn from
(seed, source, e, chunk).  Lay the epochs end to end: chunk number n of that sequence is
chunk perm_{n // C}[n % C].  Lane r takes chunks n = r, r + B, r + 2B, ... in turn, and
packs their documents in order.  A finite pass (`infinite=False`, evaluation) stops each
lane at n >= C: every document of the split is packed exactly once.

Streaming.  Chunks are tokenised when a lane first needs them (`token_chunks.py`: worker
threads read ahead the next chunk of every lane, ids are cached on disk), so the first
batch waits for B/P chunks, not for the corpus.

Mixtures.  With `data.mixture` ('news:0.7,shakespeare:0.2,files:0.1') each lane has a
cursor in every source and draws the source of each next document with those weights,
from (seed, lane, draw number); a finite pass draws among the sources not yet exhausted.

Rows of length L, in one of two modes (`config.data.pack_mode`), per lane:
- `pack` (seqio's trim_and_pack, without the trim): a document is cut into pieces of L
  tokens (the last one shorter), and pieces are packed in order into the current row
  while they fit; a piece that does not fit closes the row (padding the rest) and starts
  the next.  A document never shares a row with a piece of itself.
- `chunk` (T5's span-corruption input): the lane's token stream is cut every L tokens, so
  rows are full and a document may continue into the lane's next row.
In both, `segment_ids` number the pieces in a row 1, 2, ... (0 = padding) and `positions`
count 0, 1, ... from the start of each piece.

Batches are built ahead on a background thread (`config.data.prefetch` batches).  An
error there (a bad line in a file: a `UserError` naming the file and line) is raised by
`next()`; a thread that dies without a word is reported within `_WATCHDOG_S` seconds, so
the training loop never waits forever.

Shapes in names: B rows per batch on this process, L row length.
"""
from __future__ import annotations

import queue
import threading
import time

import numpy as np

from ptlm_jax import config_lib
from ptlm_jax.data import sources, token_chunks
from ptlm_jax.errors import ConfigError, UserError

_DRAW_BLOCK = 1024  # mixture draws made at once per lane (one rng call, not one per document)
_WATCHDOG_S = 1.0   # how often a waiting next() checks that the producer thread still lives


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


def token_source(config, tokenizer, split: str, corpus: str | None = None,
                 keep: int = 64) -> token_chunks.TokenChunks:
  """The chunks of `split` of `corpus` (default config.data.corpus) as token ids."""
  if corpus is not None and corpus != config.data.corpus:
    config = config.copy_and_resolve_references()
    config.data.corpus = corpus
  source = sources.open_source(config, split)
  return token_chunks.TokenChunks(source, tokenizer, sources.fingerprint(config, split),
                                  keep=keep)


def tokenized_split(config, tokenizer, split: str) -> TokenizedSplit:
  """A whole split as ids, chunk after chunk (for statistics; fills the chunk cache)."""
  chunks = token_source(config, tokenizer, split)
  docs = []
  for c in range(chunks.num_chunks):
    for ahead in range(c + 1, min(c + 1 + token_chunks.READ_AHEAD_THREADS, chunks.num_chunks)):
      chunks.prefetch(ahead)  # the worker threads tokenise the next chunks meanwhile
    docs += chunks.get(c)
  chunks.close()
  lengths = np.asarray([len(d) for d in docs], np.int64)
  ids = np.concatenate(docs) if docs else np.zeros(0, np.int32)
  return TokenizedSplit(ids, np.concatenate([[0], np.cumsum(lengths)]),
                        fingerprint=chunks.fingerprint)


def _mix64(x: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser on uint64 arrays: distinct inputs give well-spread outputs."""
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


class _Orders:
  """Chunk order per epoch and document order per (epoch, chunk) of one source."""

  def __init__(self, num_chunks: int, seed: int, source_index: int, shuffle: bool):
    self.num_chunks, self.shuffle = num_chunks, shuffle
    self.seed = [seed, source_index]
    self._epochs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

  def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(chunk permutation, a uint64 key per chunk) of an epoch, from (seed, source, epoch)."""
    if epoch not in self._epochs:
      if len(self._epochs) > 2:
        self._epochs.pop(min(self._epochs))
      rng = np.random.default_rng(self.seed + [epoch])
      self._epochs[epoch] = (rng.permutation(self.num_chunks),
                             rng.integers(0, 2**63, self.num_chunks, dtype=np.uint64))
    return self._epochs[epoch]

  def chunk(self, n: int) -> tuple[int, int]:
    """(epoch, chunk index) of number n of the epochs laid end to end."""
    epoch, i = divmod(n, self.num_chunks)
    if not self.shuffle:
      return epoch, i
    return epoch, int(self._epoch(epoch)[0][i])

  def documents(self, epoch: int, chunk: int, count: int) -> np.ndarray:
    """The order of a chunk's documents: sorted by a hash of (chunk key, index).

    A hash instead of a generator per chunk: seeding one costs ~0.1 ms, a chunk's
    documents are packed in a few.
    """
    if not self.shuffle:
      return np.arange(count)
    key = self._epoch(epoch)[1][chunk]
    return np.argsort(_mix64(np.arange(count, dtype=np.uint64) ^ key), kind='stable')


class _Lane:
  """Row `index` of every global batch (module docstring): its cursors and its packing.

  State (a list of ints): [draws, current source or -1, token offset in the current
  document, then per source: chunk number n, document position in that chunk].
  """

  def __init__(self, index: int, chunks: list, orders: list[_Orders], weights: np.ndarray,
               num_lanes: int, seed: int, infinite: bool):
    self.index, self.chunks, self.orders = index, chunks, orders
    self.weights, self.num_lanes, self.seed, self.infinite = weights, num_lanes, seed, infinite
    self.set_state([0, -1, 0] + [index, 0] * len(chunks))

  def state(self) -> tuple:
    """A cheap snapshot (taken after every batch); `as_list` gives the saved form."""
    return self.draws, self.current, self.offset, tuple(self.n), tuple(self.pos)

  @staticmethod
  def as_list(snapshot: tuple) -> list[int]:
    draws, current, offset, n, pos = snapshot
    return [draws, current, offset] + [v for pair in zip(n, pos) for v in pair]

  def set_state(self, state) -> None:
    self.draws, self.current, self.offset = (int(v) for v in state[:3])
    self.n = [int(v) for v in state[3::2]]
    self.pos = [int(v) for v in state[4::2]]
    self._docs = [None] * len(self.chunks)  # (n, ordered documents) of each source
    self._block = (None, None)

  def read_ahead(self, ahead: int = 0) -> None:
    """Starts tokenising this lane's current chunks (ahead=0) or its next ones (ahead=1)."""
    for m, chunks in enumerate(self.chunks):
      n = self.n[m] + ahead * self.num_lanes
      if self.infinite or n < chunks.num_chunks:
        chunks.prefetch(self.orders[m].chunk(n)[1])

  def _exhausted(self, m: int) -> bool:
    return not self.infinite and self.n[m] >= self.chunks[m].num_chunks

  def _draw(self) -> int | None:
    """The source of the next document (None: a finite lane has read everything)."""
    if len(self.chunks) == 1:
      return None if self._exhausted(0) else 0
    open_ = np.array([not self._exhausted(m) for m in range(len(self.chunks))])
    if not open_.any():
      return None
    block, uniforms = self._block
    if block != self.draws // _DRAW_BLOCK:
      block = self.draws // _DRAW_BLOCK
      rng = np.random.default_rng([self.seed, 1, self.index, block])
      self._block = block, uniforms = block, rng.random(_DRAW_BLOCK)
    u = uniforms[self.draws % _DRAW_BLOCK]
    self.draws += 1
    cdf = np.cumsum(self.weights * open_)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side='right'), len(cdf) - 1))

  def _ordered(self, m: int) -> list[np.ndarray]:
    n = self.n[m]
    if self._docs[m] is None or self._docs[m][0] != n:
      epoch, chunk = self.orders[m].chunk(n)
      docs = self.chunks[m].get(chunk)
      self._docs[m] = n, [docs[i] for i in self.orders[m].documents(epoch, chunk, len(docs))]
      ahead = n + self.num_lanes
      if self.infinite or ahead < self.chunks[m].num_chunks:
        self.chunks[m].prefetch(self.orders[m].chunk(ahead)[1])
    return self._docs[m][1]

  def document(self) -> np.ndarray | None:
    """The document being packed (ids + EOS), or None when a finite lane is done."""
    m = self.current
    if m >= 0 and self._docs[m] is not None and self._docs[m][0] == self.n[m]:
      docs = self._docs[m][1]  # the usual case: the next document of the chunk at hand
      if self.pos[m] < len(docs):
        return docs[self.pos[m]]
    empty_run = 0
    while True:
      if self.current < 0:
        m = self._draw()
        if m is None:
          return None
        self.current = m
      m = self.current
      docs = self._ordered(m)
      if self.pos[m] < len(docs):
        return docs[self.pos[m]]
      self.n[m], self.pos[m] = self.n[m] + self.num_lanes, 0  # this lane's next chunk
      empty_run = 0 if docs else empty_run + 1
      if empty_run > self.chunks[m].num_chunks + self.num_lanes:
        name = getattr(getattr(self.chunks[m], 'source', None), 'name', 'the source')
        raise UserError(f'{name} has no documents (every chunk is empty)')
      if self._exhausted(m):
        self.current = -1  # draw again among what is left

  def finish_document(self) -> None:
    self.pos[self.current] += 1
    self.current, self.offset = -1, 0

  def fill(self, tokens_L, segments_L, positions_L, pack: bool, arange_L) -> bool:
    """Writes this lane's next row into the zeroed rows; False when a finite lane is done."""
    L = len(tokens_L)
    fill = seg = 0
    while fill < L:
      doc = self.document()
      if doc is None:
        break
      start, left = self.offset, L - fill
      take = len(doc) - start
      if take > (L if pack else left):
        take = L if pack else left
      if take > left:  # pack mode: the next piece does not fit this row
        break
      seg += 1
      end = fill + take
      tokens_L[fill:end] = doc[start:start + take]
      segments_L[fill:end] = seg
      positions_L[fill:end] = arange_L[:take]
      fill = end
      if start + take == len(doc):
        self.finish_document()
      else:
        self.offset += take
    return fill > 0


class PretrainIterator:
  """Yields this process's rows of each global batch; `get_state` / `set_state` resume."""

  def __init__(self, chunks: list, *, batch_size: int, row_length: int, mode: str,
               shuffle: bool, seed: int, process_index: int, process_count: int,
               infinite: bool, prefetch: int, weights=(1.0,), names=('corpus',)):
    """`chunks`: one TokenChunks per source; `batch_size`: rows of the global batch."""
    if batch_size % process_count:
      raise ConfigError('train.batch_size', batch_size,
                        f'a multiple of the process count ({process_count})')
    self.batch_size = batch_size // process_count
    self.row_length, self.pack = row_length, mode == 'pack'
    self.chunks = chunks
    weights = np.asarray(weights, np.float64)
    orders = [_Orders(c.num_chunks, seed, m, shuffle) for m, c in enumerate(chunks)]
    first = process_index * self.batch_size
    self._lanes = [_Lane(r, chunks, orders, weights / weights.sum(), batch_size, seed, infinite)
                   for r in range(first, first + self.batch_size)]
    self._identity = dict(
        data=[f'{n}:{c.fingerprint}' for n, c in zip(names, chunks)],
        weights=[float(w) for w in weights], row_length=row_length, mode=mode,
        shuffle=shuffle, seed=seed, global_batch=batch_size)
    self._arange = np.arange(row_length, dtype=np.int32)
    self._prefetch = prefetch
    self._states = [lane.state() for lane in self._lanes]  # after the last batch returned
    self._done = False
    self._thread = self._queue = self._stop = None
    self._read_ahead()

  def _read_ahead(self):
    """Every lane's first chunk, then every lane's next (the first batch needs the former)."""
    for ahead in (0, 1):
      for lane in self._lanes:
        lane.read_ahead(ahead)

  # --- batches --------------------------------------------------------------
  def _make_batch(self):
    """One batch from the lanes' cursors: (batch dict, lane states after it), or None."""
    shape = (self.batch_size, self.row_length)
    tokens_BxL, segments_BxL, positions_BxL = (np.zeros(shape, np.int32) for _ in range(3))
    wrote = False
    for r, lane in enumerate(self._lanes):
      wrote |= lane.fill(tokens_BxL[r], segments_BxL[r], positions_BxL[r], self.pack,
                         self._arange)
    if not wrote:
      return None
    batch = dict(tokens=tokens_BxL, segment_ids=segments_BxL, positions=positions_BxL)
    return batch, [lane.state() for lane in self._lanes]

  def _produce(self, out: queue.Queue, stop: threading.Event):
    """Background thread: puts (batch, states after it), then None (or an exception)."""

    def put(item):
      while not stop.is_set():
        try:
          return out.put(item, timeout=0.1)
        except queue.Full:
          pass

    try:
      while not stop.is_set():
        item = self._make_batch()
        if item is None:
          break
        put(item)
    except Exception as e:  # pylint: disable=broad-except  (re-raised in the caller)
      put(e)
    put(None)

  def __iter__(self):
    return self

  def _get(self):
    """The next item from the producer; a producer that died silently is an error."""
    while True:
      try:
        return self._queue.get(timeout=_WATCHDOG_S)
      except queue.Empty:
        if not self._thread.is_alive() and self._queue.empty():
          raise UserError('the input pipeline thread stopped without a batch or an error '
                          '(see the log above for its traceback)') from None

  def __next__(self):
    if self._done:
      self._join()
      raise StopIteration
    if self._prefetch == 0:
      item = self._make_batch()
    else:
      if self._thread is None:
        self._queue, self._stop = queue.Queue(self._prefetch), threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True,
                                        args=(self._queue, self._stop))
        self._thread.start()
      item = self._get()
      if isinstance(item, Exception):
        self._join()
        raise item
    if item is None:
      self._done = True
      self._join()
      raise StopIteration
    batch, self._states = item
    return batch

  def _join(self):
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = self._queue = self._stop = None

  def close(self):
    """Stops the prefetch thread (also done when the iterator is exhausted)."""
    self._join()
    for c in self.chunks:
      c.close()

  def __del__(self):
    if self._stop is not None:
      self._stop.set()  # the daemon thread ends on its own; no join during teardown

  # --- state ------------------------------------------------------------------
  def get_state(self) -> dict:
    """Every local lane's cursor after the last batch returned: a JSON-serialisable dict.

    The checkpoint merges the lanes of all processes (`merge_states`), so any process
    count that divides the batch can resume from it.
    """
    lanes = {str(lane.index): _Lane.as_list(s) for lane, s in zip(self._lanes, self._states)}
    return dict(lanes=lanes, done=self._done, **self._identity)

  def set_state(self, state: dict) -> None:
    """Continues from `state` (from `get_state`, or merged over processes)."""
    theirs = {k: state.get(k) for k in self._identity}
    if theirs != self._identity:
      diff = {k: (state.get(k), v) for k, v in self._identity.items() if state.get(k) != v}
      raise UserError(f'cannot resume the input pipeline: the saved state differs in '
                      f'{diff} (saved, now); resume with the same data settings')
    missing = [lane.index for lane in self._lanes if str(lane.index) not in state['lanes']]
    if missing:
      raise UserError(f'cannot resume the input pipeline: the saved state has no cursor for '
                      f'rows {missing[:4]}... of the global batch (a state of one process '
                      'alone? restore the merged state of every process)')
    self._join()
    for lane in self._lanes:
      lane.set_state(state['lanes'][str(lane.index)])
    self._read_ahead()
    self._states = [lane.state() for lane in self._lanes]
    self._done = bool(state.get('done', False))


def merge_states(states: list[dict]) -> dict:
  """The states of every process as one (each holds its own lanes' cursors)."""
  merged = dict(states[0], lanes={})
  for s in states:
    merged['lanes'].update(s['lanes'])
  return merged


def make_pretrain_iterator(config, tokenizer, *, split: str = 'train',
                           row_length: int | None = None, process_index: int | None = None,
                           process_count: int | None = None,
                           infinite: bool = True) -> PretrainIterator:
  """This process's rows of the packed global batches of one split (module docstring)."""
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
  mixture = config_lib.mixture(config) or [(d.corpus, 1.0)]
  keep = 2 * (batch_size // process_count) + 8
  chunks = [token_source(config, tokenizer, split, corpus, keep=keep) for corpus, _ in mixture]
  return PretrainIterator(
      chunks, batch_size=batch_size, row_length=row_length, mode=d.pack_mode,
      shuffle=d.shuffle, seed=d.shuffle_seed, process_index=process_index,
      process_count=process_count, infinite=infinite, prefetch=d.prefetch,
      weights=[w for _, w in mixture], names=[c for c, _ in mixture])
