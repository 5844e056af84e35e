"""Shared setup for the data tests: a small config and tokenizer, built once per cache.

The corpora, TFDS datasets, tokenizer and token ids live in the normal cache
($PTLM_DATA_DIR or ~/.cache/ptlm_jax), so only the first test run fetches and trains;
tests that damage a cache use a temporary one.
"""
import functools

import numpy as np

from ptlm_jax import config_lib
from ptlm_jax.data import pipeline, token_chunks, tokenizer

TEST_VOCAB = 800  # pieces: small, so training on a subset takes a second or two
TEST_TRAIN_CHARS = 400_000  # characters of the train split the test tokenizer sees


def small_config(corpus: str = 'shakespeare', **data_overrides):
  c = config_lib.base_config('gpt', 'tiny')
  c.data.corpus = corpus
  c.data.sp_vocab_size = TEST_VOCAB
  c.data.sp_train_chars = TEST_TRAIN_CHARS
  c.model.vocab_size = config_lib.padded_vocab_size(TEST_VOCAB)
  c.data.seq_len = 64
  c.train.batch_size = 8
  for k, v in data_overrides.items():
    c.data[k] = v
  config_lib.validate(c)
  return c


@functools.cache
def small_tokenizer(corpus: str = 'shakespeare') -> tokenizer.Tokenizer:
  return tokenizer.get_tokenizer(small_config(corpus))


def split_of_docs(docs: list[list[int]], per_chunk: int = 1) -> token_chunks.InMemoryChunks:
  """Hand-made documents (each gets EOS = 1 appended), `per_chunk` documents a chunk."""
  return token_chunks.InMemoryChunks([np.asarray(d + [1], np.int32) for d in docs],
                                     per_chunk=per_chunk)


def iterator(data, *, batch_size=2, row_length=8, mode='pack', shuffle=False, seed=0,
             process_index=0, process_count=1, infinite=False, prefetch=0, weights=None):
  """A PretrainIterator over one source (or a list of sources with `weights`)."""
  data = data if isinstance(data, list) else [data]
  return pipeline.PretrainIterator(
      data, batch_size=batch_size, row_length=row_length, mode=mode, shuffle=shuffle,
      seed=seed, process_index=process_index, process_count=process_count,
      infinite=infinite, prefetch=prefetch, weights=weights or [1.0] * len(data),
      names=[f'source{i}' for i in range(len(data))])


def documents_in(batches) -> list[tuple[int, ...]]:
  """Rebuilds documents (with their EOS) from the pieces of a finite pass, in order."""
  docs, current = [], []
  for b in batches:
    for tokens, segments in zip(b['tokens'], b['segment_ids']):
      for s in range(1, int(segments.max(initial=0)) + 1):
        current.extend(int(t) for t in tokens[segments == s])
        if current[-1] == 1:
          docs.append(tuple(current))
          current = []
  assert not current, 'a document was cut off'
  return docs
