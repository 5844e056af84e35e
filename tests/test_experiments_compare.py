"""The objective comparison, reduced to a few steps per run: report, plots, matched FLOPs."""
import dataclasses
import os
import re

import pytest

import data_testlib
import stand_ins
from experiments import collect
from experiments.compare_objectives import plan, report, runner

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
TINY = plan.Settings(
    corpus='shakespeare', sp_vocab_size=data_testlib.TEST_VOCAB,
    sp_train_chars=data_testlib.TEST_TRAIN_CHARS, d_model=32, num_layers=1, num_heads=2,
    seq_len=32, batch_size=8, eval_points=2, eval_steps=1, budget_flops=4e8, min_steps=2,
    finetune_steps=2, finetune_train_split='train[:32]', finetune_eval_examples=16,
    finetune_batch_size=8, num_devices=1)


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
  assert len(results.finetuning) == 6
  assert all(0.0 <= f.accuracy <= 1.0 for f in results.finetuning)

  text = open(paths['report'], encoding='utf-8').read()
  for column in report.PRETRAIN_HEADER + report.DOWNSTREAM_HEADER:
    assert f' {column} |' in text, column
  for objective in ('mlm', 'causal_lm', 'span_corruption'):
    assert re.search(rf'\| {objective} \| ', text)
  assert 'Total wall time' in text and 'standard error' in text
  for key in ('loss_plot', 'accuracy_plot'):
    with open(paths[key], 'rb') as f:
      assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(paths[key]) > 10_000

  # The handout and the fine-tuning table reuse these finished runs without training.
  said = []
  dirs = runner.ensure_pretrained(TINY, plan.FAMILIES, str(tmp_path / 'seed0'), said.append)
  assert said == [f'[pretrained] {f}: {dirs[f]}' for f in plan.FAMILIES]


def _results(accuracies):
  """Synthetic results: {family: [(pretrained, scratch) per seed]}."""
  pre, ft = [], []
  for family, pairs in accuracies.items():
    for seed, (a, b) in enumerate(pairs):
      pre.append(runner.PretrainResult(seed, family, plan.OBJECTIVE[family], 1000, 10, 1e9, 5000,
                                       5.0, 0.1, 148.4, [(1e9, 6.0), (1e10, 5.0)], 3.0))
      ft += [runner.FinetuneResult(seed, family, True, a, 0.5, 1000, 1.0),
             runner.FinetuneResult(seed, family, False, b, 0.5, 1000, 1.0)]
  return runner.Results(TINY, pre, ft, 60.0)


def test_seeds_give_mean_and_standard_deviation():
  results = _results({'bert': [(0.6, 0.5), (0.7, 0.5)], 'gpt': [(0.5, 0.5), (0.5, 0.5)],
                      't5': [(0.5, 0.6), (0.5, 0.6)]})
  rows = {r[1]: r for r in report.downstream_rows(results)}
  # mean 0.65, sample standard deviation sqrt(((0.05)^2 * 2) / 1) = 0.0707
  assert rows['bert'][2] == '0.6500 ± 0.0707'
  assert rows['bert'][4] == '+15.0 ± 7.1'
  assert report.gains(results)['t5'] == pytest.approx([-10.0, -10.0])
  # p = 0.55 over 1,000 examples: standard error 100 * sqrt(0.2475 / 1000) = 1.6 points.
  text = report.verdict(results)
  assert text.startswith('Pretraining beats training from scratch for mlm (bert, +15.0 points)')
  assert 'standard error of 1.6 points' in text


def test_no_gain_is_reported_as_such():
  results = _results({'bert': [(0.5, 0.6)], 'gpt': [(0.5, 0.55)], 't5': [(0.5, 0.5)]})
  assert report.verdict(results).startswith('At this scale pretraining does not beat')


def test_settings_are_validated_configs():
  data_testlib.small_tokenizer('shakespeare')
  settings = dataclasses.replace(TINY, budget_flops=1e9)
  runs = plan.pretraining_runs(settings, seed=3)
  assert len({r.config.data.shuffle_seed for r in runs}) == 1          # one document order
  assert {r.config.model.d_model for r in runs} == {32}
  assert [r.config.objective.name for r in runs] == ['mlm', 'causal_lm', 'span_corruption']
  assert collect.markdown_table(['a'], [[1.5]]) == '| a |\n|---|\n| 1.5 |'
