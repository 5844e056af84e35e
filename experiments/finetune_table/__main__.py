r"""Runs the task x family x method grid and writes the table (see __init__.py).

  python -m experiments.finetune_table --workdir=runs/finetune-table [--seeds=3] [--steps=0]
"""
import contextlib
import io
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app, flags  # pylint: disable=g-import-not-at-top

from experiments.compare_objectives import plan, runner  # pylint: disable=g-import-not-at-top
from experiments.finetune_table.grid import (  # pylint: disable=g-import-not-at-top
    METHODS, TASK_FAMILIES, finished, read_cell, recipe, run_config, run_dir, write_cell,
    write_table)
from ptlm_jax import errors
from ptlm_jax.main import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', 'runs/finetune-table', 'Where the runs and table.md go.')
flags.DEFINE_string('pretrained', 'runs/compare/seed0',
                    'Directory of <family>-<objective>-pretrain runs (made here when missing).')
flags.DEFINE_integer('steps', 0, "Fine-tuning updates per run (0: the objective comparison's "
                     'recipe for its tasks, 150 for the others).')
flags.DEFINE_integer('seeds', 2, 'Fine-tuning seeds per cell.')
flags.DEFINE_integer('eval_examples', 0, 'Validation examples the task metric is computed on '
                     '(0: all, as the comparison).')
flags.DEFINE_list('tasks', list(TASK_FAMILIES), 'Tasks to run.')
flags.DEFINE_list('families', ['bert', 'gpt', 't5'], 'Families to run (where a task suits them).')
flags.DEFINE_list('methods', list(METHODS), 'Methods to run.')
flags.DEFINE_bool('collect_only', False, 'Train nothing: the table of the runs already finished.')


def run():
  from ptlm_jax import main  # pylint: disable=g-import-not-at-top
  cli.quiet_logs()
  workdir = os.path.abspath(FLAGS.workdir)
  os.makedirs(workdir, exist_ok=True)
  runner.enable_compilation_cache(os.path.join(workdir, '.jax_cache'))
  grid = [(t, f, m, k) for t in FLAGS.tasks for f in TASK_FAMILIES[t][0] if f in FLAGS.families
          for m in FLAGS.methods for k in range(FLAGS.seeds)]
  families = sorted({f for _, f, _, _ in grid})
  sources = {} if FLAGS.collect_only else runner.ensure_pretrained(
      plan.Settings(), families, FLAGS.pretrained)
  results = []
  for i, (task, family, method, seed) in enumerate(grid):
    directory = run_dir(workdir, task, family, method, seed)
    steps = recipe(task, FLAGS.steps)[0]
    cell = read_cell(directory, steps)
    if cell is None and not FLAGS.collect_only:
      config = run_config(task, family, method, sources[family], FLAGS.steps,
                          FLAGS.eval_examples, seed)
      print(f'[table {i + 1}/{len(grid)}] {task} {family} {method} seed {seed} -> {directory}',
            flush=True)
      started = time.perf_counter()
      with contextlib.redirect_stdout(io.StringIO()):  # one line per run is enough here
        main.run(config, directory)
      cell = write_cell(directory, task, family, method, steps,
                        time.perf_counter() - started, seed)
      print(f'[table]   {cell["metric"]} {cell["value"]:.4f}, trainable '
            f'{100 * cell["trainable"] / cell["total"]:.2f}% ({cell["seconds"]:.0f}s)', flush=True)
    if cell is None and FLAGS.collect_only and finished(directory, task, steps):
      cell = write_cell(directory, task, family, method, steps, float('nan'), seed)
    if cell is not None:
      results.append(cell)
      # Written after every run, so an interrupted grid still leaves its table.
      write_table(workdir, results, FLAGS.methods)
  if not results:
    raise errors.UserError(f'no finished runs under {workdir}')
  table = write_table(workdir, results, FLAGS.methods)
  print(table)
  print(f'[table] {os.path.join(workdir, "table.md")}: {len(results)} of {len(grid)} runs, '
        f'{sum(r["seconds"] for r in results) / 60:.1f} min of runs')


if __name__ == '__main__':
  app.run(errors.one_line_errors(run))
