r"""Runs the task x family x method grid and writes the table (see __init__.py).

  python -m experiments.finetune_table --workdir=runs/finetune-table [--steps=150]
"""
import contextlib
import io
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

from experiments.compare_objectives import plan, runner  # pylint: disable=g-import-not-at-top
from experiments.finetune_table.grid import (  # pylint: disable=g-import-not-at-top
    METHODS, TASK_FAMILIES, finished, read_cell, run_config, write_cell, write_table)
from ptlm_jax import errors

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', 'runs/finetune-table', 'Where the runs and table.md go.')
flags.DEFINE_string('pretrained', 'runs/compare/seed0',
                    'Directory of <family>-pretrain runs (made here when missing).')
flags.DEFINE_integer('steps', 150, 'Fine-tuning updates per run.')
flags.DEFINE_integer('eval_examples', 200, 'Validation examples the task metric is computed on.')
flags.DEFINE_list('tasks', list(TASK_FAMILIES), 'Tasks to run.')
flags.DEFINE_list('families', ['bert', 'gpt', 't5'], 'Families to run (where a task suits them).')
flags.DEFINE_list('methods', list(METHODS), 'Methods to run.')
flags.DEFINE_bool('collect_only', False, 'Train nothing: the table of the runs already finished.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  from ptlm_jax import main  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(FLAGS.workdir)
  os.makedirs(workdir, exist_ok=True)
  runner.enable_compilation_cache(os.path.join(workdir, '.jax_cache'))
  grid = [(t, f, m) for t in FLAGS.tasks for f in TASK_FAMILIES[t][0] if f in FLAGS.families
          for m in FLAGS.methods]
  families = sorted({f for _, f, _ in grid})
  try:
    sources = {} if FLAGS.collect_only else runner.ensure_pretrained(
        plan.Settings(), families, FLAGS.pretrained)
    results = []
    for i, (task, family, method) in enumerate(grid):
      run_dir = os.path.join(workdir, task, f'{family}-{method}')
      cell = read_cell(run_dir, FLAGS.steps)
      if cell is None and not FLAGS.collect_only:
        config = run_config(task, family, method, sources[family], FLAGS.steps,
                            FLAGS.eval_examples)
        print(f'[table {i + 1}/{len(grid)}] {task} {family} {method} -> {run_dir}', flush=True)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # one line per run is enough here
          main.run(config, run_dir)
        cell = write_cell(run_dir, task, family, method, FLAGS.steps,
                          time.perf_counter() - started)
        print(f'[table]   {cell["metric"]} {cell["value"]:.4f}, trainable '
              f'{100 * cell["trainable"] / cell["total"]:.2f}% ({cell["seconds"]:.0f}s)', flush=True)
      if cell is None and FLAGS.collect_only and finished(run_dir, task, FLAGS.steps):
        cell = write_cell(run_dir, task, family, method, FLAGS.steps, float('nan'))
      if cell is not None:
        results.append(cell)
        # Written after every run, so an interrupted grid still leaves its table.
        write_table(workdir, results, FLAGS.methods)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if not results:
    print(f'error: no finished runs under {workdir}', file=sys.stderr)
    sys.exit(2)
  table = write_table(workdir, results, FLAGS.methods)
  print(table)
  print(f'[table] {os.path.join(workdir, "table.md")}: {len(results)} of {len(grid)} runs, '
        f'{sum(r["seconds"] for r in results) / 60:.1f} min of runs')


if __name__ == '__main__':
  app.run(main)
