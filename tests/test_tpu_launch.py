"""`./launch.sh tpu --dry_run` prints the exact gcloud commands."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dry_run_prints_create_copy_install_and_run_on_all_workers():
  result = subprocess.run(
      ['./launch.sh', 'tpu', '--name=ptlm-v4', '--zone=us-central2-b', '--type=v4-32',
       '--project=my-proj', '--dry_run', '--', '--config=configs/t5.py:base',
       '--workdir=gs://bucket/runs/t5', '--config.optim.lr=1e-3'],
      cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  lines = [l[2:] for l in result.stdout.splitlines() if l.startswith('+ ')]
  assert lines == [
      'gcloud compute tpus tpu-vm describe ptlm-v4 --zone=us-central2-b --project=my-proj',
      'gcloud compute tpus tpu-vm create ptlm-v4 --zone=us-central2-b --accelerator-type=v4-32 '
      '--version=tpu-ubuntu2204-base --project=my-proj',
      'git archive --format=tar.gz --output=/tmp/ptlm_jax.tar.gz HEAD',
      'gcloud compute tpus tpu-vm scp /tmp/ptlm_jax.tar.gz ptlm-v4:/tmp/ptlm_jax.tar.gz '
      '--zone=us-central2-b --worker=all --project=my-proj',
      "gcloud compute tpus tpu-vm ssh ptlm-v4 --zone=us-central2-b --worker=all '--command=mkdir -p "
      'ptlm_jax && tar -xzf /tmp/ptlm_jax.tar.gz -C ptlm_jax && cd ptlm_jax && (test -x '
      '.venv/bin/python || python3 -m venv .venv) && .venv/bin/pip install -q -c constraints.txt '
      "-e \".[tpu]\"' --project=my-proj",
      "gcloud compute tpus tpu-vm ssh ptlm-v4 --zone=us-central2-b --worker=all '--command=cd "
      'ptlm_jax && .venv/bin/python -m ptlm_jax.main --config=configs/t5.py:base '
      "--workdir=gs://bucket/runs/t5 --config.optim.lr=1e-3' --project=my-proj",
  ]


def test_missing_main_args_is_a_usage_error():
  result = subprocess.run(['./launch.sh', 'tpu', '--name=x', '--zone=z', '--dry_run'],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 2 and 'give the job after --' in result.stderr
