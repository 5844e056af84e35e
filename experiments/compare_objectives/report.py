"""report.md and the two plots of the objective comparison.

  paths = report.write(results, workdir)   # {'report': ..., 'loss_plot': ..., 'accuracy_plot': ...}

With several seeds every number is `mean ± standard deviation` over the seeds (sample
standard deviation, n - 1); the loss curves are drawn per seed.  Downstream accuracy
is on the rotten_tomatoes validation split; its binomial standard error,
sqrt(p (1 - p) / n), is printed beside the verdict so that a difference can be read
against it.
"""
from __future__ import annotations

import math
import os
import statistics

from experiments import collect
from experiments.compare_objectives import plan

REPORT = 'report.md'
LOSS_PLOT = 'val_loss_vs_flops.png'
ACCURACY_PLOT = 'downstream_accuracy.png'
COLORS = {'bert': 'tab:blue', 'gpt': 'tab:orange', 't5': 'tab:green'}

PRETRAIN_HEADER = ('objective', 'family', 'params', 'steps', 'tokens seen', 'training FLOPs',
                   'val loss', 'val accuracy', 'val perplexity', 'wall time (s)')
DOWNSTREAM_HEADER = ('objective', 'family', 'accuracy pretrained', 'accuracy from scratch',
                     'gain (points)', 'wall time pretrained / scratch (s)')


def mean_std(values) -> tuple[float, float]:
  values = [float(v) for v in values]
  mean = statistics.fmean(values)
  return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _cell(values, fmt: str) -> str:
  mean, std = mean_std(values)
  if len(values) == 1:
    return format(mean, fmt)
  return f"{format(mean, fmt)} ± {format(std, fmt.lstrip('+'))}"  # a spread has no sign


def _by_family(items, family):
  return [x for x in items if x.family == family]


def gains(results) -> dict[str, list[float]]:
  """Accuracy points gained by pretraining, per family, one value per seed."""
  out = {}
  for family in plan.FAMILIES:
    fts = _by_family(results.finetuning, family)
    pre = {x.seed: x.accuracy for x in fts if x.pretrained}
    scratch = {x.seed: x.accuracy for x in fts if not x.pretrained}
    out[family] = [100 * (pre[s] - scratch[s]) for s in sorted(pre) if s in scratch]
  return out


def pretraining_rows(results) -> list[list[str]]:
  rows = []
  for family in plan.FAMILIES:
    runs = _by_family(results.pretraining, family)
    if not runs:
      continue
    first = runs[0]
    rows.append([first.objective, family, f'{first.params:,}', _cell([r.steps for r in runs], '.0f'),
                 _cell([r.tokens for r in runs], ',.0f'),
                 _cell([r.steps * r.flops_per_step for r in runs], '.3e'),
                 _cell([r.eval_loss for r in runs], '.4f'),
                 _cell([r.eval_accuracy for r in runs], '.4f'),
                 _cell([r.eval_perplexity for r in runs], '.1f'),
                 _cell([r.seconds for r in runs], '.0f')])
  return rows


def downstream_rows(results) -> list[list[str]]:
  rows, gain = [], gains(results)
  for family in plan.FAMILIES:
    fts = _by_family(results.finetuning, family)
    if not fts:
      continue
    pre = [x for x in fts if x.pretrained]
    scratch = [x for x in fts if not x.pretrained]
    rows.append([plan.OBJECTIVE[family], family, _cell([x.accuracy for x in pre], '.4f'),
                 _cell([x.accuracy for x in scratch], '.4f'),
                 _cell(gain[family], '+.1f') if gain[family] else '–',
                 f"{_cell([x.seconds for x in pre], '.0f')} / "
                 f"{_cell([x.seconds for x in scratch], '.0f')}"])
  return rows


def verdict(results) -> str:
  """One paragraph: which objectives beat from-scratch, against the evaluation noise."""
  fts = results.finetuning
  if not fts:
    return 'No fine-tuning results.'
  n = fts[0].examples
  p = statistics.fmean(x.accuracy for x in fts)
  se = 100 * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))
  gain = {f: mean_std(g)[0] for f, g in gains(results).items() if g}
  better = [f'{plan.OBJECTIVE[f]} ({f}, {g:+.1f} points)' for f, g in gain.items() if g > 0]
  noise = (f'One accuracy on {n:,} validation snippets has a binomial standard error of '
           f'{se:.1f} points (a difference of two such numbers: {se * math.sqrt(2):.1f}).')
  if better:
    clear = [f for f, g in gain.items() if g > 2 * se * math.sqrt(2)]
    head = 'Pretraining beats training from scratch for ' + ', '.join(better) + '. '
    if clear:
      head += ('Beyond twice the standard error of a difference: '
               + ', '.join(plan.OBJECTIVE[f] for f in clear) + '. ')
    else:
      head += 'No gain exceeds twice the standard error of a difference, so at this scale the ' \
              'advantage is within evaluation noise. '
    return head + noise
  return ('At this scale pretraining does not beat training from scratch for any objective '
          f'(gains: {", ".join(f"{f} {g:+.1f}" for f, g in gain.items())} points). ' + noise +
          ' See the README for the scale at which it does.')


def _plot_losses(path: str, results) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  labelled = set()
  for r in results.pretraining:
    if not r.curve:
      continue
    label = f'{r.objective} ({r.family})' if r.family not in labelled else None
    labelled.add(r.family)
    ax.plot([c[0] for c in r.curve], [c[1] for c in r.curve], marker='o', markersize=3,
            color=COLORS[r.family], label=label, alpha=0.9)
  ax.set_xlabel('training FLOPs')
  ax.set_ylabel('validation loss (own objective, nats/target)')
  ax.set_title('Pretraining at matched compute')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _plot_accuracy(path: str, results) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  families = [f for f in plan.FAMILIES if _by_family(results.finetuning, f)]
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  width = 0.38
  for offset, pretrained, color in ((-width / 2, True, 'tab:purple'),
                                    (width / 2, False, 'tab:gray')):
    stats = [mean_std([x.accuracy for x in _by_family(results.finetuning, f)
                       if x.pretrained == pretrained]) for f in families]
    xs = [i + offset for i in range(len(families))]
    bars = ax.bar(xs, [100 * m for m, _ in stats], width, yerr=[100 * s for _, s in stats],
                  color=color, capsize=4, label='pretrained' if pretrained else 'from scratch')
    for bar, (m, _) in zip(bars, stats):
      ax.annotate(f'{100 * m:.1f}', (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                  ha='center', va='bottom', fontsize=8)
  ax.set_xticks(range(len(families)))
  ax.set_xticklabels([f'{plan.OBJECTIVE[f]}\n({f})' for f in families])
  ax.set_ylabel('rotten_tomatoes validation accuracy (%)')
  low = min(100 * x.accuracy for x in results.finetuning)
  ax.set_ylim(max(0, 10 * math.floor(low / 10) - 10), 100)
  ax.axhline(50, color='black', linewidth=0.8, linestyle=':')
  ax.legend(loc='upper right')
  ax.grid(axis='y', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(results, workdir: str, seeds: int) -> dict[str, str]:
  s = results.settings
  paths = {'report': os.path.join(workdir, REPORT), 'loss_plot': os.path.join(workdir, LOSS_PLOT),
           'accuracy_plot': os.path.join(workdir, ACCURACY_PLOT)}
  _plot_losses(paths['loss_plot'], results)
  _plot_accuracy(paths['accuracy_plot'], results)
  ft = s.finetune_train_split
  lines = [
      '# Pretraining objectives at matched compute',
      '',
      f'Tiny models (d_model {s.d_model}, {s.num_layers} layers, T5: {s.num_layers} + '
      f'{s.num_layers}; {s.num_heads} heads) pretrained on the `{s.corpus}` corpus with one '
      f'{s.sp_vocab_size}-piece tokenizer, rows of {s.seq_len} tokens, batch {s.batch_size}, '
      'the same document order, and the same training compute: FLOPs per step from '
      '`ptlm_jax/flops.py` (the figure the trainer prints), steps = round('
      f'{s.budget_flops:.3g} / FLOPs per step). '
      + (f'{seeds} seeds: mean ± standard deviation.' if seeds > 1 else 'One seed.'),
      '',
      '## Pretraining',
      '',
      collect.markdown_table(PRETRAIN_HEADER, pretraining_rows(results)),
      '',
      'Validation loss, accuracy and perplexity are over each objective\'s own targets '
      '(masked pieces, next pieces, corrupted spans), so they rank runs of one objective, not '
      'the objectives against each other; tokens seen are the packed positions read (span '
      'corruption reads longer raw rows than it feeds the encoder).',
      '',
      f'![validation loss against training FLOPs]({LOSS_PLOT})',
      '',
      '## Downstream: rotten_tomatoes sentiment',
      '',
      f'Each pretrained model and the identical model from random weights are fine-tuned with '
      f'the same recipe: a classification head, AdamW at {s.finetune_lr:g} with 10% warmup and '
      f'linear decay, {s.finetune_steps} steps of batch {s.finetune_batch_size} on `{ft}`, '
      'dropout 0.1; accuracy on the validation split.',
      '',
      collect.markdown_table(DOWNSTREAM_HEADER, downstream_rows(results)),
      '',
      verdict(results),
      '',
      f'![downstream accuracy]({ACCURACY_PLOT})',
      '',
      f'Total wall time: {results.seconds / 60:.1f} min (tokenizer, FLOPs count, '
      f'{len(results.pretraining)} pretraining and {len(results.finetuning)} fine-tuning runs).',
      '',
  ]
  with open(paths['report'], 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))
  return paths
