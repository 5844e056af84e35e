"""The decode benchmark: its record adds up, and the HF comparison pairs runs into ratios.

The comparison runs against a stand-in peer (a script printing a fixed generation
record), so the test needs neither the peer venv nor a quiet machine.
"""
import json
import os
import subprocess
import sys

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_compare_hf_runs_ours_then_the_peer_and_reports_the_ratio(tmp_path):
  peer = tmp_path / 'peer.py'
  peer.write_text('import json, sys\n'
                  'assert "--gen" in sys.argv and sys.argv[sys.argv.index("--families") + 1] == ""\n'
                  'print("noise")\n'
                  'print(json.dumps({"peer": "hf-flax", "kind": "generate", '
                  '"new_tokens_per_s": 10.0}))\n')
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.speed', '--mode=generate', '--compare_hf=1',
       f'--peer_python={sys.executable}', f'--peer_script={peer}', '--batch=2', '--prompt_len=4',
       '--new_tokens=5', '--runs=3'], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  ours, theirs, summary = [json.loads(line) for line in proc.stdout.splitlines()
                           if line.startswith('{')]
  assert (ours['peer'], ours['round'], theirs['peer'], theirs['round']) == (
      'ptlm_jax', 0, 'hf-flax', 0)
  assert ours['kind'] == 'generate' and ours['jax'] == jax.__version__
  assert (ours['gen_batch'], ours['prompt_len'], ours['new_tokens'], ours['runs']) == (2, 4, 5, 3)
  assert ours['new_tokens_per_s'] == pytest.approx(2 * 5 / ours['gen_s_median'], rel=1e-2)
  assert ours['ms_per_token_step'] == pytest.approx(ours['gen_s_median'] / 5 * 1e3, rel=1e-2)
  assert ours['gen_s_min'] <= ours['gen_s_median'] and ours['first_call_s'] > 0
  assert 0 <= ours['foreign_cpu_frac'] <= 1
  assert summary['ratios'] == [round(ours['new_tokens_per_s'] / 10.0, 3)]
  assert summary['median_ratio'] == summary['ratios'][0]
