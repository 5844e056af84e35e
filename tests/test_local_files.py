"""Your own data: local corpus and task files, their errors, and the CLI's one-line errors.

Fixtures are written by the tests (small .txt / .jsonl / .csv / .tsv files); the CLI
tests run `python -m ptlm_jax.main` as a user would, at a tiny size for a few steps.
"""
import csv
import gzip
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from ptlm_jax import config_lib
from ptlm_jax.data import local_files
from ptlm_jax.errors import UserError
from ptlm_jax.finetune import tasks as task_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SYLLABLES = 'ka lo mi ne ru sa to vi ba de fo gu ha je pi ro su ti wo yo za an el is on ur'


def _sentences(seed: int, count: int) -> list[str]:
  """Made-up sentences with enough distinct pieces to train a small tokenizer on."""
  rng = random.Random(seed)
  syllables = _SYLLABLES.split()
  words = [''.join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))
           for _ in range(300)]
  return [' '.join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + '.'
          for _ in range(count)]


def write_corpus(folder) -> dict:
  """3 text files of 30 blank-line separated documents, a .jsonl.gz validation file."""
  os.makedirs(folder / 'train', exist_ok=True)
  sentences = iter(_sentences(0, 400))
  docs = []
  for part in range(3):
    chunk = ['\n'.join(next(sentences) for _ in range(1 + d % 3)) for d in range(30)]
    # Windows line ends, and runs of blank lines, still separate documents.
    (folder / 'train' / f'part{part}.txt').write_text('\n\n\n'.join(chunk) + '\n')
    docs += chunk
  val = [next(sentences) + ' ' + next(sentences) for _ in range(12)]
  with gzip.open(folder / 'val.jsonl.gz', 'wt', encoding='utf-8') as f:
    for i, text in enumerate(val):
      f.write(json.dumps({'id': i, 'text': text}) + '\n')
  return dict(train=f'{folder}/train/*.txt', validation=f'{folder}/val.jsonl.gz', docs=docs,
              val=val)


def write_table(path, header, rows, delimiter=','):
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
  return str(path)


def corpus_config(files: dict, **data):
  c = config_lib.base_config('gpt', 'tiny')
  c.data.update(corpus='files', train_files=files['train'],
                validation_files=files['validation'], **data)
  return c


def task_config(train_file, validation_file, arg='bert', **task):
  c = task_configs.from_files(
      task_configs.finish(task_configs.start(arg, 'classification'), arg, train_examples=1),
      arg)
  c.task.update(train_file=str(train_file), validation_file=str(validation_file), **task)
  return c


# ---------------------------------------------------------------------------
# Reading files.

def test_plain_text_documents_are_separated_by_blank_lines(tmp_path):
  path = tmp_path / 'a.txt'
  path.write_bytes(b'\xef\xbb\xbfone\r\nstill one\r\n\r\n\n  \ntwo\n\nthree')  # BOM, CRLF
  assert list(local_files.documents(str(path), 'text')) == [
      (1, 'one\nstill one'), (6, 'two'), (8, 'three')]


def _messy_text(seed: int) -> str:
  """Paragraphs of 1-4 lines between runs of blank, whitespace-only and CRLF lines."""
  rng = random.Random(seed)
  sentences = iter(_sentences(seed, 400))
  gaps = ['\n', '\n\n', '\n  \n', '\r\n\r\n', '\n\t\n\n']
  out = ['  \n\n'] if seed % 2 else []  # a file may start with blank lines
  for _ in range(60):
    out.append('\n'.join(next(sentences) for _ in range(rng.randint(1, 4))))
    out.append('\n' + rng.choice(gaps))
  return ''.join(out)


@pytest.mark.parametrize('chunk_bytes', [37, 101, 1000])
def test_byte_range_chunks_hold_every_document_once(tmp_path, monkeypatch, chunk_bytes):
  monkeypatch.setattr(local_files, 'CHUNK_BYTES', chunk_bytes)
  (tmp_path / 'a.txt').write_text(_messy_text(1), encoding='utf-8')
  (tmp_path / 'b.txt').write_text(_messy_text(2) + 'no newline at the end', encoding='utf-8')
  with open(tmp_path / 'c.jsonl', 'w', encoding='utf-8') as f:
    for i, text in enumerate(_sentences(3, 50)):
      f.write(json.dumps({'text': f'{i} é {text}'}) + ('\n\n' if i % 7 == 0 else '\n'))
  config = corpus_config(dict(train=f'{tmp_path}/*', validation=f'{tmp_path}/a.txt'))
  chunks = local_files.corpus_chunks(config, 'train')
  assert len(chunks) > 3 * 3  # every file is cut into byte ranges
  got = [t for c in chunks for t in local_files.chunk_texts(config, c)]
  assert got == list(local_files.corpus_texts(config, 'train'))  # same documents, same order


def test_a_bad_line_in_a_later_chunk_names_its_line_in_the_file(tmp_path, monkeypatch):
  monkeypatch.setattr(local_files, 'CHUNK_BYTES', 200)
  lines = [json.dumps({'text': t}) for t in _sentences(4, 100)]
  lines[80] = '{"text": "cut off'
  (tmp_path / 'a.jsonl').write_text('\n'.join(lines) + '\n', encoding='utf-8')
  config = corpus_config(dict(train=f'{tmp_path}/a.jsonl', validation=f'{tmp_path}/a.jsonl'))
  with pytest.raises(UserError, match=r'a.jsonl, line 81: not a JSON object') as e:
    for chunk in local_files.corpus_chunks(config, 'train'):
      local_files.chunk_texts(config, chunk)
  assert '\n' not in str(e.value)


def test_corpus_texts_in_file_order_and_disjoint_shards(tmp_path, monkeypatch):
  files = write_corpus(tmp_path)
  config = corpus_config(files)
  assert list(local_files.corpus_texts(config, 'train')) == files['docs']
  assert list(local_files.corpus_texts(config, 'validation')) == files['val']
  parts = [list(local_files.corpus_texts(config, 'train', (p, 3))) for p in range(3)]
  assert [len(p) for p in parts] == [30, 30, 30]
  assert sorted(sum(parts, [])) == sorted(files['docs'])  # disjoint, union = the split
  assert parts[1][:2] == files['docs'][1:5:3]  # every third document
  fp = local_files.fingerprint(config, 'train')
  assert fp != local_files.fingerprint(config, 'train', (1, 3))
  with open(tmp_path / 'train' / 'part1.txt', 'a', encoding='utf-8') as f:
    f.write('\nanother document\n')
  assert local_files.fingerprint(config, 'train') != fp  # a changed file: a new cache key
  monkeypatch.chdir(tmp_path)
  config.data.train_files = 'train/*.txt'
  local_files.resolve(config)  # relative globs become absolute: the saved config travels
  assert config.data.train_files == str(tmp_path / 'train' / '*.txt')


def test_csv_tsv_jsonl_rows_and_sorted_label_maps(tmp_path):
  train = write_table(tmp_path / 'train.csv', ['review', 'stars'],
                      [['good, "very" good', 'pos'], ['bad', 'neg'], ['meh', 'neu'],
                       ['fine\nover two lines', 'pos']])
  dev = write_table(tmp_path / 'dev.tsv', ['review', 'stars'], [['nice', 'pos'],
                                                               ['awful', 'neg']], '\t')
  config = task_config(train, dev, input_fields='review', target_field='stars')
  assert local_files.label_names(config) == ['neg', 'neu', 'pos']
  rows = local_files.read_task_split(config, 'train')
  assert [(r['review'], r['stars']) for r in rows] == [
      ('good, "very" good', 2), ('bad', 0), ('meh', 1), ('fine\nover two lines', 2)]
  assert [r['stars'] for r in local_files.read_task_split(config, 'validation')] == [2, 0]
  config.task.test_file = write_table(tmp_path / 'test.csv', ['review', 'stars'], [['ok', 'neu']])
  config.data.eval_split = 'test'  # evaluates the test file
  assert [r['stars'] for r in local_files.read_task_split(config, config.data.eval_split)] == [1]
  config.task.label_names = 'pos,neg,neu'  # the user's order
  assert [r['stars'] for r in local_files.read_task_split(config, 'train')] == [0, 1, 2, 0]

  # Numbers sort as numbers; JSONL keeps JSON types (ints and strings label alike).
  lines = [{'text': f'row {i}', 'label': label} for i, label in
           enumerate([10, 2, '2', 1.0, 10])]
  (tmp_path / 'n.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in lines))
  config = task_config(tmp_path / 'n.jsonl', tmp_path / 'n.jsonl')
  assert local_files.label_names(config) == ['1', '2', '10']
  assert [r['label'] for r in local_files.read_task_split(config, 'train')] == [2, 1, 1, 0, 2]
  assert len(local_files.read_task_split(config, 'train', limit=3)) == 3


def test_resolve_sets_classes_and_steps_from_the_train_file(tmp_path):
  rows = [[f'text {i}', 'abcde'[i % 5]] for i in range(100)]
  train = write_table(tmp_path / 't.csv', ['text', 'label'], rows)
  config = task_config(train, train)
  config.train.batch_size = 8
  local_files.resolve(config)
  assert config.model.num_classes == 5
  assert config.train.steps == 38  # ceil(3 epochs x 100 rows / 8)
  assert (config.train.eval_every, config.train.checkpoint_every) == (12, 12)
  assert (config.train.log_every, config.optim.warmup_steps) == (3, 3)
  config_lib.validate(config)
  config = task_config(train, train, 't5')  # text to text: the label names are the words
  config.train.steps = 7  # set by the user: kept
  local_files.resolve(config)
  assert config.task.label_words == 'a,b,c,d,e' and config.train.steps == 7
  config_lib.validate(config)


# ---------------------------------------------------------------------------
# Errors: one line naming the file, the line and what was expected.

def _bad_inputs(tmp_path):
  """(config, expected message parts) for each bad input the issue lists, and a few more."""
  ok = write_table(tmp_path / 'ok.csv', ['text', 'label'], [['a b', 'x'], ['c d', 'y']])
  empty = tmp_path / 'empty.csv'
  empty.write_text('')
  header_only = write_table(tmp_path / 'header.csv', ['text', 'label'], [])
  latin1 = tmp_path / 'latin1.csv'
  latin1.write_bytes('text,label\nok,x\ncaf\xe9,y\n'.encode('latin-1'))
  no_text = write_table(tmp_path / 'notext.csv', ['text', 'label'], [['a', 'x'], ['  ', 'y']])
  unseen = write_table(tmp_path / 'unseen.csv', ['text', 'label'], [['a', 'x'], ['b', 'z']])
  bad_json = tmp_path / 'bad.jsonl'
  bad_json.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
  ragged = tmp_path / 'ragged.csv'
  ragged.write_text('text,label\na,x\nb,y,extra\n')
  xlsx = tmp_path / 'x.xlsx'
  xlsx.write_text('')
  cases = [
      (task_config(tmp_path / 'missing.csv', ok), ['missing.csv', 'no such file']),
      (task_config(empty, ok), ['empty.csv', 'empty']),
      (task_config(header_only, ok), ['header.csv', 'empty']),
      (task_config(ok, ok, target_field='stars'), ['ok.csv', 'line 1', "no column 'stars'",
                                                    "['text', 'label']"]),
      (task_config(ok, latin1), ['latin1.csv', 'line 3', 'UTF-8']),
      (task_config(ok, ok, label_names='x,w'), ['ok.csv', 'line 3', "'y'", 'label_names']),
      (task_config(ok, unseen), ['unseen.csv', 'line 3', "'z'", 'training file']),
      (task_config(no_text, ok), ['notext.csv', 'line 3', "no text in 'text'"]),
      (task_config(ok, bad_json), ['bad.jsonl', 'line 2', 'JSON']),
      (task_config(ok, ragged), ['ragged.csv', 'line 3', '3 values']),
      (task_config(ok, xlsx), ['x.xlsx', "unknown file type '.xlsx'"]),
      (corpus_config(dict(train=str(tmp_path / 'nothing/*.txt'), validation=ok)),
       ['data.train_files', 'no file matches']),
      (corpus_config(dict(train=str(empty), validation=ok)), ['empty.csv', 'empty']),
      (corpus_config(dict(train=str(latin1), validation=ok)), ['latin1.csv', 'line 3']),
      (corpus_config(dict(train=str(ok), validation=str(no_text))),
       ['notext.csv', 'line 3', 'no text']),
  ]
  return cases


def test_every_bad_input_is_one_line_naming_file_and_line(tmp_path):
  for config, parts in _bad_inputs(tmp_path):
    with pytest.raises(UserError) as e:
      local_files.resolve(config)
      for split in ('train', 'validation'):  # the corpus: read as the tokeniser would
        if config.data.corpus == 'files':
          list(local_files.corpus_texts(config, split))
    message = str(e.value)
    assert '\n' not in message
    for part in parts:
      assert part in message, (part, message)


# ---------------------------------------------------------------------------
# The packed pipeline on a file corpus: every document once, exact resume.

def test_pipeline_on_files_counts_documents_and_resumes_exactly(tmp_path, monkeypatch):
  from ptlm_jax.data import pipeline, tokenizer  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('PTLM_DATA_DIR', str(tmp_path / 'cache'))
  files = write_corpus(tmp_path)
  config = corpus_config(files, sp_vocab_size=320, seq_len=32)
  config.train.batch_size = 4
  tok = tokenizer.get_tokenizer(config)
  assert str(tmp_path / 'cache') in tok.path
  data = pipeline.tokenized_split(config, tok, 'train')
  assert data.num_documents == 90
  assert data.num_tokens == sum(len(tok.encode(d)) + 1 for d in files['docs'])
  assert pipeline.tokenized_split(config, tok, 'validation').num_documents == 12

  it = pipeline.make_pretrain_iterator(config, tok, process_index=0, process_count=1)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(30)]  # past the end of the first epoch
  resumed = pipeline.make_pretrain_iterator(config, tok, process_index=0, process_count=1)
  resumed.set_state(json.loads(json.dumps(state)))
  for want, got in zip(expected, [next(resumed) for _ in range(30)]):
    for key in want:
      np.testing.assert_array_equal(want[key], got[key])
  it.close()
  resumed.close()


def _train_losses(workdir) -> dict:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    lines = [json.loads(line) for line in f]
  return {m['step']: m['train/loss'] for m in lines if 'train/loss' in m}


def test_training_on_files_resumes_exactly(tmp_path, monkeypatch):
  """4 steps in one go == 2 steps, then the same run continued to 4 (the data cursor too)."""
  from ptlm_jax.training import train  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('PTLM_DATA_DIR', str(tmp_path / 'cache'))
  config = corpus_config(write_corpus(tmp_path), sp_vocab_size=320, seq_len=32)
  config.model.update(vocab_size=512, d_model=32, num_heads=2, head_dim=16, d_ff=64)
  config.train.update(batch_size=4, steps=4, log_every=1, checkpoint_every=2, eval_steps=0,
                      eval_every=100)
  config.parallel.num_devices = 1
  local_files.resolve(config)
  train.run(config, str(tmp_path / 'whole'), train.build_components)
  config.train.steps = 2
  train.run(config, str(tmp_path / 'split'), train.build_components)
  config.train.steps = 4
  train.run(config, str(tmp_path / 'split'), train.build_components)
  whole, split = _train_losses(tmp_path / 'whole'), _train_losses(tmp_path / 'split')
  assert sorted(whole) == [1, 2, 3, 4] and whole == split


def test_data_prepare_on_files(tmp_path, monkeypatch):
  from ptlm_jax.main import prepare  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('PTLM_DATA_DIR', str(tmp_path / 'cache'))
  files = write_corpus(tmp_path)
  config = corpus_config(files, sp_vocab_size=320, seq_len=32)
  config.model.vocab_size = 512
  stats = prepare.prepare(config, str(tmp_path / 'stats'))
  assert len(stats['files']['train']) == 3
  assert stats['passes']['train']['documents'] == 90
  assert stats['passes']['validation']['documents'] == 12


# ---------------------------------------------------------------------------
# The real CLI.

def _cli(*flags, cache):
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='', PTLM_DATA_DIR=str(cache))
  return subprocess.run([sys.executable, '-m', 'ptlm_jax.main', *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


_TINY = ['--config.model.d_model=32', '--config.model.num_heads=2', '--config.model.head_dim=16',
         '--config.model.d_ff=64', '--config.parallel.num_devices=1']


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
  ok = write_table(tmp_path / 'ok.csv', ['text', 'label'], [['a b', 'x'], ['c d', 'y']])
  unseen = write_table(tmp_path / 'unseen.csv', ['text', 'label'], [['a', 'x'], ['b', 'z']])
  (tmp_path / 'bad').mkdir()
  latin1 = tmp_path / 'bad' / 'latin1.txt'
  latin1.write_bytes('first document\n\ncaf\xe9\n'.encode('latin-1'))
  gpt = ['--config=configs/gpt.py:tiny', f'--workdir={tmp_path}/run']
  tc = ['--config=configs/finetune/text_classification.py:bert', f'--workdir={tmp_path}/ft']
  cases = [
      (gpt + ['--config.data.batch_size=3'], 'did you mean train.batch_size'),
      (gpt + ['--config.no_such_field=1'], 'no field no_such_field; the groups are'),
      (gpt + ['--config.optim.lrr=1'], 'did you mean optim.lr?'),
      (gpt + ['--config.train.steps=abc'], 'invalid literal'),
      (gpt + ['--config.data=3'], 'is a group, not a field'),
      (['--config=configs/nope.py:tiny', f'--workdir={tmp_path}'], "no such config file"),
      (['--config=configs/gpt.py:huge', f'--workdir={tmp_path}'],
       "no variant 'huge' in configs/gpt.py: expected one of tiny, small, base, gpt2, medium, xl, gpt3"),
      (['--config=configs/gpt.py:tiny'], '--workdir'),
      (gpt + ['--config.data.corpus=files'], 'data.train_files'),
      (gpt + ['--config.data.corpus=files', f'--config.data.train_files={tmp_path}/*.txt',
              f'--config.data.validation_files={ok}'], 'no file matches'),
      (tc, 'task.train_file'),
      (tc + [f'--config.task.train_file={ok}', f'--config.task.validation_file={unseen}'],
       "unseen.csv, line 3: label 'z' does not occur in the training file"),
      (tc + [f'--config.task.train_file={tmp_path}/no.csv',
             f'--config.task.validation_file={ok}'], 'no such file'),
      # Found while the tokenizer trains on the train files: after jax starts, before compiling.
      (gpt + ['--config.data.corpus=files', f'--config.data.train_files={latin1}',
              f'--config.data.validation_files={ok}'], 'latin1.txt, line 3: not UTF-8'),
  ]
  for flags, expected in cases:
    proc = _cli(*flags, cache=tmp_path / 'cache')
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (flags, proc.returncode, proc.stderr[-2000:])
    assert lines[0].startswith('error: ') and expected in lines[0], (flags, lines)


def test_cli_pretrains_on_files_then_fine_tunes_on_csv_with_lora(tmp_path):
  files = write_corpus(tmp_path)
  pre = _cli('--config=configs/bert.py:tiny', f'--workdir={tmp_path}/bert',
             '--config.data.corpus=files', f"--config.data.train_files={files['train']}",
             f"--config.data.validation_files={files['validation']}",
             '--config.data.sp_vocab_size=320', '--config.model.vocab_size=512',
             '--config.data.seq_len=32', '--config.train.batch_size=4',
             '--config.train.steps=2', '--config.train.eval_every=2',
             '--config.train.eval_steps=1', '--config.objective.max_predictions=5', *_TINY,
             cache=tmp_path / 'cache')
  assert pre.returncode == 0, pre.stderr[-3000:]
  assert 'eval at step 2' in pre.stdout
  assert '\x1b' not in pre.stdout + pre.stderr  # no progress-bar control codes in a pipe

  rows = [[f'{w} {w} text', w] for w in ('red', 'green', 'blue') * 8]
  train = write_table(tmp_path / 'train.csv', ['review', 'colour'], rows)
  dev = write_table(tmp_path / 'dev.tsv', ['review', 'colour'], rows[:6], '\t')
  fine = _cli('--config=configs/finetune/text_classification.py:bert',
              f'--workdir={tmp_path}/ft', f'--config.init.source={tmp_path}/bert',
              f'--config.task.train_file={train}', f'--config.task.validation_file={dev}',
              '--config.task.input_fields=review', '--config.task.target_field=colour',
              '--config.data.seq_len=16', '--config.train.batch_size=8',
              '--config.peft.method=lora', '--config.parallel.num_devices=1',
              cache=tmp_path / 'cache')
  assert fine.returncode == 0, fine.stderr[-3000:]
  assert '\x1b' not in fine.stdout + fine.stderr
  metrics = [json.loads(l) for l in open(tmp_path / 'ft' / 'metrics.jsonl', encoding='utf-8')]
  evals = [m for m in metrics if 'eval/task_accuracy' in m]
  assert [m['step'] for m in evals] == [3, 6, 9]  # 3 epochs of 24 rows at batch 8
  assert 'eval/task_macro_f1' in evals[-1]  # three classes


@pytest.mark.parametrize('method, model', [('prefix', {'prefix_length': 2}),
                                           ('adapter', {'adapter_dim': 4})])
def test_fine_tuning_on_files_with_peft_methods(method, model, tmp_path, monkeypatch):
  """LoRA runs through the CLI above; the other methods here, in process, from scratch."""
  from ptlm_jax.finetune import run as finetune
  from ptlm_jax.training import train  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('PTLM_DATA_DIR', str(tmp_path / 'cache'))
  files = write_corpus(tmp_path)  # the tokenizer trains on the file corpus
  rows = [[f'{w} {w} text', w] for w in ('red', 'green', 'blue', 'grey') * 4]
  train_file = write_table(tmp_path / 'train.csv', ['text', 'label'], rows)
  config = task_config(train_file, train_file, 'gpt')
  config.data.update(corpus='files', train_files=files['train'],
                     validation_files=files['validation'], sp_vocab_size=320, seq_len=16)
  config.model.update(vocab_size=512, d_model=32, num_heads=2, head_dim=16, d_ff=64, **model)
  config.train.update(batch_size=8, steps=2)
  config.peft.method = method
  config.parallel.num_devices = 1
  local_files.resolve(config)
  assert config.model.num_classes == 4 and config.train.eval_every == 1
  last = train.run(config, str(tmp_path / 'run'), finetune.build_components)
  assert 0.0 <= last['eval_task_accuracy'] <= 1.0 and np.isfinite(last['eval_loss'])


def _progress_bar_state(stderr) -> tuple[str, str]:
  code = ('from ptlm_jax.main import cli; cli.quiet_progress_bars(); '
          'from tensorflow_datasets.core.utils import tqdm_utils as t; '
          'list(t.tqdm(range(3), desc="bar")); print(t._active)')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, stdout=subprocess.PIPE,
                        stderr=stderr, text=True, timeout=300, check=True)
  return proc.stdout.strip(), proc.stderr or ''


def test_progress_bars_only_on_a_terminal():
  active, stderr = _progress_bar_state(subprocess.PIPE)  # a log file or a pipe
  assert active == 'False' and '\x1b' not in stderr and 'bar' not in stderr
  import pty  # pylint: disable=g-import-not-at-top
  leader, follower = pty.openpty()
  try:
    assert _progress_bar_state(follower)[0] == 'True'  # a terminal keeps them
  finally:
    os.close(leader)
    os.close(follower)


def _jsonl(path, rows):
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows), encoding='utf-8')
  return str(path)


def _generic(config_file, arg, train_file, validation_file, **task):
  namespace = {}
  with open(os.path.join(ROOT, 'configs', 'finetune', f'{config_file}.py'),
            encoding='utf-8') as f:
    exec(compile(f.read(), config_file, 'exec'), namespace)  # pylint: disable=exec-used
  c = namespace['get_config'](arg)
  c.task.update(train_file=str(train_file), validation_file=str(validation_file), **task)
  return c


def _ner_qa_t2t_files(tmp_path):
  ner = _jsonl(tmp_path / 'ner.jsonl', [
      {'words': ['Ann', 'met', 'Bo', 'Li'], 'labels': ['B-PER', 'O', 'B-PER', 'I-PER']},
      {'words': ['in', 'Rome'], 'labels': ['O', 'B-LOC']}] * 8)
  context = 'Ann lives in Rome. Bo lives in Oslo.'
  qa = _jsonl(tmp_path / 'qa.jsonl', [
      {'q': 'Where does Ann live?', 'c': context,
       'a': {'text': ['Rome'], 'answer_start': [13]}},
      {'q': 'Who lives in Oslo?', 'c': context, 'a': {'text': ['Bo'], 'answer_start': [19]}},
      {'q': 'Who is the king?', 'c': context, 'a': {'text': [], 'answer_start': []}}] * 6)
  t2t = write_table(tmp_path / 't2t.tsv', ['source', 'target'],
                    [[f'say {w} twice', f'{w} {w}'] for w in ('red', 'blue') * 8], '\t')
  return dict(
      ner=('token_classification', 'bert', ner, dict(input_fields='words',
                                                     target_field='labels')),
      qa=('question_answering', 'bert', qa, dict(input_fields='q,c', target_field='a')),
      t2t=('text_to_text', 't5', t2t, {}))


def test_ner_qa_and_text_to_text_rows(tmp_path):
  files = _ner_qa_t2t_files(tmp_path)
  config_file, arg, path, task = files['ner']
  config = _generic(config_file, arg, path, path, **task)
  assert local_files.label_names(config) == ['B-LOC', 'B-PER', 'I-PER', 'O']
  rows = local_files.read_task_split(config, 'train')
  assert len(rows) == 16 and rows[0]['tokens'] == ['Ann', 'met', 'Bo', 'Li']
  assert rows[0]['labels'] == [1, 3, 1, 2] and rows[1]['labels'] == [3, 0]
  local_files.resolve(config)
  assert config.model.num_classes == 4

  config_file, arg, path, task = files['qa']
  rows = local_files.read_task_split(_generic(config_file, arg, path, path, **task), 'train')
  assert rows[1]['question'] == 'Who lives in Oslo?' and rows[1]['answers']['text'] == ['Bo']
  assert rows[1]['context'][19:21] == 'Bo' and len(rows) == 18

  config_file, arg, path, task = files['t2t']
  rows = local_files.read_task_split(_generic(config_file, arg, path, path, **task), 'train')
  assert rows[0] == {'source': 'say red twice', 'target': 'red red'}

  bad = _jsonl(tmp_path / 'bad_ner.jsonl', [{'words': ['a', 'b'], 'labels': ['O']}])
  config_file, arg, _, task = files['ner']
  with pytest.raises(UserError, match=r'bad_ner.jsonl, line 1: expected one tag per word'):
    local_files.read_task_split(_generic(config_file, arg, bad, bad, **task), 'train')
  csv_ner = write_table(tmp_path / 'ner.csv', ['words', 'labels'], [['a', 'O']])
  with pytest.raises(UserError, match=r'ner.csv.*expected .jsonl'):
    local_files.read_task_split(_generic(config_file, arg, csv_ner, csv_ner, **task), 'train')


@pytest.mark.parametrize('kind', ['ner', 'qa', 't2t'])
def test_ner_qa_and_text_to_text_runs_on_files(kind, tmp_path, monkeypatch):
  from ptlm_jax.finetune import run as finetune
  from ptlm_jax.training import train  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('PTLM_DATA_DIR', str(tmp_path / 'cache'))
  corpus = write_corpus(tmp_path)
  config_file, arg, path, task = _ner_qa_t2t_files(tmp_path)[kind]
  config = _generic(config_file, arg, path, path, **task)
  config.data.update(corpus='files', train_files=corpus['train'],
                     validation_files=corpus['validation'], sp_vocab_size=320, seq_len=48)
  config.model.update(vocab_size=512, d_model=32, num_heads=2, head_dim=16, d_ff=64,
                      num_layers=1, num_decoder_layers=1)
  config.task.update(doc_stride=16, max_query_length=16, target_length=8)
  config.train.update(batch_size=8, steps=2)
  config.parallel.num_devices = 1
  local_files.resolve(config)
  config_lib.validate(config)
  last = train.run(config, str(tmp_path / 'run'), finetune.build_components)
  metric = {'ner': 'eval_task_entity_f1', 'qa': 'eval_task_exact_match',
            't2t': 'eval_task_rouge1'}[kind]
  assert np.isfinite(last['eval_loss']) and last[metric] >= 0.0


def test_resolve_makes_mixture_file_globs_absolute(tmp_path, monkeypatch):
  files = write_corpus(tmp_path)
  monkeypatch.chdir(tmp_path)
  config = corpus_config(dict(train='train/*.txt', validation='val.jsonl.gz'))
  config.data.update(corpus='news', mixture='files:0.5,news:0.5')
  local_files.resolve(config)
  assert config.data.train_files == f'{tmp_path}/train/*.txt'
  assert local_files.corpus_files(config, 'train') == sorted(
      str(p) for p in (tmp_path / 'train').glob('*.txt'))
  assert files['docs']
