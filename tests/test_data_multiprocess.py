"""One global order across real processes (jax.distributed on CPU): 2 processes make the
global batches 1 process makes, and a checkpoint written by 2 resumes on 1 and back
(a two-corpus mixture, so every source's cursor goes through the real checkpoint)."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np

import data_testlib as lib
import pipeline_processes as script
from ptlm_jax.data import pipeline

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(out, mode, count):
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
         'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': os.path.dirname(HERE)}  # this checkout
  port = str(_free_port())
  return [subprocess.Popen([sys.executable, os.path.join(HERE, 'pipeline_processes.py'),
                            str(out), mode, str(count), str(i), port],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for i in range(count)]


def _finish(procs):
  for p in procs:
    output = p.communicate(timeout=300)[0]
    assert p.returncode == 0, output[-3000:]


def _global_rows(out, mode, count):
  """int32[steps, 3, B, L]: the processes' rows joined in process order."""
  parts = [np.load(out / f'{mode}_p{i}of{count}.npy') for i in range(count)]
  return np.concatenate(parts, axis=2)


def test_two_processes_match_one_and_resume_across_process_counts(tmp_path):
  # The tokenizer and the token chunks are cached before the processes start.
  config, tok = lib.small_config(mixture=script.MIXTURE), lib.small_tokenizer()
  it = pipeline.make_pretrain_iterator(config, tok, process_index=0, process_count=1)
  steps = script.SAVE_AT + script.AFTER
  batches = [next(it) for _ in range(steps)]
  it.close()
  whole = np.stack([np.stack([b['tokens'], b['segment_ids'], b['positions']]) for b in batches])

  two, one = tmp_path / 'two', tmp_path / 'one'
  procs = _start(two, 'save', 2) + _start(one, 'save', 1)
  _finish(procs)
  np.testing.assert_array_equal(_global_rows(two, 'save', 2), whole)  # packed rows included
  np.testing.assert_array_equal(_global_rows(one, 'save', 1), whole)
  # Swap the workdirs' checkpoints: 2 processes resume what 1 wrote, and the reverse.
  shutil.move(two / 'work', tmp_path / 'work-two')
  shutil.move(one / 'work', two / 'work')
  shutil.move(tmp_path / 'work-two', one / 'work')
  _finish(_start(two, 'resume', 2) + _start(one, 'resume', 1))
  np.testing.assert_array_equal(_global_rows(two, 'resume', 2), whole[script.SAVE_AT:])
  np.testing.assert_array_equal(_global_rows(one, 'resume', 1), whole[script.SAVE_AT:])
