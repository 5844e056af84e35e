"""The data job: statistics that add up, and a user error as one line with exit code 2."""
import json
import os
import subprocess
import sys
import unicodedata

import data_testlib as lib
from ptlm_jax.data import sources
from ptlm_jax.main import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_prepare_writes_consistent_statistics(tmp_path):
  config = lib.small_config()
  stats = prepare.prepare(config, str(tmp_path))
  assert json.loads((tmp_path / 'data_stats.json').read_text()) == stats
  L = config.data.seq_len
  for split in ('train', 'validation'):
    s = stats['passes'][split]
    assert s['documents'] == stats['splits'][split]  # no scene is empty
    assert s['rows'] * L >= s['tokens'] > (s['rows'] - 1) * L * 0.5
    assert abs(s['padding_fraction'] - (1 - s['tokens'] / (s['rows'] * L))) < 1e-4
  texts = [unicodedata.normalize('NFKC', t) for t in sources.texts(config, 'train')]
  first = stats['passes']['train']['sample_row'][0].removesuffix('<eos>')
  assert any(first in t for t in texts)


def test_cli_user_error_is_one_line_and_exit_2():
  result = subprocess.run(
      [sys.executable, '-m', 'ptlm_jax.main.prepare', '--config=configs/gpt.py:tiny',
       '--workdir=/tmp/unused', '--config.data.pack_mode=packed'],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: config.data.pack_mode='packed' is invalid: expected one of ('pack', 'chunk')"]
