"""One SentencePiece tokenizer for every family, with the reserved ids of `vocab.py`.

  tok = tokenizer.get_tokenizer(config)   # trains once per corpus, then loads from cache
  ids = tok.encode('To be, or not to be')  # no EOS: the pipeline adds it
  tok.decode(ids) == 'To be, or not to be'

Choices, and why:
- Unigram by default (`config.data.sp_model_type`; T5's choice): it trains fast,
  and it keeps SentencePiece's subword sampling available.  BPE is one setting away.
- Byte fallback on: a character outside the learned alphabet becomes its UTF-8 bytes
  (256 pieces at ids 8..263) instead of <unk>, so any text round-trips.
- Normalisation is NFKC only (ligatures, full-width forms and no-break spaces fold to
  their plain forms).  Whitespace is kept as written: runs of spaces, leading and
  trailing spaces, and newlines ('\n' is a user-defined piece, id 7, so verse keeps its
  lines).  `decode(encode(t)) == unicodedata.normalize('NFKC', t)` for every text t.
  Before SentencePiece sees a text, a space goes after each '\n' that starts a line
  (removed again on decode), so a word at the start of a line is the same piece as
  anywhere else.
- Training lines are paragraphs (blank-line separated; long ones cut at sentence ends
  into pieces of at most 2,000 characters), because SentencePiece skips lines over
  ~4 KB, and news articles are a single line of up to 28 KB.
- Training reads the train split only, at most `config.data.sp_train_chars`
  characters in dataset order (SentencePiece's own sampling is off), with a fixed 8
  threads whatever the CPU count: SentencePiece's EM adds per-thread partial counts, so
  the pieces depend on the thread count, and a fixed one trains the same tokenizer on
  every machine.  News (11 M characters): ~20 s on 2 cores.

An HF checkpoint's tokenizer (`data.tokenizer_path` = an HF dir, its tokenizer.json,
vocab.txt, vocab.json or spiece.model) loads as `hf_tokenizer.HFTokenizer`, which has the
same interface and brings its own special ids in `vocab_info`; `init.source=<HF dir>`
sets that path (training/pretrained.py).

The trained model is cached under `<cache>/tokenizers/`, keyed by (corpus, algorithm,
vocab size, the dataset's content fingerprint from its TFDS metadata, the training
character cap), and reused.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import re
import time
from typing import Iterable, Iterator

import numpy as np
import sentencepiece as spm
from absl import logging

from ptlm_jax.data import downloads, vocab
from ptlm_jax.errors import UserError

MAX_LINE_CHARS = 2000
NEWLINE = '\n'
_SENTENCE_END = re.compile(r'(?<=[.!?;:"\'])\s+')
_TRAINER_VERSION = 2  # bump when the training options below change (invalidates caches)
_TRAIN_THREADS = 8  # fixed, not the CPU count: the trained pieces depend on it


_LINE_START = re.compile(r'\n(?=[^\n])')


def _to_sp(text: str) -> str:
  # After this every '\n ' marks an inserted space, so _from_sp inverts it exactly.
  return _LINE_START.sub('\n ', text)


def _from_sp(text: str) -> str:
  return text.replace(NEWLINE + ' ', NEWLINE)


def training_lines(texts: Iterable[str], max_chars: int = MAX_LINE_CHARS) -> Iterator[str]:
  """Paragraphs of `texts`, each at most `max_chars` characters, in order."""
  for text in texts:
    for paragraph in re.split(r'\n\s*\n', text):
      paragraph = paragraph.strip('\n')
      if not paragraph.strip():
        continue
      line = ''
      for sentence in _SENTENCE_END.split(paragraph) if len(paragraph) > max_chars else [paragraph]:
        while len(sentence) > max_chars:  # one endless sentence: cut at a space if possible
          cut = sentence.rfind(' ', 0, max_chars)
          cut = cut if cut > 0 else max_chars
          if line:
            yield line
            line = ''
          yield sentence[:cut]
          sentence = sentence[cut:].lstrip(' ')
        if line and len(line) + 1 + len(sentence) > max_chars:
          yield line
          line = ''
        line = f'{line} {sentence}' if line else sentence
      if line:
        yield line


class Tokenizer:
  """A SentencePiece model with the project's id layout (see `vocab.py`)."""

  def __init__(self, model_proto: bytes, path: str = ''):
    self.path = path
    self.fingerprint = hashlib.sha256(model_proto).hexdigest()[:16]
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.piece_count = self._sp.get_piece_size()
    expected = {vocab.PAD_ID: '<pad>', vocab.EOS_ID: '</s>', vocab.UNK_ID: '<unk>',
                vocab.BOS_ID: '<s>', vocab.CLS_ID: '[CLS]', vocab.SEP_ID: '[SEP]',
                vocab.MASK_ID: '[MASK]'}
    got = {i: self._sp.id_to_piece(i) for i in expected if i < self.piece_count}
    if got != expected:
      raise UserError(f'tokenizer {path or "(in memory)"} has reserved pieces {got}, '
                      f'expected {expected} (train it with this project, or set '
                      'config.data.tokenizer_path to \'\')')
    pieces = [self._sp.id_to_piece(i) for i in range(self.piece_count)]
    word_start = np.ones(self.piece_count + vocab.NUM_SENTINELS, bool)
    # A piece continues a word unless it starts with the space marker, or is a special,
    # a newline, or a sentinel; byte pieces continue whatever precedes them.
    for i, piece in enumerate(pieces):
      if i >= vocab.FIRST_ORDINARY_ID and piece != NEWLINE:
        word_start[i] = piece.startswith('\u2581')
    self.vocab_info = vocab.VocabInfo(self.piece_count, word_start=word_start)

  def encode(self, text: str) -> list[int]:
    """Ids of `text` (no BOS/EOS)."""
    return self._sp.encode(_to_sp(text))

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Ids of many texts at once, on all CPU threads."""
    return self._sp.encode([_to_sp(t) for t in texts], num_threads=os.cpu_count() or 1)

  def encode_words(self, words: list[str]) -> list[list[int]]:
    """Each word's pieces as part of a sentence (SentencePiece marks every word's start)."""
    return self.encode_batch(words)

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`: pad skipped, sentinels as '<extra_id_i>', ids past the sentinels as ' ⁇ '."""
    out, run = [], []
    size = self.vocab_info.size
    for i in (int(i) for i in ids):
      if vocab.PAD_ID < i < self.piece_count:
        run.append(i)
        continue
      if i == vocab.PAD_ID:
        continue
      if run:
        out.append(self._sp.decode(run))
        run = []
      if self.piece_count <= i < size:
        out.append(f'<extra_id_{size - 1 - i}>')
      else:
        out.append(' \u2047 ')
    if run:
      out.append(self._sp.decode(run))
    return _from_sp(''.join(out))

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(i) if i < self.piece_count else self.decode([i])


def train(texts: Iterable[str], vocab_size: int, *, model_type: str = 'unigram',
          max_chars: int = 0) -> tuple[bytes, dict]:
  """Trains a SentencePiece model on the paragraphs of `texts`; returns (proto, stats)."""
  lines, chars = [], 0
  for line in training_lines(texts):
    lines.append(_to_sp(line))
    chars += len(line)
    if max_chars and chars >= max_chars:
      break
  if not lines:
    raise UserError('no text to train the tokenizer on (the train split is empty)')
  start = time.time()
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, pad_id=vocab.PAD_ID, eos_id=vocab.EOS_ID,
        unk_id=vocab.UNK_ID, bos_id=vocab.BOS_ID,
        user_defined_symbols=list(vocab.USER_DEFINED_SYMBOLS) + [NEWLINE],
        byte_fallback=True, normalization_rule_name='nfkc', remove_extra_whitespaces=False,
        split_digits=True, character_coverage=0.9995, input_sentence_size=0,
        max_sentence_length=4 * MAX_LINE_CHARS + 64, num_threads=_TRAIN_THREADS,
        minloglevel=2)
  except RuntimeError as e:
    raise UserError(f'SentencePiece could not train {vocab_size} pieces on {chars:,} '
                    f'characters ({str(e).strip()[:200]}); lower config.data.sp_vocab_size '
                    'or use more text') from e
  stats = dict(lines=len(lines), chars=chars, seconds=round(time.time() - start, 2),
               model_type=model_type, vocab_size=vocab_size)
  return model.getvalue(), stats


def is_hf(path: str) -> bool:
  """Whether `path` names an HF tokenizer (a directory or one of its tokenizer files)."""
  path = os.path.expanduser(path)
  if os.path.isdir(path):
    return True
  if not path.endswith('.model'):
    return True
  try:
    Tokenizer(pathlib.Path(path).read_bytes(), path=path)
    return False
  except (OSError, RuntimeError):
    return False  # let `load` say what is wrong with it
  except UserError:
    return True  # a SentencePiece model with other reserved pieces: T5's spiece.model


def load(path: str):
  """A Tokenizer from a .model file, or an HFTokenizer from an HF dir or tokenizer file;
  a missing or unreadable file is a UserError."""
  from ptlm_jax.data import hf_tokenizer  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.expanduser(path)):
    raise UserError(f'cannot read tokenizer {path} (config.data.tokenizer_path): no such file')
  if is_hf(path):
    return hf_tokenizer.load(path)
  try:
    proto = pathlib.Path(path).expanduser().read_bytes()
  except OSError as e:
    raise UserError(f'cannot read tokenizer {path} (config.data.tokenizer_path): '
                    f'{e.strerror or e}') from e
  try:
    return Tokenizer(proto, path=str(path))
  except RuntimeError as e:  # not a SentencePiece model
    raise UserError(f'{path} is not a SentencePiece model (config.data.tokenizer_path)') from e


def cache_path(config) -> pathlib.Path:
  """Where the tokenizer for this config's corpus and vocabulary is cached."""
  from ptlm_jax.data import sources  # pylint: disable=g-import-not-at-top  (tfds: heavy)
  d = config.data
  key = json.dumps([sources.fingerprint(config, d.train_split), d.sp_model_type,
                    d.sp_vocab_size, d.sp_train_chars, _TRAINER_VERSION])
  digest = hashlib.sha256(key.encode()).hexdigest()[:12]
  slug = re.sub(r'[^A-Za-z0-9_.-]+', '_', sources.tfds_name(d.corpus))
  return (downloads.cache_dir() / 'tokenizers' /
          f'{slug}-{d.sp_model_type}{d.sp_vocab_size}-{digest}.model')


def get_tokenizer(config):
  """The tokenizer of `config`: config.data.tokenizer_path, or one trained for the corpus."""
  if config.data.tokenizer_path:
    return load(config.data.tokenizer_path)
  path = cache_path(config)
  if path.exists():
    return load(str(path))
  from ptlm_jax.data import sources  # pylint: disable=g-import-not-at-top
  d = config.data
  logging.info('training a %d-piece %s tokenizer on %s/%s', d.sp_vocab_size,
               d.sp_model_type, d.corpus, d.train_split)
  proto, stats = train(sources.texts(config, d.train_split), d.sp_vocab_size,
                       model_type=d.sp_model_type, max_chars=d.sp_train_chars)
  logging.info('tokenizer trained: %s', stats)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.with_suffix('.json').write_text(json.dumps(stats))
  tmp = path.with_name(f'.{path.name}.{os.getpid()}')
  tmp.write_bytes(proto)
  os.replace(tmp, path)  # atomic: a concurrent reader sees no file or the whole file
  return load(str(path))
