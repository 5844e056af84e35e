"""Text in, text out: `inference.load` for workdirs, model dirs and HF dirs, and the CLI.

Small stand-ins: a training workdir written with the loop's own Checkpointer (tiny
random models, the data tests' 800-piece tokenizer), HF fixture dirs with a
SentencePiece (T5) or `tokenizers` (GPT-2) vocabulary trained here.  The checks: the
ids a text becomes (sentinels, [MASK], EOS), that the CLI prints what `generate` gives
for those ids, and one-line errors.
"""
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import sentencepiece as spm

import data_testlib
from ptlm_jax import config_lib, errors
from ptlm_jax.data import vocab
from ptlm_jax.decoding import generate, inference
from ptlm_jax.hf import convert as hf_import
from ptlm_jax.main import generate as generate_cli
from ptlm_jax.training import checkpoint
from models_testing import init_params, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF = os.path.join(ROOT, 'tests', 'fixtures', 'hf')
TEXT = ('the cat sat on the mat . the dog ran to the park . a bird sang in the tree . '
        'once upon a time there was a king who ruled the land . ') * 20


@pytest.fixture(scope='module')
def tok():
  return data_testlib.small_tokenizer()


def _workdir(path, family, tok):
  """A training workdir as the loop writes it: checkpoints/<step>/{state, data, config}."""
  config = config_lib.base_config(family, 'tiny')
  config.model.update(tiny_config(family, vocab_size=config_lib.padded_vocab_size(tok.piece_count),
                                  max_len=64))
  config.data.tokenizer_path = tok.path
  _, params = init_params(config.model)
  ckpt = checkpoint.Checkpointer(str(path), config)
  ckpt.save(1, {'step': np.int32(1), 'params': params, 'opt_state': {}}, {}, config)
  ckpt.close()
  return str(path), params


@pytest.fixture(scope='module')
def workdirs(tmp_path_factory, tok):
  return {family: _workdir(tmp_path_factory.mktemp(family), family, tok)
          for family in ('gpt', 't5', 'bert')}


def _options(**kw):
  return generate.Options(**dict(dict(max_new_tokens=6), **kw))


def _without_space_before_masks(ids):
  """SentencePiece writes ' [MASK]' as a lone space piece, then [MASK]: drop that piece."""
  return [i for k, i in enumerate(ids)
          if not (k + 1 < len(ids) and ids[k + 1] == vocab.MASK_ID and i == SPACE_ID)]


SPACE_ID = 264  # '\u2581' in the data tests' tokenizer (checked below)


def test_project_codecs_map_sentinels_masks_and_eos(workdirs, tok):
  assert tok.id_to_piece(SPACE_ID) == '\u2581'
  t5 = inference.load(workdirs['t5'][0]).codec
  raw = tok.encode('The cat [MASK] on the mat [MASK]')
  assert raw.count(SPACE_ID) >= 2  # the case the codec handles does occur
  expected = _without_space_before_masks(raw)
  expected[expected.index(vocab.MASK_ID)] = tok.vocab_info.sentinel(0)
  expected[expected.index(vocab.MASK_ID)] = tok.vocab_info.sentinel(1)
  assert t5.encode('The cat <extra_id_0> on the mat <extra_id_1>') == expected + [vocab.EOS_ID]
  bert = inference.load(workdirs['bert'][0]).codec
  raw = tok.encode('The cat sat on the [MASK].')
  assert bert.encode('The cat sat on the [MASK].') == _without_space_before_masks(raw) + [
      vocab.EOS_ID]
  gpt = inference.load(workdirs['gpt'][0]).codec
  assert gpt.encode('Once upon a time') == tok.encode('Once upon a time')  # no EOS appended
  assert (gpt.eos_id, gpt.pad_id, gpt.decoder_start_id) == (vocab.EOS_ID, vocab.PAD_ID, 0)


@pytest.mark.parametrize('family, strategy', [('gpt', 'greedy'), ('gpt', 'beam'),
                                              ('t5', 'sample')])
def test_cli_prints_what_generate_gives(workdirs, tok, family, strategy):
  path, params = workdirs[family]
  prompts = ['Once upon a time', 'The cat <extra_id_0> on the mat.']
  o = _options(strategy=strategy, num_beams=2, temperature=0.8)
  printed = generate_cli.run_cli(path, prompts, None, o, seed=3)
  loaded = inference.load(path)
  ids = [loaded.codec.encode(p) for p in prompts]
  batch = np.zeros((2, max(map(len, ids))), np.int32)
  for r, row in enumerate(ids):
    batch[r, :len(row)] = row
  assert inference.options_for(loaded, o).token_limit == tok.vocab_info.size < 1024
  out = generate.generate(loaded.model, params, batch, [len(i) for i in ids],
                          inference.options_for(loaded, o),
                          rng=jax.random.key(3))
  texts = []
  for r in range(2):
    new = [t for t in np.asarray(out.tokens_BxG[r, :out.lengths_B[r]]).tolist() if t != vocab.EOS_ID]
    texts.append(tok.decode(ids[r] + new) if family == 'gpt' else tok.decode(new))
  if family == 'gpt':
    assert printed == '\n\n'.join(texts) and printed.startswith('Once upon a time')
  else:
    assert printed == '\n'.join(f'{p} -> {t}' for p, t in zip(prompts, texts))


def test_fill_mask_probabilities(workdirs, tok):
  path, params = workdirs['bert']
  printed = generate_cli.run_cli(path, [], 'The cat sat on the [MASK] and the [MASK].', _options(),
                             top_k=3)
  lines = printed.splitlines()
  assert lines[0] == 'The cat sat on the [MASK] and the [MASK].'
  assert lines[1] == '[MASK] 1:' and lines[5] == '[MASK] 2:' and len(lines) == 9
  loaded = inference.load(path)
  ids = loaded.codec.encode('The cat sat on the [MASK] and the [MASK].')
  logits = loaded.model.apply({'params': params}, np.array([ids]), np.ones((1, len(ids)), np.int32),
                              np.arange(len(ids))[None])
  at = ids.index(vocab.MASK_ID)
  probs = np.exp(logits[0, at] - logits[0, at].max())
  probs /= probs.sum()
  top = np.argsort(-probs)[:3]
  expected = [f'  {tok.id_to_piece(int(i))!r:<16} {probs[i]:.4f}' for i in top]
  assert lines[2:5] == expected


def test_model_dir_with_its_tokenizer(workdirs, tok, tmp_path):
  path, params = workdirs['gpt']
  loaded = inference.load(path)
  hf_import.save_model_dir(str(tmp_path / 'm'), params, loaded.model_config)
  with pytest.raises(errors.UserError, match='no tokenizer found'):
    inference.load(str(tmp_path / 'm'))
  shutil.copy(tok.path, tmp_path / 'm' / 'tokenizer.model')
  o = _options()
  assert (generate_cli.run_cli(str(tmp_path / 'm'), ['Once upon a time'], None, o)
          == generate_cli.run_cli(path, ['Once upon a time'], None, o))


def _hf_t5_dir(tmp_path):
  """The T5 v1.1 fixture plus an HF-style spiece.model (pad 0, eos 1, unk 2; few pieces)."""
  shutil.copytree(os.path.join(HF, 't5_v1_1'), tmp_path / 't5')
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(TEXT.split(' . ')), model_prefix=str(tmp_path / 't5' / 'spiece'),
      vocab_size=32, hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      minloglevel=2)
  return str(tmp_path / 't5')


def test_hf_t5_dir_reads_spiece_model(tmp_path):
  path = _hf_t5_dir(tmp_path)
  loaded = inference.load(path)
  sp = spm.SentencePieceProcessor(model_file=os.path.join(path, 'spiece.model'))
  n = sp.get_piece_size()
  ids = loaded.codec.encode('the cat <extra_id_0> on the mat')
  assert ids == sp.encode('the cat') + [n + 99] + sp.encode('on the mat') + [1]  # as HF T5
  assert loaded.codec.decode([n + 99] + sp.encode('sat') + [n + 98]) == (
      '<extra_id_0> sat <extra_id_1>')
  printed = generate_cli.run_cli(path, ['the cat <extra_id_0> on the mat'], None,
                             _options(strategy='beam'))
  out = generate.generate(loaded.model, loaded.params, np.array([ids]), [len(ids)],
                          inference.options_for(loaded, _options(strategy='beam')))
  new = [t for t in np.asarray(out.tokens_BxG[0, :out.lengths_B[0]]).tolist() if t != 1]
  assert printed == loaded.codec.decode(new)


def test_hf_gpt2_dir_with_tokenizers_library(tmp_path):
  tokenizers = pytest.importorskip('tokenizers')
  shutil.copytree(os.path.join(HF, 'gpt2'), tmp_path / 'gpt2')
  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator([TEXT], vocab_size=400, special_tokens=['<|endoftext|>'])
  bpe.save_model(str(tmp_path / 'gpt2'))  # vocab.json + merges.txt, as GPT-2 ships them
  loaded = inference.load(str(tmp_path / 'gpt2'))
  assert loaded.codec.eos_id == 1  # from the fixture's config.json
  assert loaded.codec.encode('once upon a time') == bpe.encode('once upon a time').ids
  printed = generate_cli.run_cli(str(tmp_path / 'gpt2'), ['once upon a time'], None, _options())
  assert printed.startswith('once upon a time')
  bpe.save(str(tmp_path / 'tokenizer.json'))
  same = generate_cli.run_cli(str(tmp_path / 'gpt2'), ['once upon a time'], None, _options(),
                          tokenizer=str(tmp_path / 'tokenizer.json'))
  assert same == printed


def test_hf_bert_dir_fills_masks_with_wordpiece(tmp_path):
  pytest.importorskip('tokenizers')
  shutil.copytree(os.path.join(HF, 'bert_mlm'), tmp_path / 'bert')
  words = sorted(set(TEXT.split()))
  vocab_txt = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + words  # as BERT's vocab.txt
  (tmp_path / 'bert' / 'vocab.txt').write_text('\n'.join(vocab_txt) + '\n')
  loaded = inference.load(str(tmp_path / 'bert'))
  ids = loaded.codec.encode('the cat sat on the [MASK] .')
  word = {w: i for i, w in enumerate(vocab_txt)}
  assert ids == [2] + [word[w] for w in 'the cat sat on the'.split()] + [4, word['.'], 3]
  assert loaded.codec.mask_id == 4 and loaded.codec.eos_id is None
  (choices,) = inference.fill_mask_text(loaded, 'the cat sat on the [MASK] .', top_k=3)
  (row,) = generate.fill_mask(loaded.model, loaded.params, np.array([ids]), [len(ids)], 4, 3)
  assert [p for _, p in choices] == [p for _, p in row[0][1]]
  assert [t for t, _ in choices] == [loaded.codec.token(i) for i, _ in row[0][1]]


def test_missing_tokenizers_library_is_a_user_error(tmp_path, monkeypatch):
  shutil.copytree(os.path.join(HF, 'gpt2'), tmp_path / 'gpt2')
  (tmp_path / 'gpt2' / 'vocab.json').write_text('{}')
  (tmp_path / 'gpt2' / 'merges.txt').write_text('')
  monkeypatch.setitem(sys.modules, 'tokenizers', None)  # import fails as if not installed
  with pytest.raises(errors.UserError, match=r'needs HF\'s tokenizers library.*pip install'):
    inference.load(str(tmp_path / 'gpt2'))


@pytest.mark.parametrize('args, message', [
    (dict(workdir='/nonexistent/run', prompts=['x']), 'no such directory'),
    (dict(workdir='BERT', prompts=['x']), 'it fills masks'),
    (dict(workdir='GPT', fill_mask='a [MASK]'), 'needs a BERT masked-LM'),
    (dict(workdir='GPT', prompts=['x'], fill_mask='a [MASK]'), 'not both'),
    (dict(workdir='GPT', prompts=['x'], options=generate.Options(top_p=2.0)), 'top_p=2.0'),
    (dict(workdir='GPT', prompts=['x'], tokenizer='/nonexistent.model'), 'no such file'),
    (dict(workdir='GPT', prompts=['x'] * 1, options=generate.Options(max_new_tokens=99)),
     "exceeds the model's 64 positions"),
    (dict(workdir='BERT', fill_mask='no mask here'), 'has no \\[MASK\\]'),
])
def test_user_errors(workdirs, args, message):
  args = dict(args)
  args['workdir'] = {'GPT': workdirs['gpt'][0], 'BERT': workdirs['bert'][0]}.get(
      args['workdir'], args['workdir'])
  args.setdefault('prompts', [])
  args.setdefault('fill_mask', None)
  args.setdefault('options', _options())
  with pytest.raises(errors.UserError, match=message):
    generate_cli.run_cli(**args)


def test_command_line_errors_are_one_line_and_exit_2():
  for flags, message in ((['--workdir=/nonexistent', '--prompt=x'], 'no such directory'),
                         (['--workdir=/nonexistent', '--prompt=x', '--strategy=nucleus'],
                          "strategy='nucleus' is invalid")):
    proc = subprocess.run([sys.executable, '-m', 'ptlm_jax.main.generate', *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count('\n') == 0 and message in proc.stderr
