"""Two jax.distributed processes whose evaluation shards differ in size finish and agree.

The real command line (`python -m ptlm_jax.main`), the real file pipeline and tokenizer:
a validation file of two long documents and one short one, which the pipeline's lanes
deal out so that the two processes hold different numbers of evaluation batches (with one
chunk of validation text, process 1's lanes may hold none at all).
"""
import itertools
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from ptlm_jax import objectives
from ptlm_jax.data import local_files, pipeline, tokenizer
from test_local_files import corpus_config, write_corpus  # pylint: disable=g-bad-import-order

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_STEPS = 10
SETTINGS = {'data.sp_vocab_size': 320, 'data.seq_len': 32, 'model.vocab_size': 512,
            'model.d_model': 32, 'model.num_heads': 2, 'model.head_dim': 16, 'model.d_ff': 64,
            'train.batch_size': 8, 'train.steps': 2, 'train.log_every': 1,
            'train.eval_every': 1, 'train.eval_steps': EVAL_STEPS,
            'train.checkpoint_every': 100, 'parallel.mode': 'mesh'}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _validation_file(path, files) -> None:
  sentences = [line for doc in files['docs'] for line in doc.split('\n')]
  long_one, short, long_two = ' '.join(sentences[:40]), sentences[40], ' '.join(sentences[41:81])
  path.write_text('\n\n'.join([long_one, short, long_two]) + '\n')


def _eval_weights(config, tok, process: int) -> tuple[int, float]:
  """(batches, target tokens) of one process's first EVAL_STEPS evaluation batches."""
  objective = objectives.get_objective(config, tok.vocab_info)
  it = pipeline.make_pretrain_iterator(config, tok, split=config.data.eval_split, infinite=False,
                                       process_index=process, process_count=2,
                                       row_length=objective.raw_length)
  batches = list(itertools.islice(it, EVAL_STEPS))
  weight = 0.0
  for batch in batches:
    _, _, weights = objective(batch, jax.random.PRNGKey(0))
    weight += float(np.sum(weights))
  return len(batches), weight


def test_processes_with_different_eval_shards_finish(tmp_path, monkeypatch):
  cache = tmp_path / 'cache'
  monkeypatch.setenv('PTLM_DATA_DIR', str(cache))
  files = write_corpus(tmp_path)
  _validation_file(tmp_path / 'valid.txt', files)
  config = corpus_config({**files, 'validation': str(tmp_path / 'valid.txt')})
  for key, value in SETTINGS.items():
    group, field = key.split('.')
    config[group][field] = value
  local_files.resolve(config)
  tok = tokenizer.get_tokenizer(config)  # trained once here; the processes load it
  (n0, w0), (n1, w1) = (_eval_weights(config, tok, p) for p in (0, 1))
  assert n0 > n1  # the case that used to leave process 0 alone in a collective

  port = _free_port()
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
         'JAX_PLATFORMS': 'cpu', 'PTLM_DATA_DIR': str(cache), 'PYTHONPATH': ROOT}
  flags = [f'--config.{k}={v}' for k, v in SETTINGS.items()] + [
      '--config.data.corpus=files', f'--config.data.train_files={files["train"]}',
      f'--config.data.validation_files={tmp_path / "valid.txt"}',
      f'--config.parallel.coordinator_address=localhost:{port}',
      '--config.parallel.num_processes=2']
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'ptlm_jax.main', f'--config={ROOT}/configs/gpt.py:tiny',
       f'--workdir={tmp_path / "run"}', *flags, f'--config.parallel.process_id={i}'],
      env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  try:
    outputs = [p.communicate(timeout=420)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  with open(tmp_path / 'run' / 'metrics.jsonl', encoding='utf-8') as f:
    evals = [json.loads(line) for line in f if '"eval/' in line]
  # Every document either process holds is counted once, at both evaluations.
  assert [e['step'] for e in evals] == [1, 2]
  for e in evals:
    assert e['eval/tokens'] == w0 + w1
