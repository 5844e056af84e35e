r"""Builds a report (markdown table + plots) from the TensorBoard event files of many runs.

  python -m experiments.collect --workdir=runs/sweep-lr [--metric=eval/loss]

Every directory under --workdir that holds `events.out.tfevents.*` files is one run
(named by its path below the workdir).  Scalars are read with TensorBoard's own event
reader (`EventAccumulator`), so the report works on any run of the trainer, local or
copied from a pod's GCS workdir, without its metrics.jsonl.  Where a step was written
twice (a resumed run), the later value wins.  With the `sweep.json` that
experiments/sweep.py leaves in the workdir, the swept fields become columns, and when
exactly one numeric field varies a second plot shows the final metric against it.

Writes `<workdir>/report.md`, `<workdir>/curves.png` (the metric against steps) and,
for a one-field sweep, `<workdir>/sweep.png`; prints the table.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Sequence

# Before TensorFlow (which tensorboard's reader may load) starts: no C++ start-up lines.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

EVENTS_PREFIX = 'events.out.tfevents.'
SWEEP_MANIFEST = 'sweep.json'
# Columns of the table, in order, when the runs have them (final values).
COLUMNS = ('train/loss', 'eval/loss', 'eval/accuracy', 'eval/perplexity', 'eval/task_accuracy',
           'eval/task_f1', 'eval/task_macro_f1', 'eval/task_entity_f1', 'eval/task_exact_match',
           'eval/task_rouge1', 'eval/task_rougeL', 'eval/task_bleu')


def find_runs(workdir: str) -> list[str]:
  """Directories under `workdir` (itself included) that hold TensorBoard event files."""
  runs = []
  for directory, subdirs, files in os.walk(workdir):
    subdirs[:] = sorted(d for d in subdirs if d not in ('checkpoints', 'profile'))
    if any(f.startswith(EVENTS_PREFIX) for f in files):
      runs.append(directory)
  return sorted(runs)


def read_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} sorted by step, from the run's event files."""
  # pylint: disable=g-import-not-at-top  (tensorboard is heavy; the CLI needs it anyway)
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util
  accumulator = event_accumulator.EventAccumulator(
      run_dir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
  accumulator.Reload()
  out: dict[str, dict[int, float]] = {}
  tags = accumulator.Tags()
  for tag in tags.get('tensors', []):   # tf.summary (clu's writer) stores scalars as tensors
    for event in accumulator.Tensors(tag):
      value = tensor_util.make_ndarray(event.tensor_proto)
      if value.size == 1 and value.dtype.kind in 'fiu':
        out.setdefault(tag, {})[event.step] = float(value.reshape(()))
  for tag in tags.get('scalars', []):   # older simple_value summaries
    for event in accumulator.Scalars(tag):
      out.setdefault(tag, {})[event.step] = float(event.value)
  return {tag: sorted(values.items()) for tag, values in out.items()}


def summarize(scalars: dict[str, list[tuple[int, float]]]) -> dict[str, float]:
  """Final value of every tag, the last step, and the best (lowest) eval/loss with its step."""
  row = {tag: points[-1][1] for tag, points in scalars.items() if points}
  row['step'] = max((points[-1][0] for points in scalars.values() if points), default=0)
  if scalars.get('eval/loss'):
    step, best = min(scalars['eval/loss'], key=lambda p: p[1])
    row['best eval/loss'], row['best step'] = best, step
  return row


def _manifest(workdir: str) -> dict[str, dict]:
  path = os.path.join(workdir, SWEEP_MANIFEST)
  if not os.path.exists(path):
    return {}
  with open(path, encoding='utf-8') as f:
    return {run['name']: run for run in json.load(f)['runs']}


def _fmt(value) -> str:
  if isinstance(value, float):
    if math.isnan(value):
      return '–'
    return f'{value:.4g}' if abs(value) < 1e5 else f'{value:.3e}'
  return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(_fmt(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines)


def pyplot():
  """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _plot_curves(path: str, curves: dict[str, list[tuple[int, float]]], metric: str) -> None:
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  for name, points in curves.items():
    ax.plot([p[0] for p in points], [p[1] for p in points], marker='o', markersize=3, label=name)
  ax.set_xlabel('step')
  ax.set_ylabel(metric)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _plot_sweep(path: str, field: str, points: list[tuple[float, float]], metric: str) -> None:
  plt = pyplot()
  points = sorted(points)
  fig, ax = plt.subplots(figsize=(5.0, 3.6))
  ax.plot([p[0] for p in points], [p[1] for p in points], marker='o')
  xs = [p[0] for p in points]
  if min(xs) > 0 and max(xs) / min(xs) >= 10:
    ax.set_xscale('log')
  ax.set_xlabel(field)
  ax.set_ylabel(f'final {metric}')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def collect(workdir: str, metric: str = 'eval/loss') -> dict:
  """Reads every run under `workdir`, writes report.md and the plots; returns what it wrote."""
  workdir = os.path.abspath(workdir)
  run_dirs = find_runs(workdir)
  if not run_dirs:
    raise FileNotFoundError(f'no TensorBoard event files under {workdir}')
  manifest = _manifest(workdir)
  names, scalars, summaries = [], {}, {}
  for run_dir in run_dirs:
    name = os.path.relpath(run_dir, workdir)
    names.append(name)
    scalars[name] = read_scalars(run_dir)
    summaries[name] = summarize(scalars[name])
  swept = sorted({k for run in manifest.values() for k in run.get('overrides', {})})
  # Only the swept fields that actually differ between runs make useful columns.
  varying = [k for k in swept
             if len({json.dumps(manifest.get(n, {}).get('overrides', {}).get(k)) for n in names}) > 1]
  columns = [c for c in COLUMNS if any(c in s for s in summaries.values())]
  extra = ['best eval/loss', 'best step'] if any('best eval/loss' in s for s in summaries.values()) else []
  header = ['run'] + varying + ['step'] + columns + extra
  rows = []
  for name in names:
    overrides = manifest.get(name, {}).get('overrides', {})
    s = summaries[name]
    rows.append([name] + [overrides.get(k, '') for k in varying] + [int(s['step'])]
                + [s.get(c, float('nan')) for c in columns + extra])
  table = markdown_table(header, rows)

  written = {'runs': names, 'table': table, 'summaries': summaries}
  curves = {n: scalars[n][metric] for n in names if scalars[n].get(metric)}
  lines = [f'# Runs in {workdir}', '', f'{len(names)} run(s); final values (the last step written).',
           '', table, '']
  if curves:
    written['curves'] = os.path.join(workdir, 'curves.png')
    _plot_curves(written['curves'], curves, metric)
    lines += [f'![{metric} against steps](curves.png)', '']
  numeric = [k for k in varying if all(isinstance(manifest.get(n, {}).get('overrides', {}).get(k),
                                                  (int, float)) for n in names)]
  if len(varying) == 1 and numeric:
    field = numeric[0]
    points = [(float(manifest[n]['overrides'][field]), summaries[n][metric])
              for n in names if metric in summaries[n]]
    if len(points) > 1:
      written['sweep'] = os.path.join(workdir, 'sweep.png')
      _plot_sweep(written['sweep'], field, points, metric)
      lines += [f'![final {metric} against {field}](sweep.png)', '']
  written['report'] = os.path.join(workdir, 'report.md')
  with open(written['report'], 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))
  return written


def main(argv: Sequence[str]) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog='python -m experiments.collect',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='directory holding the runs')
  parser.add_argument('--metric', default='eval/loss', help='tag plotted (default eval/loss)')
  args = parser.parse_args(argv)
  try:
    written = collect(args.workdir, args.metric)
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(written['table'])
  print(f"report: {written['report']}")
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
