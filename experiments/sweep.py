r"""Expands a sweep file into runs: one after another here, or on every worker of a TPU VM.

  ./launch.sh sweep experiments/sweeps/lr.py --workdir=runs/sweep-lr [--dry_run]
  ./launch.sh sweep experiments/sweeps/lr.py --workdir=/gcs/bucket/sweep-lr \
      --tpu=ptlm-v4 --zone=us-central2-b --type=v4-32 [--project=P] [--dry_run]
  python -m experiments.collect --workdir=runs/sweep-lr      # the table and plots

A sweep file is plain Python that defines `RUNS`: a list (or a function returning a
list) of `(name, 'config file:arg', {'group.field': value, ...})`.  Run `name` trains
in `<workdir>/<name>` through the usual entry point, so each run is exactly one
`python -m ptlm_jax.main --config=... --workdir=... --config.group.field=value` command
(printed before it runs; `--dry_run` prints them all and runs nothing).

Locally the runs go one after another (a finished run is skipped by the trainer itself:
rerunning the sweep resumes it), the first failure stops the sweep, and at the end the
collector writes `<workdir>/report.md`.  With `--tpu` the TPU VM is created unless it
exists, the checkout is copied and installed on every worker once, and each run is one
`gcloud ... ssh --worker=all` command (experiments/tpu_launch.py builds them).  A local
workdir gets `sweep.json` (names, configs, overrides), which the collector turns into
columns.  Standard library only, so `--dry_run` and pod sweeps need no local install.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from typing import Any, Sequence

from experiments import tpu_launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NAME = re.compile(r'[A-Za-z0-9_.=,+-]+')


class SweepError(Exception):
  """A malformed sweep file or command line (one line, printed without a traceback)."""


def load_runs(path: str) -> list[tuple[str, str, dict[str, Any]]]:
  """The (name, config spec, overrides) triples a sweep file declares, checked."""
  if not os.path.isfile(path):
    raise SweepError(f'sweep file {path} does not exist')
  spec = importlib.util.spec_from_file_location('_sweep_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  runs = getattr(module, 'RUNS', None)
  runs = runs() if callable(runs) else runs
  if not isinstance(runs, (list, tuple)) or not runs:
    raise SweepError(f'{path}: RUNS must be a non-empty list of (name, config, overrides)')
  out, seen = [], set()
  for i, run in enumerate(runs):
    if not (isinstance(run, (list, tuple)) and len(run) == 3 and isinstance(run[2], dict)):
      raise SweepError(f'{path}: RUNS[{i}]={run!r} is not (name, "config.py:arg", {{overrides}})')
    name, config, overrides = run
    if not _NAME.fullmatch(str(name)) or name in seen:
      raise SweepError(f'{path}: run name {name!r} must be unique and use only [A-Za-z0-9_.=,+-]')
    if not str(config).partition(':')[0].endswith('.py'):
      raise SweepError(f'{path}: run {name!r}: config {config!r} is not "file.py[:arg]"')
    bad = [k for k in overrides if not re.fullmatch(r'[a-z_]+\.[a-z_0-9]+', k)]
    if bad:
      raise SweepError(f'{path}: run {name!r}: override keys {bad} are not "group.field"')
    seen.add(name)
    out.append((str(name), str(config), dict(overrides)))
  return out


def format_value(value: Any) -> str:
  """A value as `--config.x=...` takes it (floats exactly, booleans as True/False)."""
  return repr(value) if isinstance(value, float) else str(value)


def main_args(config: str, workdir: str, overrides: dict[str, Any]) -> list[str]:
  """The arguments of `python -m ptlm_jax.main` for one run."""
  return ([f'--config={config}', f'--workdir={workdir}']
          + [f'--config.{k}={format_value(v)}' for k, v in overrides.items()])


def run_workdir(workdir: str, name: str) -> str:
  return f"{workdir.rstrip('/')}/{name}"


def local_commands(runs, workdir: str, python: str) -> list[list[str]]:
  return [[python, '-m', 'ptlm_jax.main', *main_args(c, run_workdir(workdir, n), o)]
          for n, c, o in runs]


def pod_plan(runs, workdir: str, args: argparse.Namespace) -> dict[str, list[list[str]]]:
  """tpu_launch's commands: create, then copy + install once, then one ssh per run."""
  plans = [tpu_launch.plan(args, main_args(c, run_workdir(workdir, n), o)) for n, c, o in runs]
  first = plans[0]
  return {'describe': first['describe'], 'create': first['create'],
          'run': first['run'][:-1] + [p['run'][-1] for p in plans]}


def _write_manifest(workdir: str, sweep_file: str, runs) -> None:
  os.makedirs(workdir, exist_ok=True)
  manifest = {'sweep_file': sweep_file,
              'runs': [{'name': n, 'config': c, 'overrides': o} for n, c, o in runs]}
  with open(os.path.join(workdir, 'sweep.json'), 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=2)


def parse(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='launch.sh sweep', description=__doc__.split('\n')[0])
  parser.add_argument('sweep_file', help='e.g. experiments/sweeps/lr.py')
  parser.add_argument('--workdir', required=True, help='runs go to <workdir>/<name>')
  parser.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
  parser.add_argument('--python', default='.venv/bin/python', help='interpreter of local runs')
  parser.add_argument('--tpu', default=None, help='TPU VM name: run on its workers instead')
  parser.add_argument('--zone', default=None, help='TPU zone (with --tpu)')
  parser.add_argument('--type', default='v4-8', help='TPU accelerator type (with --tpu)')
  parser.add_argument('--version', default='tpu-ubuntu2204-base', help='TPU VM software version')
  parser.add_argument('--project', default=None, help='GCP project (with --tpu)')
  args = parser.parse_args(argv)
  if args.tpu and not args.zone:
    parser.error('--tpu needs --zone')
  args.name = args.tpu  # tpu_launch.plan's field names
  return args


def main(argv: Sequence[str]) -> int:
  args = parse(argv)
  try:
    runs = load_runs(args.sweep_file)
  except SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if '://' in args.workdir:  # the trainer refuses URLs (training/start.prepare_workdir)
    print(f'error: --workdir={args.workdir}: a URL is not a workdir; mount the bucket on every '
          'worker (gcsfuse --implicit-dirs BUCKET /gcs/BUCKET) and pass the path, e.g. '
          '--workdir=/gcs/BUCKET/sweep', file=sys.stderr)
    return 2
  workdir = os.path.abspath(args.workdir)
  if args.tpu:
    # A path on the workers: a bucket mounted there at the same path keeps one copy.
    steps = pod_plan(runs, args.workdir, args)
    print(f'# sweep {args.sweep_file}: {len(runs)} run(s) on TPU VM {args.tpu}')
    print('# --workdir is a path on the workers: mount one bucket there at the same path '
          '(gcsfuse) so that every worker shares it')
    if args.dry_run:
      tpu_launch.show_plan(steps, '# copy and install once, then each run on every worker:')
      return 0
    todo = ([] if tpu_launch.vm_exists(steps) else steps['create']) + steps['run']
  else:
    todo = local_commands(runs, workdir, args.python)
    print(f'# sweep {args.sweep_file}: {len(runs)} run(s), one after another, in {workdir}')
    if args.dry_run:
      for cmd in todo:
        tpu_launch.show(cmd)
      return 0
    _write_manifest(workdir, args.sweep_file, runs)
  for cmd in todo:
    tpu_launch.show(cmd)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
      print(f'[sweep] failed: {" ".join(cmd[:6])} ...', file=sys.stderr)
      return 1
  if not args.tpu:
    collect = [args.python, '-m', 'experiments.collect', f'--workdir={workdir}']
    tpu_launch.show(collect)
    return subprocess.run(collect, cwd=ROOT).returncode
  print(f'[sweep] done; copy {args.workdir} here and run: python -m experiments.collect '
        '--workdir=<local copy>')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
