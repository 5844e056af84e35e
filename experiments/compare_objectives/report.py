"""report.md and the two plots of the objective comparison.

  paths = report.write(results, workdir, seeds)   # {'report': ..., 'loss_plot': ..., 'accuracy_plot': ...}

Pretraining numbers with several seeds are `mean ± standard deviation` (sample standard
deviation, n - 1).  Downstream numbers are paired statistics over the validation
examples and the runs (analysis.py, experiments/stats.py): a score is the mean over a
model's runs with its 95% bootstrap interval in brackets, a gain or a difference comes
with its interval and two-sided p, and the verdict is written from those numbers.
"""
from __future__ import annotations

import os
import statistics

from experiments import collect, stats
from experiments.compare_objectives import analysis, plan

REPORT = 'report.md'
LOSS_PLOT = 'val_loss_vs_flops.png'
PROBE_PLOT = 'probe_vs_flops.png'
ACCURACY_PLOT = 'downstream_accuracy.png'
COLORS = {'bert': 'tab:blue', 'gpt': 'tab:orange', 't5': 'tab:green'}
STYLES = {'mlm': '-', 'causal_lm': '-', 'span_corruption': '-', 'prefix_lm': '--', 'ul2': ':'}

PRETRAIN_HEADER = ('arm', 'architecture', 'params', 'steps', 'tokens seen', 'training FLOPs',
                   'val loss (own objective)', 'val accuracy', 'val perplexity',
                   'probe accuracy [95% CI]', 'wall time (s)')
DOWNSTREAM_HEADER = ('arm', 'runs', 'pretrained [95% CI]', 'from scratch [95% CI]',
                     'gain (points) [95% CI]', 'p bootstrap', 'p sign-flip', 'McNemar p per run',
                     'rank [95% CI]', 'P(best)')
PAIR_HEADER = ('held fixed', 'a', 'b', 'a minus b (points) [95% CI]', 'p bootstrap',
               'p sign-flip')
BASELINE_HEADER = ('baseline', 'score [95% CI]')
ALPHA = 0.05


def mean_std(values) -> tuple[float, float]:
  values = [float(v) for v in values]
  mean = statistics.fmean(values)
  return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _cell(values, fmt: str) -> str:
  mean, std = mean_std(values)
  if len(values) == 1:
    return format(mean, fmt)
  return f"{format(mean, fmt)} ± {format(std, fmt.lstrip('+'))}"  # a spread has no sign


def pretraining_rows(results, probe: analysis.ProbeSummary | None = None) -> list[list[str]]:
  rows = []
  for arm in dict.fromkeys(r.arm for r in results.pretraining):
    runs = [r for r in results.pretraining if r.arm == arm]
    first = runs[0]
    final = probe.final.get(arm) if probe else None
    rows.append([arm, plan.ARCHITECTURE[first.family], f'{first.params:,}',
                 _cell([r.steps for r in runs], '.0f'),
                 _cell([r.tokens for r in runs], ',.0f'),
                 _cell([r.steps * r.flops_per_step for r in runs], '.3e'),
                 _cell([r.eval_loss for r in runs], '.4f'),
                 _cell([r.eval_accuracy for r in runs], '.4f'),
                 _cell([r.eval_perplexity for r in runs], '.1f'),
                 _ci(final) if final else '–',
                 _cell([r.seconds for r in runs], '.0f')])
  return rows


def _pts(x: float) -> str:
  return f'{100 * x:.1f}'


def _ci(e: analysis.Estimate, sign: str = '') -> str:
  return f'{100 * e.value:{sign}.1f} [{_pts(e.low)}, {_pts(e.high)}]'


def downstream_rows(summary: analysis.TaskSummary) -> list[list[str]]:
  rows = []
  for o in summary.objectives.values():
    mcnemar = ', '.join(stats.format_p(m.p) for m in o.mcnemar) or '–'
    r = o.rank
    rows.append([o.arm.name, str(o.runs), _ci(o.pretrained), _ci(o.scratch),
                 _ci(o.gain, '+'), stats.format_p(o.gain.p_boot), stats.format_p(o.gain.p_flip),
                 mcnemar,
                 f'{r.observed:g} [{r.low:g}, {r.high:g}]', f'{r.p_best:.2f}'])
  return rows


def baseline_rows(summary: analysis.TaskSummary) -> tuple[list[str], list[list[str]]]:
  """Baselines, then each objective's pretrained score minus each baseline (with p)."""
  rows = [[name, _ci(e)] for name, e in summary.baselines.items()]
  header = ['arm (pretrained) minus'] + [f'{b} [95% CI], p' for b in summary.baselines]
  diffs = [[o.arm.name] + [f'{_ci(d, "+")}, p {stats.format_p(d.p)}'
                            for d in o.vs_baseline.values()] for o in summary.objectives.values()]
  return rows, [header] + diffs


def _names(objs) -> str:
  return ', '.join(f'{o.arm.name} ({100 * o.gain.value:+.1f} points, p '
                   f'{stats.format_p(o.gain.p)})' for o in objs)


def pair_rows(pairs) -> list[list[str]]:
  return [[p.fixed, p.a.name, p.b.name, _ci(p.difference, '+'),
           stats.format_p(p.difference.p_boot), stats.format_p(p.difference.p_flip)]
          for p in pairs]


def attribution(pair: analysis.Pair) -> str:
  """One pair in words: which factor is held, who beats whom by how much, or no difference."""
  a, b, d = pair.a, pair.b, pair.difference
  if pair.fixed == 'architecture':
    context = f'on the {plan.ARCHITECTURE[a.family]}'
    x, y = plan.OBJECTIVE_WORDS[a.objective], plan.OBJECTIVE_WORDS[b.objective]
  else:
    context = f'with {plan.OBJECTIVE_WORDS[a.objective]}'
    x, y = f'the {plan.ARCHITECTURE[a.family]}', f'the {plan.ARCHITECTURE[b.family]}'
  interval = f'[{_pts(abs(d.low) if d.value > 0 else -d.high)}, ' \
             f'{_pts(d.high if d.value > 0 else -d.low)}]'
  if d.p < ALPHA:
    winner, loser = (x, y) if d.value > 0 else (y, x)
    return (f'{context}, {winner} beats {loser} by {100 * abs(d.value):.1f} points {interval}, '
            f'p {stats.format_p(d.p)}')
  return (f'{context}, {x} and {y} do not differ significantly ({x} minus {y}: '
          f'{_ci(d, "+")} points, p {stats.format_p(d.p)})')


def verdict(summary: analysis.TaskSummary) -> str:
  """What the numbers of one task say, in words, from the tests above (alpha 0.05)."""
  objs = list(summary.objectives.values())
  if not objs:
    return 'No fine-tuning results.'
  metric = summary.metric_label
  up = [o for o in objs if o.gain.p < ALPHA and o.gain.value > 0]
  down = [o for o in objs if o.gain.p < ALPHA and o.gain.value < 0]
  flat = [o for o in objs if o.gain.p >= ALPHA]
  out = []
  if up:
    out.append(f'Pretraining beats training from scratch, significantly (p < {ALPHA}), for '
               f'{_names(up)}.')
  if down:
    out.append(f'Pretraining is significantly worse than training from scratch for {_names(down)}.')
  if flat:
    out.append(f'No significant difference from scratch (p >= {ALPHA}): {_names(flat)}.')
  best = min(objs, key=lambda o: o.rank.observed)
  r = best.rank
  if r.high <= 1:
    out.append(f'{best.arm.name} transfers best: it ranks first in every resample '
               f'({metric} {_ci(best.pretrained)}).')
  else:
    out.append(f'The ranking is not settled: {best.arm.name} has the best {metric} '
               f'({_ci(best.pretrained)}) but ranks first in only {100 * r.p_best:.0f}% of '
               f'the resamples (rank interval [{r.low:g}, {r.high:g}]).')
  if summary.pairs:
    out.append('Attribution (one factor held fixed): '
               + '; '.join(attribution(p) for p in summary.pairs) + '.')
  for name, e in summary.baselines.items():
    beat = [o for o in objs if o.vs_baseline[name].p < ALPHA and o.vs_baseline[name].value > 0]
    lose = [o for o in objs if o.vs_baseline[name].p < ALPHA and o.vs_baseline[name].value < 0]
    d = best.vs_baseline[name]
    line = (f'Against the {name} baseline ({_ci(e)}): the best arm is '
            f'{100 * d.value:+.1f} points [{_pts(d.low)}, {_pts(d.high)}], p '
            f'{stats.format_p(d.p)}; ')
    if len(beat) == len(objs):
      line += 'every pretrained model beats it significantly.'
    elif not beat and lose:
      line += (f'{len(lose)} of {len(objs)} pretrained models are significantly worse than it, '
               'none better.')
    else:
      line += (f'{len(beat)} of {len(objs)} pretrained models beat it significantly'
               + (f', {len(lose)} are significantly worse.' if lose else '.'))
    out.append(line)
  return ' '.join(out)


def _save_flops_plot(plt, fig, ax, path: str, ylabel: str, title: str) -> None:
  """Labels a plot against training FLOPs and writes it to `path`."""
  ax.set_xlabel('training FLOPs')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _plot_losses(path: str, results) -> None:
  plt = collect.pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  labelled = set()
  for r in results.pretraining:
    if not r.curve:
      continue
    label = r.arm if r.arm not in labelled else None
    labelled.add(r.arm)
    ax.plot([c[0] for c in r.curve], [c[1] for c in r.curve], marker='o', markersize=3,
            color=COLORS[r.family], linestyle=STYLES.get(r.objective, '-'), label=label, alpha=0.9)
  _save_flops_plot(plt, fig, ax, path, 'validation loss (own objective, nats/target)',
                   'Pretraining at matched compute (each on its own objective)')


def _plot_probe(path: str, probe: analysis.ProbeSummary) -> None:
  """Probe accuracy against training FLOPs, one line per arm, 95% intervals as bands."""
  plt = collect.pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  for arm, curve in probe.curves.items():
    family, objective = arm.split(':')
    x = [f for f, _ in curve]
    ax.plot(x, [100 * e.value for _, e in curve], marker='o', markersize=3, color=COLORS[family],
            linestyle=STYLES.get(objective, '-'), label=arm)
    ax.fill_between(x, [100 * e.low for _, e in curve], [100 * e.high for _, e in curve],
                    color=COLORS[family], alpha=0.12)
  for (name, e), style in zip(probe.baselines.items(), ('dotted', 'dashed')):
    ax.axhline(100 * e.value, color='black', linewidth=0.9, linestyle=style,
               label=f'{name} ({100 * e.value:.1f})')
  _save_flops_plot(plt, fig, ax, path, 'linear probe accuracy, rotten_tomatoes validation (%)',
                   'One metric for every arm during pretraining')


def _plot_downstream(path: str, summaries: dict[str, analysis.TaskSummary]) -> None:
  """One panel per task: pretrained and scratch scores with 95% intervals; baselines as lines."""
  plt = collect.pyplot()
  fig, axes = plt.subplots(1, max(1, len(summaries)), figsize=(6.4 * max(1, len(summaries)), 4.4),
                           squeeze=False)
  width = 0.38
  for ax, summary in zip(axes[0], summaries.values()):
    objs = list(summary.objectives.values())
    for offset, arm, color, label in ((-width / 2, 'pretrained', 'tab:purple', 'pretrained'),
                                      (width / 2, 'scratch', 'tab:gray', 'from scratch')):
      es = [getattr(o, arm) for o in objs]
      yerr = [[100 * (e.value - e.low) for e in es], [100 * (e.high - e.value) for e in es]]
      bars = ax.bar([i + offset for i in range(len(objs))], [100 * e.value for e in es], width,
                    yerr=yerr, color=color, capsize=4, label=label)
      for bar, e in zip(bars, es):
        ax.annotate(f'{100 * e.value:.1f}', (bar.get_x() + bar.get_width() / 2, 100 * e.high),
                    ha='center', va='bottom', fontsize=8)
    for (name, e), style in zip(summary.baselines.items(), ('dotted', 'dashed', 'dashdot')):
      ax.axhline(100 * e.value, color='black', linewidth=0.9, linestyle=style,
                 label=f'{name} ({100 * e.value:.1f})')
    ax.set_xticks(range(len(objs)))
    ax.set_xticklabels([f'{o.objective}\n({o.family})' for o in objs], fontsize=8)
    ax.set_ylabel(f'{summary.task} validation {summary.metric_label} (%)')
    ax.set_title(f'{summary.task}: mean of {objs[0].runs if objs else 0} runs, 95% intervals')
    ax.legend(loc='lower right', fontsize=8)
    ax.grid(axis='y', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _recipe(s: plan.Settings, task: str) -> str:
  if task == 'rotten_tomatoes':
    what, steps, split = 'a classification head (mean of the final hidden states)', \
        s.finetune_steps, s.finetune_train_split
  else:
    what, steps, split = 'a token-classification head', s.ner_steps, s.ner_train_split
  return (f'Recipe: {what}, AdamW at {s.finetune_lr:g} with 10% warmup and linear decay, '
          f'{steps} steps of batch {s.finetune_batch_size} on `{split}`, dropout 0.1; '
          f'{s.finetune_seeds} fine-tuning seed(s) per model (seed = pretraining seed + 1000 x '
          'fine-tuning seed: head initialisation, data order, dropout; the from-scratch model '
          'of an architecture uses the same seeds and serves every arm of that architecture). '
          'The recipe was chosen by measuring validation '
          'curves of longer runs (README, "Fine-tuning recipe").')


TASK_TITLES = {'rotten_tomatoes': 'rotten_tomatoes sentiment (accuracy)',
               'shakespeare_ner': 'shakespeare_ner silver named entities (entity F1)'}
STATISTICS_NOTE = (
    'How to read the tables: a score is the mean over a model\'s runs (pretraining seeds x '
    'fine-tuning seeds) with its 95% bootstrap interval in brackets, in percent. Everything is '
    'paired: every model is scored on the same validation examples, and each of the '
    f'{analysis.REPLICATES} bootstrap replicates resamples the examples, then the pretraining '
    'seeds and the fine-tuning seeds within them, once for all models (experiments/stats.py). '
    'The gain is pretrained minus from scratch (the same architecture, config and seeds from '
    'random weights); p bootstrap is two-sided (H0: no gain; below 0.05 exactly when the '
    'interval excludes 0). McNemar p is the exact binomial test of the examples on which one run of a '
    'pretrained / scratch pair is right and the other wrong (classification only); p sign-flip '
    'is a paired permutation test (each example\'s outputs swapped between the two models at '
    'random, all runs at once; for one run of a classifier it is McNemar\'s test). The '
    'bootstrap holds the run-to-run noise but is too eager when only a few examples differ; '
    'the permutation test is the reverse; so every verdict and every "p" outside the gain '
    'columns is the larger of the two. The rank '
    'orders the arms by pretrained score in each replicate (1 = best; ties share), and '
    'P(best) is the share of replicates in which an arm ranks first. An attribution pair is '
    'two pretrained arms that share one factor (the architecture, or the objective), '
    'compared the same paired way. The p-values are not adjusted for multiple comparisons '
    '(a Bonferroni-safe threshold divides 0.05 by the number of tests you read together).')
PROBE_NOTE = (
    'The probe: at every pretraining evaluation, the frozen model embeds rotten_tomatoes '
    'snippets (the mean of the final hidden states over the real tokens: the encoder of BERT '
    'and T5, the decoder stack of GPT; a GPT trained with prefix LM reads the whole snippet as '
    'its prefix, bidirectionally), and multinomial logistic regression on the standardised '
    'features (scipy L-BFGS, scikit-learn\'s objective; L2 by 3-fold cross-validation) is fit '
    'on {train} training snippets and scored on the {examples:,} validation snippets '
    '(ptlm_jax/finetune/probe.py). Unlike each objective\'s own loss, it is one metric for '
    'every arm. Intervals: 95% bootstrap over the validation examples'
    '{seeds}; a pair\'s p is the larger of the paired bootstrap and the sign-flip test '
    '(McNemar for one run).')


def _optimizer_words(s: plan.Settings) -> str:
  if s.optimizer == 'family':
    return ('each family\'s own optimizer (BERT and GPT: AdamW at 1e-3, linear decay; T5: '
            'Adafactor at 1e-2, inverse square root), so optimizer and objective are confounded')
  o = plan.OPTIMIZERS[s.optimizer]
  return (f'one optimizer for every arm: {o["optimizer"]} at a peak learning rate of '
          f'{o["lr"]:g}, 10% warmup and {o["decay"]} decay')


def write(results, workdir: str, seeds: int) -> dict[str, str]:
  s = results.settings
  paths = {'report': os.path.join(workdir, REPORT), 'loss_plot': os.path.join(workdir, LOSS_PLOT),
           'accuracy_plot': os.path.join(workdir, ACCURACY_PLOT)}
  summaries = analysis.summarize(results)
  probe = analysis.summarize_probe(results)
  _plot_losses(paths['loss_plot'], results)
  _plot_downstream(paths['accuracy_plot'], summaries)
  if probe:
    paths['probe_plot'] = os.path.join(workdir, PROBE_PLOT)
    _plot_probe(paths['probe_plot'], probe)
  arms = list(dict.fromkeys(r.arm for r in results.pretraining))
  lines = [
      '# Pretraining objectives at matched compute: objective separated from architecture',
      '',
      f'Arms (architecture:objective): {", ".join(f"`{a}`" for a in arms)}. Tiny models '
      f'(d_model {s.d_model}, {s.num_layers} layers, T5: {s.num_layers} + {s.num_layers}; '
      f'{s.num_heads} heads) pretrained on the `{s.corpus}` corpus with one '
      f'{s.sp_vocab_size}-piece tokenizer, rows of {s.seq_len} tokens, batch {s.batch_size}, '
      f'the same document order, {_optimizer_words(s)}, and the same training compute: FLOPs '
      'per step from `ptlm_jax/flops.py` (the figure the trainer prints), steps = round('
      f'{s.budget_flops:.3g} / FLOPs per step). '
      + (f'{seeds} pretraining seeds' if seeds > 1 else 'One pretraining seed')
      + f', {s.finetune_seeds} fine-tuning seed(s) per model and task.',
      '',
      _budget_words(s, len(arms)),
      '',
      '## What the data show',
      '',
  ]
  if probe:
    lines += [f'- **linear probe** (rotten_tomatoes, {probe.examples:,} validation examples, at '
              'the end of pretraining): ' + _probe_verdict(probe), '']
  for task, summary in summaries.items():
    lines += [f'- **{task}** ({summary.examples:,} validation examples): {verdict(summary)}', '']
  lines += [
      '## Pretraining',
      '',
      collect.markdown_table(PRETRAIN_HEADER, pretraining_rows(results, probe)),
      '',
      'Validation loss, accuracy and perplexity are over each objective\'s own targets '
      '(masked pieces, next pieces, corrupted spans, the suffix of a prefix LM), so they rank '
      'runs of one objective, not the objectives against each other; the probe is the '
      'common metric. Tokens seen are the packed positions read (span corruption reads '
      'longer raw rows than it feeds the encoder).',
      '',
      f'![validation loss against training FLOPs]({LOSS_PLOT})',
      '',
  ]
  if probe:
    lines += [
        '## The probe during pretraining',
        '',
        PROBE_NOTE.format(train=s.probe_train_examples, examples=probe.examples,
                          seeds=', and the pretraining seeds' if seeds > 1 else ''),
        '',
        f'![probe accuracy against training FLOPs]({PROBE_PLOT})',
        '',
        collect.markdown_table(('arm',) + tuple(f'eval {i + 1}' for i in range(
            max(len(c) for c in probe.curves.values()))), [
                [arm] + [f'{_ci(e)} at {f:.2e}' for f, e in curve]
                for arm, curve in probe.curves.items()]),
        '',
    ]
    if probe.pairs:
      lines += [collect.markdown_table(PAIR_HEADER, pair_rows(probe.pairs)), '']
    if probe.baselines:
      lines += [
          collect.markdown_table(BASELINE_HEADER, [[b, _ci(e)] for b, e in probe.baselines.items()]),
          '',
          collect.markdown_table(
              ['arm (probe, last evaluation) minus'] + [f'{b} [95% CI], p' for b in probe.baselines],
              [[arm] + [f'{_ci(d, "+")}, p {stats.format_p(d.p)}' for d in ds.values()]
               for arm, ds in probe.vs_baseline.items()]),
          '',
          'The probe\'s baselines are fit on the same training snippets and scored on the same '
          'validation snippets: the majority class, and logistic regression on word presence '
          '(as for the fine-tuning baselines below).',
          '']
  for task, summary in summaries.items():
    base, diffs = baseline_rows(summary)
    lines += [
        f'## Downstream: {TASK_TITLES.get(task, task)}',
        '',
        _recipe(s, task),
        '',
        collect.markdown_table(DOWNSTREAM_HEADER, downstream_rows(summary)),
        '',
    ]
    if summary.pairs:
      lines += ['Attribution: pretrained arms that share one factor.', '',
                collect.markdown_table(PAIR_HEADER, pair_rows(summary.pairs)), '']
    lines += [
        collect.markdown_table(BASELINE_HEADER, base),
        '',
        collect.markdown_table(diffs[0], diffs[1:]),
        '',
        BASELINE_NOTES.get(task, ''),
        '',
    ]
  lines += [
      STATISTICS_NOTE,
      '',
      f'![downstream scores with 95% intervals]({ACCURACY_PLOT})',
      '',
      f'Total wall time: {results.seconds / 60:.1f} min for this invocation (tokenizer, FLOPs '
      f'count, {len(results.pretraining)} pretraining runs with '
      f'{sum(len(r.probe_counts) for r in results.pretraining)} probe points, '
      f'{len(results.finetuning)} fine-tuning runs, baselines, statistics); the runs themselves '
      f'took {_runs_seconds(results) / 60:.1f} min when they were trained (a rerun over a '
      'finished workdir reuses them).',
      '',
  ]
  with open(paths['report'], 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))
  return paths


def _runs_seconds(results) -> float:
  return sum(r.seconds for r in results.pretraining) + sum(f.seconds for f in results.finetuning)


def _budget_words(s: plan.Settings, arms: int) -> str:
  """What the job's minutes are spent on (chosen by measurement: docs/experiments.md)."""
  tasks = ' and '.join(f'`{t}`' for t in s.tasks)
  probe = (f'a linear probe on rotten_tomatoes at each of {s.eval_points} evaluations per arm'
           if s.probe else 'no probe')
  return (f'What the minutes buy: {arms} arms at {s.budget_flops:.3g} training FLOPs each, '
          f'{probe}, and fine-tuning on {tasks} with {s.finetune_seeds} seed(s) per model. '
          'The default is sized by measurement to stay within 15 minutes on 2 CPU cores '
          '(docs/experiments.md); `--tasks`, `--finetune_seeds`, `--seeds`, `--budget_flops` '
          'and `--arms` buy precision with time.')


def _probe_verdict(probe: analysis.ProbeSummary) -> str:
  best = max(probe.final, key=lambda a: probe.final[a].value)
  out = [f'{best} probes best ({_ci(probe.final[best])}); '
         + ', '.join(f'{a} {_ci(e)}' for a, e in probe.final.items() if a != best) + '.']
  for name, e in probe.baselines.items():
    d = probe.vs_baseline[best][name]
    out.append(f'Against the {name} baseline ({_ci(e)}) the best arm is '
               f'{100 * d.value:+.1f} points [{_pts(d.low)}, {_pts(d.high)}], p '
               f'{stats.format_p(d.p)}.')
  if probe.pairs:
    out.append('Attribution: ' + '; '.join(attribution(p) for p in probe.pairs) + '.')
  return ' '.join(out)


BASELINE_NOTES = {
    'rotten_tomatoes': (
        'Baselines on the same training examples: the majority class of the training split, '
        'and logistic regression on word presence (every word of the training examples; L2 '
        'strength by 4-fold cross-validation on the training examples; scipy L-BFGS-B on '
        'sparse features, as scikit-learn, experiments/compare_objectives/baselines.py).'),
    'shakespeare_ner': (
        'Baselines on the same training speeches: \'no entity\' (every word O: F1 0, the '
        'guess) and a tag lexicon (each word form\'s most frequent training tag, unseen words '
        'O): the labels are silver, made by rules from cast lists and scene headings, so a '
        'lexicon of names is a strong baseline. GPT tags each word from its left context only '
        '(a causal model), as GPT-2 token classification does.'),
}
