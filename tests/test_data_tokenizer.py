"""Tokenizer: reserved ids where vocab.py says, round trips, word starts, caching."""
import re
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm

import data_testlib as lib
from ptlm_jax import config_lib, errors
from ptlm_jax.data import sources, tokenizer, vocab


@pytest.fixture(scope='module')
def tok():
  return lib.small_tokenizer()


def test_reserved_ids_are_where_vocab_says(tok):
  sp = spm.SentencePieceProcessor(model_file=tok.path)  # read the file independently
  assert sp.get_piece_size() == lib.TEST_VOCAB == tok.piece_count
  assert [sp.id_to_piece(i) for i in range(8)] == [
      '<pad>', '</s>', '<unk>', '<s>', '[CLS]', '[SEP]', '[MASK]', '\n']
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (
      vocab.PAD_ID, vocab.EOS_ID, vocab.UNK_ID, vocab.BOS_ID)
  ids = tok.encode('[CLS] a [SEP] b [MASK]')  # user-defined symbols stay whole
  assert [i for i in ids if i < vocab.FIRST_ORDINARY_ID] == [
      vocab.CLS_ID, vocab.SEP_ID, vocab.MASK_ID]
  info = tok.vocab_info
  assert info.size == lib.TEST_VOCAB + 100
  assert config_lib.padded_vocab_size(lib.TEST_VOCAB) % 128 == 0
  assert config_lib.padded_vocab_size(lib.TEST_VOCAB) >= info.size
  assert tok.decode([info.sentinel(0), 7, info.sentinel(99)]) == '<extra_id_0>\n<extra_id_99>'
  assert info.sentinel(0) == lib.TEST_VOCAB + 99
  assert tok.decode([0, 0] + tok.encode('pad is skipped') + [0]) == 'pad is skipped'


def test_round_trip_is_exact_up_to_nfkc(tok):
  texts = ['  two leading spaces\n\n\nthree newlines \n  indented\ttab  ',
           'ligature \ufb01ne, full-width \uff21, no-break\u00a0space, caf\u00e9 \U0001F600',
           '\nstarts with a newline', 'ends with one\n', '']
  config = lib.small_config()
  texts += list(sources.texts(config, 'validation'))
  for text in texts:
    assert tok.decode(tok.encode(text)) == unicodedata.normalize('NFKC', text)
  ids = tok.encode(texts[1])
  assert vocab.UNK_ID not in ids  # byte fallback, not <unk>


def test_news_round_trip():
  tok = lib.small_tokenizer('news')
  texts = list(sources.texts(lib.small_config('news'), 'test'))[:50]
  decoded = [tok.decode(ids) for ids in tok.encode_batch(texts)]
  assert decoded == [unicodedata.normalize('NFKC', t) for t in texts]


def test_word_start_table_marks_space_prefixed_pieces(tok):
  sp = spm.SentencePieceProcessor(model_file=tok.path)
  table = tok.vocab_info.word_start
  assert table.shape == (tok.vocab_info.size,) and table.dtype == bool
  for i in range(8, sp.get_piece_size()):
    piece = sp.id_to_piece(i)
    assert table[i] == (piece.startswith('\u2581') or piece == '\n'), piece
  assert table[:8].all() and table[sp.get_piece_size():].all()  # specials and sentinels
  # A word at the start of a line is the same piece as after a space.
  after_newline, after_space = tok.encode('my\nlord'), tok.encode('my lord')
  assert after_newline[-1] == after_space[-1] and table[after_newline[-1]]


def test_training_lines_are_short_paragraphs():
  text = ('First paragraph.\nStill first.\n\n' + 'A long sentence goes on. ' * 200 +
          '\n\n' + 'x' * 5000)
  lines = list(tokenizer.training_lines([text]))
  assert lines[0] == 'First paragraph.\nStill first.'
  assert max(len(l) for l in lines) <= tokenizer.MAX_LINE_CHARS
  squash = lambda s: re.sub(r'\s+', '', s)
  assert squash(''.join(lines)) == squash(text)  # nothing dropped


def test_tokenizer_is_cached_and_keyed_by_vocab_size(tok):
  config = lib.small_config()
  path = tokenizer.cache_path(config)
  assert str(path) == tok.path
  mtime = path.stat().st_mtime_ns
  assert tokenizer.get_tokenizer(config).fingerprint == tok.fingerprint
  assert path.stat().st_mtime_ns == mtime  # loaded, not retrained
  config.data.sp_vocab_size = 900
  assert tokenizer.cache_path(config) != path


def test_missing_or_foreign_tokenizer_file_is_named(tmp_path):
  config = lib.small_config(tokenizer_path=str(tmp_path / 'nope.model'))
  with pytest.raises(errors.UserError, match='nope.model'):
    tokenizer.get_tokenizer(config)
  junk = tmp_path / 'junk.model'
  junk.write_bytes(b'not a model')
  with pytest.raises(errors.UserError, match='junk.model'):
    tokenizer.load(str(junk))


def test_vocab_size_too_large_for_the_text_is_a_user_error():
  with pytest.raises(errors.UserError, match='sp_vocab_size'):
    tokenizer.train(['tiny text only'], 5000)


def test_ids_fit_the_embedding(tok):
  ids = np.concatenate([tok.encode(t) for t in sources.texts(lib.small_config(), 'test')])
  assert ids.min() >= vocab.FIRST_ORDINARY_ID and ids.max() < tok.piece_count
