r"""Runs a ptlm_jax job on every worker of a Cloud TPU VM (a pod slice or a single host).

  ./launch.sh tpu --name=ptlm-v4 --zone=us-central2-b --type=v4-32 [--dry_run] -- \
      --config=configs/t5.py:base --workdir=/gcs/my-bucket/runs/t5-base

Steps (each a gcloud command, printed before it runs; `--dry_run` only prints them):
  1. create the TPU VM unless one with that name exists (`tpu-vm describe` decides);
  2. copy this checkout (`git archive HEAD`, so only committed files) to every worker;
  3. install it on every worker (`.venv`, the tested versions, the `tpu` extra);
  4. run `python -m ptlm_jax.main MAIN_ARGS` on all workers at once (`--worker=all`).
`jax.distributed.initialize()` finds the other workers by itself on Cloud TPU, every
worker reads its own shard of the data, and process 0 writes logs and checkpoints
coordinate through the workdir: a bucket mounted at the same path on every worker
(`gcsfuse --implicit-dirs BUCKET /gcs/BUCKET`; a gs:// URL is refused).  Standard library only: it runs before any install.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from typing import Sequence

REMOTE_DIR = 'ptlm_jax'
ARCHIVE = '/tmp/ptlm_jax.tar.gz'


def _gcloud(*args: str, project: str | None) -> list[str]:
  cmd = ['gcloud', 'compute', 'tpus', 'tpu-vm', *args]
  return cmd + ([f'--project={project}'] if project else [])


def plan(args: argparse.Namespace, main_args: Sequence[str]) -> dict[str, list[list[str]]]:
  """The gcloud commands, grouped: 'describe' (probe), 'create', 'run' (always)."""
  zone = f'--zone={args.zone}'
  ssh_all = lambda command: _gcloud('ssh', args.name, zone, '--worker=all',
                                    f'--command={command}', project=args.project)
  setup = (f'mkdir -p {REMOTE_DIR} && tar -xzf {ARCHIVE} -C {REMOTE_DIR} && cd {REMOTE_DIR} && '
           '(test -x .venv/bin/python || python3 -m venv .venv) && '
           '.venv/bin/pip install -q -c constraints.txt -e ".[tpu]"')
  main = (f'cd {REMOTE_DIR} && .venv/bin/python -m ptlm_jax.main ' +
          ' '.join(shlex.quote(a) for a in main_args))
  return {
      'describe': [_gcloud('describe', args.name, zone, project=args.project)],
      'create': [_gcloud('create', args.name, zone, f'--accelerator-type={args.type}',
                         f'--version={args.version}', project=args.project)],
      'run': [
          ['git', 'archive', '--format=tar.gz', f'--output={ARCHIVE}', 'HEAD'],
          _gcloud('scp', ARCHIVE, f'{args.name}:{ARCHIVE}', zone, '--worker=all',
                  project=args.project),
          ssh_all(setup),
          ssh_all(main),
      ],
  }


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  argv = list(argv)
  main_args: list[str] = []
  if '--' in argv:
    cut = argv.index('--')
    argv, main_args = argv[:cut], argv[cut + 1:]
  parser = argparse.ArgumentParser(prog='launch.sh tpu', description=__doc__.split('\n')[0])
  parser.add_argument('--name', required=True, help='TPU VM name (created if missing)')
  parser.add_argument('--zone', required=True, help='e.g. us-central2-b')
  parser.add_argument('--type', default='v4-8', help='accelerator type, e.g. v4-32, v5litepod-16')
  parser.add_argument('--version', default='tpu-ubuntu2204-base', help='TPU VM software version')
  parser.add_argument('--project', default=None, help='GCP project (default: gcloud config)')
  parser.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
  args = parser.parse_args(argv)
  if not any(a.startswith('--config') for a in main_args):
    parser.error('give the job after --, e.g. -- --config=configs/gpt.py:base --workdir=gs://b/r')
  return args, main_args


def show(cmd: Sequence[str]) -> None:
  """Prints a command as a shell line (what --dry_run shows, and what runs)."""
  print('+ ' + ' '.join(shlex.quote(c) for c in cmd), flush=True)


def show_plan(steps: dict[str, list[list[str]]], run_header: str) -> None:
  """--dry_run: the create commands (unless the VM exists), then `steps['run']`."""
  print('# create the TPU VM unless `describe` finds it:')
  for cmd in steps['describe'] + steps['create']:
    show(cmd)
  print(run_header)
  for cmd in steps['run']:
    show(cmd)


def vm_exists(steps: dict[str, list[list[str]]]) -> bool:
  """Whether `gcloud ... describe` finds the TPU VM."""
  return subprocess.run(steps['describe'][0], capture_output=True).returncode == 0


def main(argv: Sequence[str]) -> int:
  args, main_args = parse(argv)
  steps = plan(args, main_args)
  if args.dry_run:
    show_plan(steps, '# copy, install and run on every worker:')
    return 0
  exists = vm_exists(steps)
  print(f'[tpu] {args.name}: ' + ('exists, reusing it' if exists else 'not found, creating it'))
  for cmd in ([] if exists else steps['create']) + steps['run']:
    show(cmd)
    if subprocess.run(cmd).returncode != 0:
      print(f'[tpu] failed: {cmd[0]} {" ".join(cmd[1:5])} ...', file=sys.stderr)
      return 1
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
