"""The grid of issue 6's results table: run configs, finished-run cells, the table.

`__main__.py` runs it (flags); see `__init__.py` for what each method does.
"""
import json
import os

from experiments import collect, config_files

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


def write_table(workdir: str, results: list[dict], methods) -> str:
  """table.md and results.json in `workdir` (also returns the table)."""
  table = format_table(results, methods)
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
