"""Logs written to a pipe hold plain lines: no escape codes, no third-party noise.

The default job's first stage (corpus prepared anew, tokenizer, FLOPs per step) and the
training CLI run as a user runs them, with stdout and stderr into one pipe; the log must
keep the project's own lines, progress lines included, and none of the noise that TFDS
and orbax print when nobody asks them to quiet down.
"""
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from ptlm_jax.data import downloads
from ptlm_jax.main import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]

# What a log must never hold: terminal control (tqdm bars redraw with ESC[A and \r) and
# the third-party lines a user cannot act on.
ESC, CARRIAGE_RETURN = '\x1b', '\r'
NOISE = ('Generating splits', 'Shuffling ', 'examples/s', 'Variant folder',
         'Metadata file does not exist')


def _env(data_dir: pathlib.Path) -> dict[str, str]:
  env = dict(os.environ, PTLM_DATA_DIR=str(data_dir), PYTHONUNBUFFERED='1')
  env.pop('XLA_FLAGS', None)  # the entry points run on one CPU device, as a user's would
  env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
  return env


def _fresh_data_dir(tmp: pathlib.Path) -> pathlib.Path:
  """A cache with the news archive only: the corpus and tokenizer are made anew."""
  archive = downloads.fetch('news')  # the normal cache: fetched once for every test
  (tmp / 'archives').mkdir(parents=True)
  os.symlink(archive, tmp / 'archives' / archive.name)
  return tmp


def _assert_plain(log: str) -> None:
  assert ESC not in log and CARRIAGE_RETURN not in log, log[-2000:]
  for words in NOISE:
    assert words not in log, (words, log[-2000:])


@pytest.fixture(scope='module')
def first_stage(tmp_path_factory):
  """The default job's log up to its first pretraining run, and the data dir it made."""
  data_dir = _fresh_data_dir(tmp_path_factory.mktemp('data'))
  workdir = tmp_path_factory.mktemp('compare')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'experiments.compare_objectives', f'--workdir={workdir}'],
      cwd=ROOT, env=_env(data_dir), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  lines, deadline = [], time.monotonic() + 600
  try:
    for line in proc.stdout:  # the corpus, the tokenizer, then the first pretraining run
      lines.append(line)
      if line.startswith('[compare 1/') or time.monotonic() > deadline:
        break
  finally:
    proc.kill()
    proc.wait()
  return ''.join(lines), data_dir


def test_default_job_first_stage_logs_plain_lines(first_stage):
  log, data_dir = first_stage
  assert (data_dir / 'news').is_dir()  # the corpus was prepared in this run
  assert re.search(r'^\[compare 1/\d+\] pretraining bert:mlm', log, re.M), log[-2000:]
  for arm in ('bert:mlm', 'gpt:causal_lm', 'gpt:prefix_lm', 't5:span_corruption', 't5:prefix_lm'):
    assert f'[compare]   {arm} ' in log and 'FLOPs/step' in log
  _assert_plain(log)


def test_cli_logs_progress_lines_and_no_noise(first_stage, tmp_path):
  """Training keeps its progress lines; reading the run back (orbax) adds no warning."""
  _, data_dir = first_stage
  run = [sys.executable, '-m', 'ptlm_jax.main', '--config=configs/gpt.py:tiny',
         f'--workdir={tmp_path / "run"}', '--config.data.corpus=news',
         '--config.data.sp_vocab_size=500', '--config.data.sp_train_chars=200000',
         '--config.model.vocab_size=640', '--config.data.seq_len=32',
         '--config.train.batch_size=4', '--config.train.steps=2', '--config.train.log_every=1',
         '--config.train.eval_every=2', '--config.train.eval_steps=1']
  export = [sys.executable, '-m', 'ptlm_jax.main.hf', f'--input={tmp_path / "run"}',
            f'--output={tmp_path / "model"}']
  logs = []
  for command in (run, export):
    proc = subprocess.run(command, cwd=ROOT, env=_env(data_dir), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:]
    logs.append(proc.stdout)
  progress = [l for l in logs[0].splitlines() if l.startswith('step 2/2 |')]
  assert progress and 'tok/s' in progress[0] and 'ETA' in progress[0], logs[0]
  assert (tmp_path / 'model').is_dir()
  for log in logs:
    _assert_plain(log)


def test_noise_filter_drops_only_the_named_third_party_lines():
  import logging  # pylint: disable=g-import-not-at-top
  make = lambda path, msg: logging.LogRecord('absl', logging.WARNING, path, 1, msg, (), None)
  keep = cli._NOISE_FILTER.filter  # pylint: disable=protected-access
  tfds_file = '/x/site-packages/tensorflow_datasets/core/utils/file_utils.py'
  orbax_file = '/x/site-packages/orbax/checkpoint/_src/metadata/checkpoint.py'
  assert not keep(make(tfds_file, 'Variant folder %s has no %s'))
  assert not keep(make(orbax_file, 'Metadata file does not exist: %s'))
  # The same words from this project, or another warning from those libraries, still show.
  assert keep(make(str(ROOT / 'ptlm_jax' / 'data' / 'corpora.py'), 'Variant folder %s has no %s'))
  assert keep(make(orbax_file, 'Failed to read Metadata file: %s, error: %s'))
