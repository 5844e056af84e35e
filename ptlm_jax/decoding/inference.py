"""Text in, text out: a model and its tokenizer from any checkpoint, used by the generate CLI.

  loaded = inference.load('runs/gpt')       # or a ptlm_jax model dir, or an HF checkpoint dir
  inference.generate_text(loaded, ['Once upon a time'], generate.Options(strategy='beam'))
  inference.fill_mask_text(loaded, 'The cat sat on the [MASK].', top_k=5)   # BERT

`python -m ptlm_jax.main.generate` is the command line over these.

Weights come from `pretrained.from_pretrained` (the latest checkpoint of a training run,
or what `hf.convert` reads).  The tokenizer, unless `tokenizer=PATH` names one:
  - training workdir: the run's `data.tokenizer_path`, else the tokenizer the run trained
    and cached for its corpus (never trained here);
  - ptlm_jax model dir: a `tokenizer.model` / `spiece.model` / `tokenizer.json` inside it;
  - HF dir: `spiece.model` (T5; SentencePiece, read directly), else `tokenizer.json`,
    `vocab.txt` (BERT WordPiece) or `vocab.json` + `merges.txt` (GPT-2 byte-level BPE),
    which need HF's `tokenizers` library (the optional extra `pip install -e .[hf]`).
Special ids (EOS, pad, decoder start, [MASK]) come from the project's vocabulary for
ptlm_jax tokenizers and from the HF `config.json` / tokenizer otherwise.

Text conventions match what each model was trained on: a T5 input ends with EOS (HF T5
and this project's span corruption); written sentinels `<extra_id_i>` become sentinel ids;
a BERT input with this project's tokenizer is a document followed by EOS, with HF's the
tokenizer adds [CLS] ... [SEP]; a [MASK] takes the space before it (as a masked word
does).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, NamedTuple

import numpy as np

from ptlm_jax import errors, families
from ptlm_jax.data import tokenizer as tokenizer_lib, vocab
from ptlm_jax.decoding import generate
from ptlm_jax.training import checkpoint, pretrained

UserError = errors.UserError
_SENTINEL = re.compile(r'<extra_id_(\d+)>')
_SPACE_PIECE = '\u2581'


@dataclasses.dataclass
class Codec:
  """Text <-> the ids one model reads and writes, with its special ids."""
  encode: Callable[[str], list[int]]   # a prompt / encoder input / BERT input, as the model expects
  decode: Callable[[list[int]], str]   # new tokens (without the final EOS) to text
  token: Callable[[int], str]          # one id as a readable piece (fill-mask tables)
  eos_id: int | None
  pad_id: int
  decoder_start_id: int = 0
  mask_id: int | None = None
  path: str = ''
  size: int = 0                        # ids the tokenizer can decode (0 = unknown)


class Loaded(NamedTuple):
  model: Any
  params: Any
  model_config: Any
  codec: Codec


# ---------------------------------------------------------------------------
# Tokenizer back ends.

def _project_codec(tok: tokenizer_lib.Tokenizer, family: str) -> Codec:
  """This project's SentencePiece tokenizer (ids of data/vocab.py)."""
  info = tok.vocab_info

  def encode(text: str) -> list[int]:
    # T5 sentinels are not SentencePiece pieces: write them as [MASK] (a user-defined piece
    # T5 never uses), then swap the sentinel ids back in, in order.
    sentinels = [info.sentinel(int(i)) for i in _SENTINEL.findall(text)] if families.get(family).encoder_decoder else []
    out = []
    for i in tok.encode(_SENTINEL.sub('[MASK]', text) if sentinels else text):
      if i == vocab.MASK_ID:
        if out and tok.id_to_piece(out[-1]) == _SPACE_PIECE:
          out.pop()  # the masked word (or span) carries its own leading space
        if sentinels:
          i = sentinels.pop(0)
      out.append(i)
    return out + ([vocab.EOS_ID] if not families.get(family).decoder_only else [])

  return Codec(encode, tok.decode, tok.id_to_piece, vocab.EOS_ID, vocab.PAD_ID, vocab.PAD_ID,
               vocab.MASK_ID, tok.path, info.size)


class _SentencePieceT5:
  """HF T5's spiece.model: pad 0, eos 1, unk 2; sentinel i = piece_count + 99 - i."""

  def __init__(self, path: str):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self.sp = spm.SentencePieceProcessor()
    try:
      self.sp.Load(path)
    except (OSError, RuntimeError) as e:
      raise UserError(f'{path} is not a readable SentencePiece model ({e})') from None
    self.size = self.sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    out = []
    for k, chunk in enumerate(_SENTINEL.split(text)):
      if k % 2:  # the captured sentinel number
        out.append(self.size + 99 - int(chunk))
      elif chunk.strip():
        out.extend(self.sp.encode(chunk.strip()))
    return out + [1]

  def decode(self, ids) -> str:
    out, run = [], []
    for i in (int(i) for i in ids):
      if 1 < i < self.size:  # not pad, not EOS
        run.append(i)
        continue
      if run:
        out.append(self.sp.decode(run))
        run = []
      if i >= self.size:
        out.append(f'<extra_id_{self.size + 99 - i}>')
    if run:
      out.append(self.sp.decode(run))
    return ' '.join(out)

  def token(self, i: int) -> str:
    return self.sp.id_to_piece(i) if i < self.size else f'<extra_id_{self.size + 99 - i}>'


def _hf_tokenizers(path: str, kind: str):
  """An HF `tokenizers.Tokenizer` from tokenizer.json, vocab.txt or vocab.json + merges.txt."""
  try:
    import tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f'{path} needs HF\'s tokenizers library, which is not installed: '
                    'pip install "tokenizers>=0.20" (or pip install -e ".[hf]"), or pass '
                    '--tokenizer=<a SentencePiece .model>') from None
  try:
    if kind == 'json':
      return tokenizers.Tokenizer.from_file(path)
    if kind == 'wordpiece':
      lowercase = _tokenizer_config(os.path.dirname(path)).get('do_lower_case', True)
      return tokenizers.BertWordPieceTokenizer(path, lowercase=lowercase)
    return tokenizers.ByteLevelBPETokenizer(path, os.path.join(os.path.dirname(path), 'merges.txt'))
  except Exception as e:  # pylint: disable=broad-except  (the library raises plain Exception)
    raise UserError(f'{path}: not a readable tokenizer ({str(e).splitlines()[0][:200]})') from None


def _tokenizer_config(directory: str) -> dict:
  try:
    with open(os.path.join(directory, 'tokenizer_config.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _hf_config(directory: str) -> dict:
  try:
    with open(os.path.join(directory, 'config.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _ids_from_hf_config(hf_config: dict, family: str) -> dict:
  eos = hf_config.get('eos_token_id', 1 if families.get(family).encoder_decoder else None)
  eos = eos[0] if isinstance(eos, list) else eos
  pad = hf_config.get('pad_token_id')
  return dict(eos_id=None if families.get(family).bidirectional else eos,
              pad_id=pad if pad is not None else (eos if eos is not None else 0),
              decoder_start_id=hf_config.get('decoder_start_token_id', 0) or 0)


def _file_codec(path: str, family: str, hf_config: dict) -> Codec:
  """A codec for a tokenizer file of any supported kind."""
  name = os.path.basename(path)
  if name.endswith('.model'):
    if not tokenizer_lib.is_hf(path):
      return _project_codec(tokenizer_lib.load(path), family)
    t5 = _SentencePieceT5(path)  # an HF T5 vocabulary (its own special ids)
    ids = dict(dict(eos_id=1, pad_id=0, decoder_start_id=0), **_ids_from_hf_config(hf_config, family))
    return Codec(t5.encode, t5.decode, t5.token, **ids, path=path, size=t5.size + 100)
  kind = {'tokenizer.json': 'json', 'vocab.txt': 'wordpiece', 'vocab.json': 'bpe'}.get(name)
  if kind is None and name.endswith('.json'):
    kind = 'json'
  if kind is None:
    raise UserError(f'--tokenizer={path} is not a tokenizer file: expected a SentencePiece '
                    '.model, tokenizer.json, vocab.txt or vocab.json (+ merges.txt)')
  tok = _hf_tokenizers(path, kind)
  ids = _ids_from_hf_config(hf_config, family)
  mask_id = tok.token_to_id('[MASK]')
  if ids['eos_id'] is None and not families.get(family).bidirectional:
    ids['eos_id'] = tok.token_to_id('</s>') or tok.token_to_id('<|endoftext|>')
  return Codec(lambda text: tok.encode(text).ids,
               lambda ids: tok.decode(list(ids), skip_special_tokens=True),
               lambda i: tok.id_to_token(i) or str(i), mask_id=mask_id, path=path,
               size=tok.get_vocab_size(), **ids)


def _find_tokenizer_file(directory: str) -> str | None:
  for name in ('spiece.model', 'tokenizer.model', 'tokenizer.json', 'vocab.txt', 'vocab.json'):
    if os.path.exists(os.path.join(directory, name)):
      return os.path.join(directory, name)
  return None


def _workdir_tokenizer(workdir: str) -> str:
  config = checkpoint.run_config(workdir)
  if config.data.tokenizer_path:
    return config.data.tokenizer_path
  try:
    path = tokenizer_lib.cache_path(config)
  except Exception as e:  # pylint: disable=broad-except  (the corpus is gone: TFDS errors)
    raise UserError(f'{workdir}: cannot locate the tokenizer this run trained ({type(e).__name__}: '
                    f'{str(e).splitlines()[0][:150]}); pass --tokenizer=PATH') from None
  if not path.exists():
    raise UserError(f'{workdir}: the tokenizer this run trained is not in the cache ({path}); '
                    'pass --tokenizer=PATH')
  return str(path)


def load_codec(path: str, family: str, tokenizer: str = '') -> Codec:
  """The codec of the model at `path` (see the module docstring for where it is looked for)."""
  directory = os.path.expanduser(path)
  hf_config = _hf_config(directory)
  if tokenizer:
    tokenizer = os.path.expanduser(tokenizer)
    if os.path.isdir(tokenizer):
      found = _find_tokenizer_file(tokenizer)
      if found is None:
        raise UserError(f'--tokenizer={tokenizer}: no spiece.model, tokenizer.model, '
                        'tokenizer.json, vocab.txt or vocab.json in it')
      tokenizer = found
    elif not os.path.exists(tokenizer):
      raise UserError(f'--tokenizer={tokenizer}: no such file')
    return _file_codec(tokenizer, family, hf_config)
  if checkpoint.is_workdir(directory):
    return _file_codec(_workdir_tokenizer(directory), family, hf_config)
  found = _find_tokenizer_file(directory) if os.path.isdir(directory) else None
  if found is None:
    raise UserError(f'{path}: no tokenizer found (spiece.model, tokenizer.model, tokenizer.json, '
                    'vocab.txt, vocab.json); pass --tokenizer=PATH')
  return _file_codec(found, family, hf_config)


def load(path: str, tokenizer: str = '', step: int | None = None, **model_overrides) -> Loaded:
  """Model, params, model config and codec of a training workdir, model dir or HF dir."""
  if not os.path.exists(os.path.expanduser(path)):
    raise UserError(f'--workdir={path}: no such directory (expected a training workdir, a '
                    'ptlm_jax model dir or an HF checkpoint dir)')
  model, params, model_config = pretrained.from_pretrained(os.path.expanduser(path), step,
                                                           **model_overrides)
  codec = load_codec(path, model_config.family, tokenizer)
  return Loaded(model, params, model_config, codec)


# ---------------------------------------------------------------------------
# Text in, text out.

def _batch(id_lists: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  lengths = np.array([len(ids) for ids in id_lists], np.int32)
  batch = np.full((len(id_lists), max(lengths.max(), 1)), pad_id, np.int32)
  for r, ids in enumerate(id_lists):
    batch[r, :len(ids)] = ids
  return batch, lengths


def options_for(loaded: Loaded, options: generate.Options) -> generate.Options:
  """`options` with the codec's EOS, pad and decoder start ids, limited to ids it decodes."""
  c = loaded.codec
  return dataclasses.replace(options, eos_id=c.eos_id, pad_id=c.pad_id,
                             decoder_start_id=c.decoder_start_id, token_limit=c.size)


def generate_text(loaded: Loaded, prompts: list[str], options: generate.Options,
                  seed: int = 0) -> list[str]:
  """GPT: each prompt followed by its continuation; T5: the output text of each input."""
  import jax  # pylint: disable=g-import-not-at-top
  codec = loaded.codec
  encoded = [codec.encode(p) for p in prompts]
  for prompt, ids in zip(prompts, encoded):
    if not ids:
      raise UserError(f'--prompt={prompt!r} encodes to no tokens: give some text to continue')
  batch, lengths = _batch(encoded, codec.pad_id)
  out = generate.generate(loaded.model, loaded.params, batch, lengths, options,
                          rng=jax.random.key(seed))
  tokens, counts = np.asarray(out.tokens_BxG), np.asarray(out.lengths_B)
  texts = []
  for ids, row, n in zip(encoded, tokens, counts):
    new = row[:n].tolist()
    if new and new[-1] == options.eos_id:
      new = new[:-1]
    # GPT: decode prompt and continuation together (a piece's leading space survives).
    texts.append(codec.decode(ids + new) if families.get(loaded.model_config.family).decoder_only
                 else codec.decode(new))
  return texts


def fill_mask_text(loaded: Loaded, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
  """For each [MASK] in `text` (in order), the top_k (token, probability) pairs."""
  codec = loaded.codec
  if codec.mask_id is None:
    raise UserError(f'the tokenizer {codec.path} has no [MASK] token')
  ids = codec.encode(text)
  if codec.mask_id not in ids:
    raise UserError(f'--fill_mask={text!r} has no [MASK] to fill')
  batch, lengths = _batch([ids], codec.pad_id)
  (row,) = generate.fill_mask(loaded.model, loaded.params, batch, lengths, codec.mask_id, top_k)
  return [[(codec.token(i), p) for i, p in choices] for _, choices in row]
