"""The grid of issue 6's results table: run configs, finished-run cells, the table.

`__main__.py` runs it (flags); see `__init__.py` for what each method does.
"""
import json
import os

import numpy as np

from experiments import collect, config_files, stats
from experiments.compare_objectives import downstream, plan

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


def recipe(task: str, steps: int = 0) -> tuple[int, str]:
  """(updates, train split) of the objective comparison's recipe for `task` (plan.Settings).

  Tasks the comparison does not run keep the config's whole train split; `steps` > 0
  overrides the number of updates.
  """
  s = plan.Settings()
  own = {'rotten_tomatoes': (s.finetune_steps, s.finetune_train_split),
         'shakespeare_ner': (s.ner_steps, s.ner_train_split)}
  default_steps, split = own.get(task, (DEFAULT_STEPS, ''))
  return steps or default_steps, split


DEFAULT_STEPS = 150  # tasks outside the comparison's recipe


def run_dir(workdir: str, task: str, family: str, method: str, seed: int) -> str:
  """`<task>/<family>-<method>` for seed 0 (as before seeds), `...-s<k>` for the others."""
  return os.path.join(workdir, task, f'{family}-{method}' + (f'-s{seed}' if seed else ''))


def run_config(task: str, family: str, method: str, source: str, steps: int, eval_examples: int,
               seed: int = 0):
  """One cell's run: the comparison's recipe (`recipe`), the method's learning rate, `seed`."""
  overrides, lr = METHODS[method]
  steps, split = recipe(task, steps)
  c = config_files.load(f'configs/finetune/{task}.py:{family}')
  c.init.source = os.path.abspath(source)
  if split:
    c.data.train_split = split
  c.data.shuffle_seed = c.train.seed = plan.finetune_seed(0, seed)
  c.optim.lr = lr
  c.optim.warmup_steps = max(1, steps // 10)
  c.train.update(steps=steps, eval_every=steps, checkpoint_every=steps, eval_steps=4,
                 log_every=max(1, steps // 5), keep_checkpoints=1)
  c.model.dropout_rate = c.model.attention_dropout_rate = 0.1  # as the comparison
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


def read_cell(run_dir: str, steps: int) -> dict | None:  # steps: the recipe's, see `recipe`
  """The result a finished run left (`table_cell.json`), if it ran `steps` updates."""
  path = os.path.join(run_dir, CELL_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    cell = json.load(f)
  return cell if cell.get('steps') == steps else None


def write_cell(run_dir: str, task: str, family: str, method: str, steps: int,
               seconds: float, seed: int = 0) -> dict:
  """The run's final task metric (TensorBoard events) and parameter counts, saved.

  For the comparison's tasks (downstream.TASKS) the run's per-example counts are kept
  too (`counts-<step>.npy`), which the table's intervals and tests read.
  """
  scalars = collect.read_scalars(run_dir)
  with open(os.path.join(run_dir, 'params_report.json'), encoding='utf-8') as f:
    report = json.load(f)
  metric = TASK_FAMILIES[task][1]
  value = scalars[f'eval/{metric}'][-1][1] if scalars.get(f'eval/{metric}') else float('nan')
  cell = dict(task=task, family=family, method=method, metric=metric, value=value,
              trainable=report['trainable'], total=report['total'], steps=steps,
              seconds=seconds, seed=seed)
  if task in downstream.TASKS:
    downstream.run_counts(run_dir)
    cell['counts'] = os.path.basename(downstream.counts_path(run_dir))
  with open(os.path.join(run_dir, CELL_FILE), 'w', encoding='utf-8') as f:
    json.dump(cell, f, indent=2)
  return cell


def write_table(workdir: str, results: list[dict], methods) -> str:
  """table.md and results.json in `workdir` (also returns the table)."""
  table = format_table(results, methods, workdir)
  with open(os.path.join(workdir, 'results.json'), 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(workdir, 'table.md'), 'w', encoding='utf-8') as f:
    f.write(table + '\n')
  return table


def _counts(workdir: str, cells: list[dict]) -> np.ndarray | None:
  """F x N x K per-example counts of a cell's seeds, or None when some run has none."""
  if not workdir or not cells or not all(c.get('counts') for c in cells):
    return None
  paths = [os.path.join(run_dir(workdir, c['task'], c['family'], c['method'], c.get('seed', 0)),
                        c['counts']) for c in cells]
  if not all(os.path.exists(p) for p in paths):
    return None
  return np.stack([np.load(p) for p in paths])


def format_table(results: list[dict], methods, workdir: str = '') -> str:
  """One row per (task, family): the metric (trainable %) under each method.

  With per-example counts (the comparison's tasks), a cell is the mean over its seeds with
  the 95% bootstrap interval, and every method other than full gets its difference to full
  with p (the larger of the paired bootstrap and sign-flip p, as the comparison's report);
  otherwise the mean ± standard deviation over the seeds.
  """
  groups = {}
  for r in results:
    groups.setdefault((r['task'], r['family'], r['method']), []).append(r)
  rows = []
  for task, family in dict.fromkeys((r['task'], r['family']) for r in results):
    label = TASK_FAMILIES[task][2]
    row = [task, family, label]
    metric = downstream.TASKS[task].metric if task in downstream.TASKS else None
    counts = {m: _counts(workdir, groups.get((task, family, m), [])) for m in methods}
    usable = {m: c for m, c in counts.items() if c is not None and metric is not None}
    sizes = {c.shape for c in usable.values()}
    reps = stats.bootstrap(usable, metric, replicates=1000) if usable and len(sizes) == 1 else {}
    for method in methods:
      cells = groups.get((task, family, method), [])
      if not cells:
        row.append('–')
        continue
      r = cells[0]
      share = f'{100 * r["trainable"] / r["total"]:.3g}%'
      if method in reps:
        low, high = stats.interval(reps[method])
        value = stats.score(usable[method], metric)
        text = f'{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]'
        if method != 'full' and 'full' in reps:
          d = reps[method] - reps['full']
          p = max(stats.p_value(d), stats.sign_flip_p(usable[method], usable['full'], metric, 1000))
          text += f' Δ {100 * (value - stats.score(usable["full"], metric)):+.1f} p {stats.format_p(p)}'
      else:
        # Accuracy and entity F1 are fractions; SQuAD F1 and ROUGE are x100 already.
        scale = 100 if r['metric'] in ('task_accuracy', 'task_entity_f1') else 1
        values = [scale * c['value'] for c in cells]
        text = f'{np.mean(values):.1f}' + (f' ± {np.std(values, ddof=1):.1f}' if len(values) > 1 else '')
      row.append(f'{text} ({share})')
    rows.append(row)
  return collect.markdown_table(['task', 'family', 'metric'] + list(methods), rows)
