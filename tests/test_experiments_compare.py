"""The objective comparison, reduced to a few steps per run: report, plots, matched FLOPs."""
import dataclasses
import os
import re

import numpy as np
import pytest

import data_testlib
import stand_ins
from experiments import collect, stats
from experiments.compare_objectives import analysis, plan, report, runner

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
TINY = plan.Settings(
    corpus='shakespeare', sp_vocab_size=data_testlib.TEST_VOCAB,
    sp_train_chars=data_testlib.TEST_TRAIN_CHARS, d_model=32, num_layers=1, num_heads=2,
    seq_len=32, batch_size=8, eval_points=2, eval_steps=1, budget_flops=4e8, min_steps=2,
    finetune_steps=2, finetune_train_split='train[:32]', finetune_eval_examples=16,
    finetune_batch_size=8, num_devices=1, finetune_seeds=1, ner_steps=2,
    ner_train_split='train[:32]')


def test_gpt_flops_per_step_equals_the_hand_count():
  data_testlib.small_tokenizer('shakespeare')
  run = {r.family: r for r in plan.pretraining_runs(TINY, seed=0)}['gpt']
  # vocab: 800 pieces + 100 sentinels = 900 rows, rounded up to a multiple of 128
  d, layers, ff, vocab, b, l = 32, 1, 128, 1024, 8, 32
  n = layers * (4 * d * d + 4 * d + 2 * d * ff + ff + d + 2 * 2 * d) + 2 * d  # + final LayerNorm
  expected = 6 * n * b * l + 12 * layers * d * l * b * l + 6 * d * vocab * b * l
  assert run.flops_per_step == pytest.approx(expected, rel=1e-12)
  assert run.config.train.steps == round(TINY.budget_flops / expected)


def test_reduced_comparison_writes_the_report_and_plots(tmp_path, capsys):
  data_testlib.small_tokenizer('shakespeare')
  results = runner.run(TINY, str(tmp_path), seeds=1, log=print)
  printed = capsys.readouterr().out
  paths = report.write(results, str(tmp_path), seeds=1)

  # Matched compute: every run's total within half a step of the budget, and the FLOPs per
  # step are the ones the trainer itself printed.
  assert {r.family for r in results.pretraining} == {'bert', 'gpt', 't5'}
  for r in results.pretraining:
    assert abs(r.steps * r.flops_per_step - TINY.budget_flops) <= r.flops_per_step / 2 or r.steps == 2
    assert f'{r.flops_per_step:.3g} FLOPs per step' in printed
    rows = r.steps * TINY.batch_size
    if r.family == 't5':  # span corruption reads raw rows longer than its encoder inputs
      assert r.tokens > rows * TINY.seq_len
    else:
      assert r.tokens == rows * TINY.seq_len
    assert r.curve and r.curve[-1][0] == pytest.approx(r.steps * r.flops_per_step)
    # The losses come from the run's TensorBoard events, equal to its metrics.jsonl.
    logged = stand_ins.read_metrics(str(tmp_path / 'seed0' / f'{r.family}-pretrain'), 'eval/')
    assert r.eval_loss == pytest.approx(logged[r.steps]['loss'], rel=1e-6)
  # 3 families x 2 tasks x (pretrained, scratch) x 1 fine-tuning seed, each scored on the
  # same 16 validation examples; the score is the run's own task metric, recomputed.
  assert len(results.finetuning) == 12
  for f in results.finetuning:
    assert f.counts.shape == (16, 2 if f.task == 'rotten_tomatoes' else 3)
    ft_dir = tmp_path / 'seed0' / f'{f.family}-{f.task}-{"pretrained" if f.pretrained else "scratch"}-ft0'
    tag = 'task_accuracy' if f.task == 'rotten_tomatoes' else 'task_entity_f1'
    logged = stand_ins.read_metrics(str(ft_dir), 'eval/')
    assert f.score == pytest.approx(logged[max(logged)][tag], abs=1e-6), (f.family, f.task)
  assert set(results.baselines) == {'rotten_tomatoes', 'shakespeare_ner'}
  assert set(results.baselines['rotten_tomatoes']) == {'majority class', 'bag of words'}

  text = open(paths['report'], encoding='utf-8').read()
  for column in report.PRETRAIN_HEADER + report.DOWNSTREAM_HEADER:
    assert f' {column} |' in text, column
  for objective in ('mlm', 'causal_lm', 'span_corruption'):
    assert re.search(rf'\| {objective} \| ', text)
  assert 'Total wall time' in text and 'McNemar' in text and '## What the data show' in text
  for baseline in ('majority class', 'bag of words', 'no entity', 'tag lexicon'):
    assert f'| {baseline} | ' in text
  for key in ('loss_plot', 'accuracy_plot'):
    with open(paths[key], 'rb') as f:
      assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(paths[key]) > 10_000

  # The handout and the fine-tuning table reuse these finished runs without training.
  said = []
  dirs = runner.ensure_pretrained(TINY, plan.FAMILIES, str(tmp_path / 'seed0'), said.append)
  assert said == [f'[pretrained] {f}: {dirs[f]}' for f in plan.FAMILIES]


def _results(correct):
  """Synthetic rotten_tomatoes results: {family: (pretrained runs, scratch runs)} of 0/1 vectors."""
  pre, ft = [], []
  for family, (pretrained, scratch) in correct.items():
    pre.append(runner.PretrainResult(0, family, plan.OBJECTIVE[family], 1000, 10, 1e9, 5000,
                                     5.0, 0.1, 148.4, [(1e9, 6.0), (1e10, 5.0)], 3.0))
    for arm, runs in ((True, pretrained), (False, scratch)):
      for k, c in enumerate(runs):
        counts = stats.correct_counts(c)
        ft.append(runner.FinetuneResult(0, k, 'rotten_tomatoes', family, arm,
                                        stats.accuracy(counts.sum(0)), counts, 1.0))
  n = len(next(iter(correct.values()))[0][0])
  base = {'majority class': stats.correct_counts(np.arange(n) % 2 == 0)}
  return runner.Results(TINY, pre, ft, {'rotten_tomatoes': base}, 60.0)


def test_paired_statistics_and_verdict():
  n = 200
  right = lambda k: np.arange(n) < k   # the first k examples right
  results = _results({
      'bert': ([right(180), right(170)], [right(100), right(110)]),  # +70 points: clear
      'gpt': ([right(120), right(120)], [right(120), right(120)]),   # the same model: no gain
      't5': ([right(100), right(100)], [right(104), right(104)]),    # -2 points on 4 examples
  })
  summary = analysis.summarize(results)['rotten_tomatoes']
  bert, gpt, t5 = (summary.objectives[f] for f in ('bert', 'gpt', 't5'))
  # Scores are means over the two fine-tuning seeds: (180 + 170) / 400 and (100 + 110) / 400.
  assert bert.pretrained.value == pytest.approx(0.875) and bert.scratch.value == pytest.approx(0.525)
  assert bert.gain.value == pytest.approx(0.35) and bert.gain.p < 0.01
  assert bert.gain.low > 0.25 and bert.runs == 2
  # McNemar per pair: scratch is right only where pretrained is, so all 80 / 60 disagreements
  # favour pretraining: p = 2 / 2^80 and 2 / 2^60.
  assert [(m.only_a, m.only_b) for m in bert.mcnemar] == [(80, 0), (60, 0)]
  assert bert.mcnemar[0].p == pytest.approx(2 / 2 ** 80)
  assert gpt.gain.value == 0 and gpt.gain.p == 1.0 and (gpt.gain.low, gpt.gain.high) == (0, 0)
  # 4 disagreements, all against pretraining: McNemar p = 2 / 16 = 0.125 per run.
  assert [m.p for m in t5.mcnemar] == [0.125, 0.125]
  assert t5.gain.value == pytest.approx(-0.02) and t5.gain.p > 0.05
  # bert is best in every resample; gpt (0.60) and t5 (0.50) keep their order.
  assert (bert.rank.low, bert.rank.high, bert.rank.p_best) == (1, 1, 1.0)
  assert (gpt.rank.observed, t5.rank.observed) == (2, 3)
  # Against the majority class (0.5): bert +37.5 points.
  assert bert.vs_baseline['majority class'].value == pytest.approx(0.375)
  assert summary.baselines['majority class'].value == 0.5

  rows = {r[1]: r for r in report.downstream_rows(summary)}
  assert rows['bert'][2] == '2' and rows['bert'][3].startswith('87.5 [')
  assert rows['bert'][5].startswith('+35.0 [') and rows['bert'][6] == '< 0.001'
  assert rows['gpt'][6] == rows['gpt'][7] == '1' and rows['t5'][8] == '0.12, 0.12'
  assert float(rows['t5'][6]) < 0.05 < float(rows['t5'][7])  # 4 disagreements: see test_stats
  text = report.verdict(summary)
  assert 'significantly (p < 0.05), for mlm (bert, +35.0 points, p < 0.001)' in text
  assert 'No significant difference from scratch (p >= 0.05): causal_lm (gpt, +0.0 points' in text
  assert 'mlm transfers best: it ranks first in every resample' in text
  assert 'every pretrained model beats it significantly' not in text  # t5 is at 0.50


def test_an_unsettled_ranking_is_reported_as_such():
  n = 200
  right = lambda k: np.arange(n) < k
  results = _results({'bert': ([right(101)], [right(100)]), 'gpt': ([right(100)], [right(100)]),
                      't5': ([right(99)], [right(100)])})
  summary = analysis.summarize(results, replicates=500)['rotten_tomatoes']
  text = report.verdict(summary)
  assert text.startswith('No significant difference from scratch (p >= 0.05): mlm (bert')
  assert 'The ranking is not settled: mlm has the best accuracy' in text


def test_settings_are_validated_configs():
  data_testlib.small_tokenizer('shakespeare')
  settings = dataclasses.replace(TINY, budget_flops=1e9)
  runs = plan.pretraining_runs(settings, seed=3)
  assert len({r.config.data.shuffle_seed for r in runs}) == 1          # one document order
  assert {r.config.model.d_model for r in runs} == {32}
  assert [r.config.objective.name for r in runs] == ['mlm', 'causal_lm', 'span_corruption']
  assert collect.markdown_table(['a'], [[1.5]]) == '| a |\n|---|\n| 1.5 |'
