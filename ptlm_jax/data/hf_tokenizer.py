"""An HF checkpoint's own tokenizer, with the interface of `tokenizer.Tokenizer`.

  tok = hf_tokenizer.load('/ckpt/bert-base-uncased')   # a directory, or a file in it
  tok.encode('Hello world')      # ids without specials: transformers'
                                 # tokenizer(text, add_special_tokens=False).input_ids
  tok.vocab_info                 # sizes, special ids, ordinary ids, word starts

What a directory may hold, in the order looked for (transformers' fast tokenizers read
the first; the others are what older checkpoints ship):
  tokenizer.json             any HF fast tokenizer (WordPiece, byte-level BPE, Unigram)
  vocab.txt                  BERT WordPiece (`do_lower_case` from tokenizer_config.json)
  vocab.json + merges.txt    GPT-2 byte-level BPE
  spiece.model               T5 SentencePiece (pad 0, EOS 1, unk 2; 100 sentinels above it)
Special tokens come from special_tokens_map.json / tokenizer_config.json, else their usual
names ([PAD], [CLS], [SEP], [MASK], <pad>, </s>, <|endoftext|>, ...).  What a family lacks is
filled the way HF does it: BERT ends a document with [SEP]; GPT-2 pads with its EOS; T5 and
GPT-2 join a pair with their EOS.  T5 sentinels `<extra_id_i>` must sit at the top of the
vocabulary counting down (id = piece_count + 99 - i), the layout `vocab.VocabInfo` assumes.

Needs HF's `tokenizers` library (a core dependency), except for spiece.model, which
sentencepiece reads.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Iterable

import numpy as np

from ptlm_jax.data import vocab
from ptlm_jax.errors import UserError

FILES = ('tokenizer.json', 'vocab.txt', 'vocab.json', 'spiece.model')
_SENTINEL = re.compile(r'<extra_id_(\d+)>')
_USUAL_NAMES = {
    'pad': ('[PAD]', '<pad>'), 'eos': ('</s>', '<|endoftext|>'),
    'unk': ('[UNK]', '<unk>'), 'bos': ('<s>',), 'cls': ('[CLS]',), 'sep': ('[SEP]',),
    'mask': ('[MASK]', '<mask>'),
}


def find_file(directory: str) -> str | None:
  """The tokenizer file of an HF dir (see the module docstring), or None."""
  for name in FILES:
    if os.path.exists(os.path.join(directory, name)):
      return os.path.join(directory, name)
  return None


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding='utf-8') as f:
      value = json.load(f)
    return value if isinstance(value, dict) else {}
  except (OSError, ValueError):
    return {}


def _content(value) -> str | None:
  if isinstance(value, dict):
    value = value.get('content')
  return value if isinstance(value, str) else None


class _SentencePieceBackend:
  """spiece.model through sentencepiece, sentinels added above its pieces (as T5Tokenizer)."""

  def __init__(self, path: str, extra_ids: int):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self.sp = spm.SentencePieceProcessor()
    try:
      self.sp.Load(path)
    except (OSError, RuntimeError) as e:
      raise UserError(f'{path} is not a readable SentencePiece model ({e})') from None
    self.pieces = self.sp.get_piece_size()
    self.extra_ids = extra_ids

  def vocab(self) -> dict[str, int]:
    table = {self.sp.id_to_piece(i): i for i in range(self.pieces)}
    table.update({f'<extra_id_{i}>': self.pieces + self.extra_ids - 1 - i
                  for i in range(self.extra_ids)})
    return table

  def encode(self, text: str) -> list[int]:
    out = []
    for k, chunk in enumerate(_SENTINEL.split(text)):
      if k % 2:
        out.append(self.pieces + self.extra_ids - 1 - int(chunk))
      elif chunk.strip():
        out.extend(self.sp.encode(chunk.strip()))
    return out

  def decode(self, ids: list[int]) -> str:
    return self.sp.decode([i for i in ids if 2 < i < self.pieces])


def _tokenizers_backend(path: str, kind: str, lowercase: bool):
  try:
    import tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f'{path} needs HF\'s tokenizers library: pip install "tokenizers>=0.20"'
                    ) from None
  try:
    if kind == 'tokenizer.json':
      return tokenizers.Tokenizer.from_file(path)
    if kind == 'vocab.txt':
      return tokenizers.BertWordPieceTokenizer(path, lowercase=lowercase)._tokenizer  # pylint: disable=protected-access
    merges = os.path.join(os.path.dirname(path), 'merges.txt')
    if not os.path.exists(merges):
      raise UserError(f'{path}: a byte-level BPE vocabulary needs merges.txt beside it')
    return tokenizers.ByteLevelBPETokenizer(path, merges)._tokenizer  # pylint: disable=protected-access
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (the library raises plain Exception)
    raise UserError(f'{path}: not a readable tokenizer ({str(e).splitlines()[0][:200]})') from None


class HFTokenizer:
  """A tokenizer of an HF dir: encode / decode without specials, and its VocabInfo."""

  def __init__(self, path: str):
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    file = find_file(path) if os.path.isdir(path) else path
    if file is None:
      raise UserError(f'{path}: no tokenizer in it (expected one of {", ".join(FILES)})')
    name = os.path.basename(file)
    self.path = file
    self.kind = name if name in FILES[:3] else 'spiece.model' if name.endswith('.model') else (
        'tokenizer.json' if name.endswith('.json') else '')
    if not self.kind:
      raise UserError(f'{file} is not a tokenizer file: expected one of {", ".join(FILES)}')
    settings = {**_read_json(os.path.join(directory, 'tokenizer_config.json')),
                **_read_json(os.path.join(directory, 'special_tokens_map.json'))}
    digest = hashlib.sha256()
    with open(file, 'rb') as f:
      digest.update(f.read())
    self.fingerprint = digest.hexdigest()[:16]
    if self.kind == 'spiece.model':
      self._sp = _SentencePieceBackend(file, int(settings.get('extra_ids', vocab.NUM_SENTINELS)))
      self._tok = None
      table = self._sp.vocab()
    else:
      self._sp = None
      self._tok = _tokenizers_backend(file, self.kind, settings.get('do_lower_case', True))
      table = self._tok.get_vocab(with_added_tokens=True)
    self._id_to_token = {i: t for t, i in table.items()}
    self.vocab_info = self._vocab_info(table, settings)
    self.piece_count = self.vocab_info.piece_count
    # GPT-2's byte-level BPE marks a word's leading space in the piece ('Ġword'): a word
    # encoded alone takes that space, as transformers' is_split_into_words with
    # add_prefix_space=True does.  WordPiece and SentencePiece need none.
    self._word_prefix = ' ' if self.encode(' a') != self.encode('a') else ''

  def _vocab_info(self, table: dict[str, int], settings: dict) -> vocab.VocabInfo:
    size = max(table.values()) + 1
    ids = {}
    for key, names in _USUAL_NAMES.items():
      named = _content(settings.get(f'{key}_token'))
      candidates = ([named] if named else []) + list(names)
      ids[key] = next((table[n] for n in candidates if n in table), None)
    ids['eos'] = ids['eos'] if ids['eos'] is not None else ids['sep']
    ids['bos'] = ids['bos'] if ids['bos'] is not None else ids['cls']
    ids['sep'] = ids['sep'] if ids['sep'] is not None else ids['eos']
    if ids['eos'] is None:
      raise UserError(f'{self.path}: no end-of-text token ([SEP], </s> or <|endoftext|>), so '
                      'documents cannot be delimited')
    ids['pad'] = ids['pad'] if ids['pad'] is not None else ids['eos']
    sentinels = {int(m.group(1)): i for t, i in table.items() if (m := _SENTINEL.fullmatch(t))}
    piece_count = size - len(sentinels)
    expected = {k: piece_count + len(sentinels) - 1 - k for k in range(len(sentinels))}
    if sentinels != expected:
      raise UserError(f'{self.path}: its <extra_id_i> tokens are not the top {len(sentinels)} '
                      'ids counting down (T5\'s layout), which the objectives assume')
    special = set(ids.values()) - {None}
    if self._tok is not None:
      special |= {i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
    ordinary = np.array([i for i in range(piece_count) if i not in special], np.int32)
    word_start = np.ones(size, bool)
    wordpiece = any(t.startswith('##') for t in table)
    for token, i in table.items():
      if i in special or i >= piece_count:
        continue
      word_start[i] = (not token.startswith('##')) if wordpiece else token[:1] in ('\u0120', '\u2581')
    return vocab.VocabInfo(piece_count, num_sentinels=len(sentinels), word_start=word_start,
                           pad_id=ids['pad'], eos_id=ids['eos'], unk_id=ids['unk'],
                           bos_id=ids['bos'], cls_id=ids['cls'], sep_id=ids['sep'],
                           mask_id=ids['mask'], ordinary_ids=ordinary)

  def encode(self, text: str) -> list[int]:
    """Ids of `text`, no special tokens added."""
    if self._sp is not None:
      return self._sp.encode(text)
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    if self._sp is not None:
      return [self._sp.encode(t) for t in texts]
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def encode_words(self, words: list[str]) -> list[list[int]]:
    """Each word's pieces as part of a sentence (NER labels, QA words)."""
    return self.encode_batch([self._word_prefix + w for w in words])

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, special tokens and padding rows of the embedding skipped."""
    size = self.vocab_info.size
    ids = [int(i) for i in ids if 0 <= int(i) < size]
    if self._sp is not None:
      return self._sp.decode(ids)
    return self._tok.decode(ids, skip_special_tokens=True)

  def id_to_piece(self, i: int) -> str:
    return self._id_to_token.get(int(i), f'<id {int(i)}>')

  def token_to_id(self, token: str) -> int | None:
    return next((i for i, t in self._id_to_token.items() if t == token), None)


def load(path: str) -> HFTokenizer:
  return HFTokenizer(os.path.expanduser(path))
