r"""Runs the task x family x method grid and writes the table (see __init__.py).

  python -m experiments.finetune_table --workdir=runs/finetune-table [--steps=150]
"""
import contextlib
import dataclasses
import io
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

from experiments import collect, config_files  # pylint: disable=g-import-not-at-top
from experiments.compare_objectives import plan, runner  # pylint: disable=g-import-not-at-top
from ptlm_jax import config_lib  # pylint: disable=g-import-not-at-top

# task -> (families it suits, the metric reported: eval scalar, label, scale to %)
TASK_FAMILIES = {
    'rotten_tomatoes': (('bert', 'gpt', 't5'), 'task_accuracy', 'accuracy'),
    'shakespeare_ner': (('bert', 't5'), 'task_entity_f1', 'entity F1'),
    'shakespeare_qa': (('bert', 't5'), 'task_f1', 'SQuAD F1'),
    'news_headlines': (('gpt', 't5'), 'task_rougeL', 'ROUGE-L'),
}
# method -> (overrides, learning rate)
METHODS = {
    'full': ({}, 1e-3),
    'frozen': ({'peft.freeze_embeddings': True, 'peft.freeze_layers': 1}, 1e-3),
    'lora': ({'peft.method': 'lora', 'peft.lora_rank': 8, 'peft.lora_alpha': 16.0}, 3e-3),
    'prefix': ({'peft.method': 'prefix', 'model.prefix_length': 16}, 1e-2),
    'adapter': ({'peft.method': 'adapter', 'model.adapter_dim': 32}, 3e-3),
}

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
CELL_FILE = 'table_cell.json'  # a finished run's result, so that a rerun skips it


def run_config(task: str, family: str, method: str, source: str, steps: int, eval_examples: int):
  overrides, lr = METHODS[method]
  c = config_files.load(f'configs/finetune/{task}.py:{family}')
  c.init.source = os.path.abspath(source)
  c.optim.lr = lr
  c.optim.warmup_steps = max(1, steps // 10)
  c.train.update(steps=steps, eval_every=steps, checkpoint_every=steps, eval_steps=4,
                 log_every=max(1, steps // 5), keep_checkpoints=1)
  c.task.eval_examples = eval_examples
  if c.model.head == 'sequence_classification':
    # As in the comparison: [CLS] is never trained by these MLM runs (no next-sentence
    # task) and GPT's last token only by next-token prediction; the mean of the final
    # hidden states is a summary every family's pretraining shaped.
    c.model.pooling = 'mean'
  return config_files.override(c, overrides)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  from ptlm_jax import train  # pylint: disable=g-import-not-at-top
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
          train.run(config, run_dir)
        cell = write_cell(run_dir, task, family, method, FLAGS.steps,
                          time.perf_counter() - started)
        print(f'[table]   {cell["metric"]} {cell["value"]:.4f}, trainable '
              f'{100 * cell["trainable"] / cell["total"]:.2f}% ({cell["seconds"]:.0f}s)', flush=True)
      if cell is None and FLAGS.collect_only and finished(run_dir, task, FLAGS.steps):
        cell = write_cell(run_dir, task, family, method, FLAGS.steps, float('nan'))
      if cell is not None:
        results.append(cell)
        # Written after every run, so an interrupted grid still leaves its table.
        write_table(workdir, results)
  except config_lib.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if not results:
    print(f'error: no finished runs under {workdir}', file=sys.stderr)
    sys.exit(2)
  table = write_table(workdir, results)
  print(table)
  print(f'[table] {os.path.join(workdir, "table.md")}: {len(results)} of {len(grid)} runs, '
        f'{sum(r["seconds"] for r in results) / 60:.1f} min of runs')


def finished(run_dir: str, task: str, steps: int) -> bool:
  """Whether the run evaluated its task metric at its last step."""
  if not os.path.exists(os.path.join(run_dir, 'params_report.json')):
    return False
  points = collect.read_scalars(run_dir).get(f'eval/{TASK_FAMILIES[task][1]}', [])
  return bool(points) and points[-1][0] == steps


def read_cell(run_dir: str, steps: int) -> dict | None:
  """The result a finished run left (`table_cell.json`), if it ran `steps` updates."""
  path = os.path.join(run_dir, CELL_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    cell = json.load(f)
  return cell if cell.get('steps') == steps else None


def write_cell(run_dir: str, task: str, family: str, method: str, steps: int,
               seconds: float) -> dict:
  """The run's final task metric (TensorBoard events) and parameter counts, saved."""
  scalars = collect.read_scalars(run_dir)
  with open(os.path.join(run_dir, 'params_report.json'), encoding='utf-8') as f:
    report = json.load(f)
  metric = TASK_FAMILIES[task][1]
  value = scalars[f'eval/{metric}'][-1][1] if scalars.get(f'eval/{metric}') else float('nan')
  cell = dict(task=task, family=family, method=method, metric=metric, value=value,
              trainable=report['trainable'], total=report['total'], steps=steps,
              seconds=seconds)
  with open(os.path.join(run_dir, CELL_FILE), 'w', encoding='utf-8') as f:
    json.dump(cell, f, indent=2)
  return cell


def write_table(workdir: str, results: list[dict]) -> str:
  table = format_table(results, FLAGS.methods)
  with open(os.path.join(workdir, 'results.json'), 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(workdir, 'table.md'), 'w', encoding='utf-8') as f:
    f.write(table + '\n')
  return table


def format_table(results: list[dict], methods) -> str:
  """One row per (task, family): the metric (trainable %) under each method."""
  cells = {(r['task'], r['family'], r['method']): r for r in results}
  rows = []
  for task, family in dict.fromkeys((r['task'], r['family']) for r in results):
    label = TASK_FAMILIES[task][2]
    row = [task, family, label]
    for method in methods:
      r = cells.get((task, family, method))
      # Accuracy and entity F1 are fractions; SQuAD F1 and ROUGE are x100 already.
      scale = 100 if r and r['metric'] in ('task_accuracy', 'task_entity_f1') else 1
      row.append(f'{scale * r["value"]:.1f} ({100 * r["trainable"] / r["total"]:.3g}%)' if r else '–')
    rows.append(row)
  return collect.markdown_table(['task', 'family', 'metric'] + list(methods), rows)


if __name__ == '__main__':
  app.run(main)
