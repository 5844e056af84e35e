"""The peer harness (benchmarks/peers): same batches for every peer, the machine's bf16
record, and a real PyTorch peer run in float32 and under bf16 autocast."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.peers import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--layers', '1', '--d-model', '64', '--heads', '2', '--ffn', '128', '--seq', '32',
        '--tgt-len', '8', '--batch', '4', '--steps', '2', '--warmup', '1', '--peak-size', '128']


def test_batches_are_fixed_and_shaped_as_the_objectives():
  cfg = dict(common.PRESETS['small'], batch=4, seq=16, tgt_len=6, name='small')
  bert, again = common.make_batch('bert', cfg), common.make_batch('bert', cfg)
  for k in bert:
    np.testing.assert_array_equal(bert[k], again[k])
  assert bert['input_ids'].shape == (4, 16) and bert['weights'][:, 0].all()
  assert (bert['input_ids'][bert['weights'] > 0] == common.MASK_ID).all()
  t5 = common.make_batch('t5', cfg)
  assert t5['labels'].shape == (4, 6) and (t5['labels'][:, -1] == common.EOS_ID).all()
  np.testing.assert_array_equal(t5['decoder_input_ids'][:, 1:], t5['labels'][:, :-1])
  assert (t5['decoder_input_ids'][:, 0] == common.PAD_ID).all()


def test_flops_by_hand():
  cfg = dict(batch=2, seq=8, tgt_len=4, d_model=16, layers=3, vocab=100)
  counts = dict(params_non_embedding=1000, params_non_embedding_dec=400, params_cross_kv=100)
  gpt = common.flops_per_step('gpt', cfg, counts)
  assert gpt == dict(model_flops_per_step=6 * 1000 * 16 + 12 * 3 * 16 * 8 * 16,
                     head_flops_per_step=6 * 16 * 100 * 16)
  t5 = common.flops_per_step('t5', cfg, counts)
  assert t5['model_flops_per_step'] == (6 * (700 * 16 + 300 * 8)
                                        + 12 * 3 * 16 * (8 * 2 * 8 + 4 * 2 * 4 + 8 * 2 * 4))


def test_cpu_features_read_the_flags_line():
  with open('/proc/cpuinfo', encoding='utf-8') as f:
    flags = next(line for line in f if line.startswith('flags')).split(':')[1].split()
  record = common.cpu_features()
  assert record['cpu_bf16_flags'] == {k: k in flags for k in common.BF16_FLAGS}


def _torch_line(dtype):
  out = subprocess.run(
      [sys.executable, 'benchmarks/peers/torch_train.py', '--families', 'gpt', '--dtype', dtype,
       '--threads', '1'] + TINY, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
  return [json.loads(x) for x in out.stdout.splitlines() if x.startswith('{')][-1]


def test_torch_peer_runs_in_float32_and_bf16_autocast():
  pytest.importorskip('torch')
  pytest.importorskip('transformers')
  f32, bf16 = _torch_line('float32'), _torch_line('bfloat16')
  for line in (f32, bf16):
    assert line['kind'] == 'train' and line['peer'] == 'hf-torch' and line['timed_steps'] == 2
    assert set(line['matmul_gflops']) == {'float32', 'bf16', 'n'}
    assert line['matmul_gflops']['float32'] > 0 and line['matmul_gflops']['bf16'] > 0
    assert set(line['cpu_bf16_flags']) == set(common.BF16_FLAGS)
  assert (f32['dtype'], bf16['dtype']) == ('float32', 'bfloat16')
  # Same weights and batch: the first loss agrees to bf16 precision and differs (bf16 ran).
  assert abs(bf16['loss_first'] - f32['loss_first']) < 0.02 * f32['loss_first']
  assert bf16['loss_first'] != f32['loss_first']
