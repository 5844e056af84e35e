"""Sweeps: `launch.sh sweep --dry_run` commands, sweep-file checks, the collector."""
import json
import os
import subprocess

import pytest

from experiments import collect, sweep
from ptlm_jax import config_lib, errors
from ptlm_jax.training import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _printed_commands(args):
  result = subprocess.run(['./launch.sh', 'sweep', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  return [line[2:] for line in result.stdout.splitlines() if line.startswith('+ ')]


def test_local_dry_run_prints_one_main_command_per_run(tmp_path):
  workdir = str(tmp_path / 'sweep-lr')
  lines = _printed_commands(['experiments/sweeps/lr.py', f'--workdir={workdir}', '--dry_run'])
  common = ('--config.train.steps=150 --config.train.eval_every=50 --config.train.eval_steps=4 '
            '--config.optim.warmup_steps=15 --config.data.sp_vocab_size=2000 '
            '--config.model.vocab_size=2176')
  assert lines == [
      f'.venv/bin/python -m ptlm_jax.main --config=configs/gpt.py:tiny --workdir={workdir}/lr={n} '
      f'{common} --config.optim.lr={v}'
      for n, v in (('0.0003', '0.0003'), ('0.001', '0.001'), ('0.003', '0.003'))]
  assert not os.path.exists(workdir)  # a dry run writes nothing


def test_pod_dry_run_creates_installs_once_and_runs_each_on_all_workers():
  lines = _printed_commands(['experiments/sweeps/lr.py', '--workdir=/gcs/bucket/sweep-lr',
                             '--tpu=ptlm-v4', '--zone=us-central2-b', '--type=v4-32', '--dry_run'])
  assert lines[0] == 'gcloud compute tpus tpu-vm describe ptlm-v4 --zone=us-central2-b'
  assert lines[1] == ('gcloud compute tpus tpu-vm create ptlm-v4 --zone=us-central2-b '
                      '--accelerator-type=v4-32 --version=tpu-ubuntu2204-base')
  assert lines[2] == 'git archive --format=tar.gz --output=/tmp/ptlm_jax.tar.gz HEAD'
  assert sum('pip install' in line for line in lines) == 1
  runs = [line for line in lines if 'ptlm_jax.main' in line]
  assert len(runs) == 3 and len(lines) == 8
  for line, lr in zip(runs, ('0.0003', '0.001', '0.003')):
    assert line.startswith('gcloud compute tpus tpu-vm ssh ptlm-v4 --zone=us-central2-b '
                           "--worker=all '--command=cd ptlm_jax && .venv/bin/python -m ptlm_jax.main "
                           '--config=configs/gpt.py:tiny ')
    assert f'--workdir=/gcs/bucket/sweep-lr/lr={lr} ' in line
    assert line.endswith(f"--config.optim.lr={lr}'")


def test_bad_sweep_files_are_one_line_errors(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text("RUNS = [('a b', 'configs/gpt.py:tiny', {})]\n")
  with pytest.raises(sweep.SweepError, match="run name 'a b'"):
    sweep.load_runs(str(bad))
  bad.write_text("RUNS = [('a', 'configs/gpt.py:tiny', {'lr': 1})]\n")
  with pytest.raises(sweep.SweepError, match='not "group.field"'):
    sweep.load_runs(str(bad))
  result = subprocess.run(['./launch.sh', 'sweep', str(tmp_path / 'none.py'), '--workdir=x',
                           '--dry_run'], cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 2 and 'does not exist' in result.stderr


def test_every_sweep_run_is_a_valid_config():
  from experiments import config_files  # pylint: disable=g-import-not-at-top
  for _, spec, overrides in sweep.load_runs(os.path.join(ROOT, 'experiments/sweeps/lr.py')):
    config = config_files.override(config_files.load(spec), overrides)
    config_lib.validate(config)
    assert config.train.steps == 150
  with pytest.raises(errors.ConfigError, match='optim.nope'):
    config_files.override(config, {'optim.nope': 1})


def _write_run(workdir, lr, losses):
  """Scalars through the trainer's own writer (TensorBoard events + metrics.jsonl)."""
  config = config_lib.base_config('gpt', 'tiny')
  config.train.steps = 20
  os.makedirs(workdir, exist_ok=True)
  reporter = metrics.Reporter(workdir, config, tokens_per_step=64, flops={'model': 1., 'head': 0.},
                              peak_flops=0.0)
  for step, loss in losses:
    reporter.eval(step, {'loss': loss, 'accuracy': 0.1, 'perplexity': 2.0 ** loss})
  reporter.close()
  del lr


def test_collector_reads_back_the_written_scalars(tmp_path, capsys):
  runs = {'lr=0.001': (1e-3, [(10, 5.5), (20, 4.25)]), 'lr=0.01': (1e-2, [(10, 6.0), (20, 5.75)])}
  for name, (lr, losses) in runs.items():
    _write_run(str(tmp_path / name), lr, losses)
  with open(tmp_path / 'sweep.json', 'w', encoding='utf-8') as f:
    json.dump({'sweep_file': 'x.py', 'runs': [
        {'name': n, 'config': 'configs/gpt.py:tiny', 'overrides': {'optim.lr': lr, 'train.steps': 20}}
        for n, (lr, _) in runs.items()]}, f)
  capsys.readouterr()

  scalars = collect.read_scalars(str(tmp_path / 'lr=0.001'))
  assert scalars['eval/loss'] == [(10, 5.5), (20, 4.25)]
  assert scalars['eval/perplexity'][-1] == (20, pytest.approx(2.0 ** 4.25))
  written = collect.collect(str(tmp_path))
  assert written['runs'] == ['lr=0.001', 'lr=0.01']
  # Only the field that varies becomes a column; best loss and its step come last.
  assert written['table'].splitlines()[0] == (
      '| run | optim.lr | step | eval/loss | eval/accuracy | eval/perplexity | best eval/loss '
      '| best step |')
  assert '| lr=0.001 | 0.001 | 20 | 4.25 | 0.1 | 19.03 | 4.25 | 20 |' in written['table']
  for key in ('curves', 'sweep'):
    with open(written[key], 'rb') as f:
      assert f.read(8) == PNG_MAGIC
  assert 'sweep.png' in open(written['report'], encoding='utf-8').read()
  with pytest.raises(FileNotFoundError):
    collect.collect(str(tmp_path / 'lr=0.001' / 'missing'))


def test_a_url_workdir_is_one_line_error_before_any_command(capsys):
  from experiments import sweep  # pylint: disable=g-import-not-at-top
  assert sweep.main(['experiments/sweeps/lr.py', '--workdir=gs://bucket/x', '--tpu=v',
                     '--zone=z', '--type=v4-8', '--dry_run']) == 2
  out = capsys.readouterr()
  assert not out.out and out.err.startswith('error: --workdir=gs://bucket/x: a URL is not a workdir')
