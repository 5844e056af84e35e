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


def run_config(task: str, family: str, method: str, source: str, steps: int, eval_examples: int):
  overrides, lr = METHODS[method]
  c = config_files.load(f'configs/finetune/{task}.py:{family}')
  c.init.source = os.path.abspath(source)
  c.optim.lr = lr
  c.optim.warmup_steps = max(1, steps // 10)
  c.train.update(steps=steps, eval_every=steps, checkpoint_every=steps, eval_steps=4,
                 log_every=max(1, steps // 5), keep_checkpoints=1)
  c.task.eval_examples = eval_examples
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
    sources = runner.ensure_pretrained(plan.Settings(), families, FLAGS.pretrained)
    results = []
    for i, (task, family, method) in enumerate(grid):
      run_dir = os.path.join(workdir, task, f'{family}-{method}')
      config = run_config(task, family, method, sources[family], FLAGS.steps, FLAGS.eval_examples)
      print(f'[table {i + 1}/{len(grid)}] {task} {family} {method} -> {run_dir}', flush=True)
      started = time.perf_counter()
      with contextlib.redirect_stdout(io.StringIO()):  # one line per run is enough here
        train.run(config, run_dir)
      scalars = collect.read_scalars(run_dir)
      with open(os.path.join(run_dir, 'params_report.json'), encoding='utf-8') as f:
        report = json.load(f)
      metric = TASK_FAMILIES[task][1]
      value = scalars[f'eval/{metric}'][-1][1] if scalars.get(f'eval/{metric}') else float('nan')
      results.append(dict(task=task, family=family, method=method, metric=metric, value=value,
                          trainable=report['trainable'], total=report['total'],
                          seconds=time.perf_counter() - started))
      print(f'[table]   {metric} {value:.4f}, trainable {100 * report["trainable"] / report["total"]:.2f}% '
            f'({results[-1]["seconds"]:.0f}s)', flush=True)
  except config_lib.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  table = format_table(results, FLAGS.methods)
  with open(os.path.join(workdir, 'results.json'), 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(workdir, 'table.md'), 'w', encoding='utf-8') as f:
    f.write(table + '\n')
  print(table)
  print(f'[table] {os.path.join(workdir, "table.md")}; total '
        f'{sum(r["seconds"] for r in results) / 60:.1f} min of runs')


def format_table(results: list[dict], methods) -> str:
  """One row per (task, family): the metric (trainable %) under each method."""
  cells = {(r['task'], r['family'], r['method']): r for r in results}
  rows = []
  for task, family in dict.fromkeys((r['task'], r['family']) for r in results):
    label = TASK_FAMILIES[task][2]
    row = [task, family, label]
    for method in methods:
      r = cells.get((task, family, method))
      scale = 100 if r and r['metric'] == 'task_accuracy' else 1  # SQuAD / ROUGE are x100 already
      row.append(f'{scale * r["value"]:.1f} ({100 * r["trainable"] / r["total"]:.3g}%)' if r else '–')
    rows.append(row)
  return collect.markdown_table(['task', 'family', 'metric'] + list(methods), rows)


if __name__ == '__main__':
  app.run(main)
