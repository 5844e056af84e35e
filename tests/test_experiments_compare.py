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
    ner_train_split='train[:32]', probe_train_examples=64,
    tasks=('rotten_tomatoes', 'shakespeare_ner'),  # the default fine-tunes NER only
    # Both kinds of pair at the least cost: one architecture with two objectives (GPT), one
    # objective on two architectures (prefix LM); the full default is five arms.
    arms='gpt:causal_lm,gpt:prefix_lm,t5:prefix_lm')


def test_gpt_flops_per_step_equals_the_hand_count():
  data_testlib.small_tokenizer('shakespeare')
  run = {r.arm.name: r for r in plan.pretraining_runs(TINY, seed=0)}['gpt:causal_lm']
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
  assert [r.arm for r in results.pretraining] == TINY.arms.split(',')
  for r in results.pretraining:
    assert abs(r.steps * r.flops_per_step - TINY.budget_flops) <= r.flops_per_step / 2 or r.steps == 2
    assert f'{r.flops_per_step:.3g} FLOPs per step' in printed
    assert r.tokens == r.steps * TINY.batch_size * TINY.seq_len
    assert r.curve and r.curve[-1][0] == pytest.approx(r.steps * r.flops_per_step)
    # The losses come from the run's TensorBoard events, equal to its metrics.jsonl.
    pre_dir = tmp_path / 'seed0' / f'{r.family}-{r.objective}-pretrain'
    logged = stand_ins.read_metrics(str(pre_dir), 'eval/')
    assert r.eval_loss == pytest.approx(logged[r.steps]['loss'], rel=1e-6)
    # The probe ran at every evaluation: logged, and kept per validation example.
    assert [s for s in logged if 'probe_accuracy' in logged[s]] == sorted(r.probe_counts)
    assert len(r.probe_curve) == TINY.eval_points
    for (flops_done, accuracy), step in zip(r.probe_curve, sorted(r.probe_counts)):
      counts = r.probe_counts[step]
      assert counts.shape == (1181, 2)  # all rotten_tomatoes validation snippets
      assert accuracy == pytest.approx(counts[:, 0].mean(), abs=1e-6)
      assert logged[step]['probe_accuracy'] == pytest.approx(accuracy, abs=1e-6)
      assert flops_done == pytest.approx(step * r.flops_per_step)
  # (3 arms pretrained + 2 architectures from scratch) x 2 tasks x 1 fine-tuning seed, each
  # scored on the same 16 validation examples; the score is the run's own task metric.
  assert len(results.finetuning) == 10
  assert sorted({f.arm for f in results.finetuning if not f.pretrained}) == ['gpt', 't5']
  for f in results.finetuning:
    assert f.counts.shape == (16, 2 if f.task == 'rotten_tomatoes' else 3)
    name = f'{f.family}-{f.objective}-{f.task}-pretrained' if f.pretrained else \
        f'{f.family}-{f.task}-scratch'
    ft_dir = tmp_path / 'seed0' / f'{name}-ft0'
    tag = 'task_accuracy' if f.task == 'rotten_tomatoes' else 'task_entity_f1'
    logged = stand_ins.read_metrics(str(ft_dir), 'eval/')
    assert f.score == pytest.approx(logged[max(logged)][tag], abs=1e-6), (f.family, f.task)
  assert set(results.baselines) == {'rotten_tomatoes', 'shakespeare_ner'}
  assert set(results.baselines['rotten_tomatoes']) == {'majority class', 'bag of words'}
  # The probe's own baselines: on its 1,181 validation snippets, fit on its 64 training ones.
  assert {k: v.shape for k, v in results.probe_baselines.items()} == {
      'majority class': (1181, 2), 'bag of words': (1181, 2)}

  text = open(paths['report'], encoding='utf-8').read()
  for column in report.PRETRAIN_HEADER + report.DOWNSTREAM_HEADER + report.PAIR_HEADER:
    assert f' {column} |' in text, column
  for arm in TINY.arms.split(','):
    assert re.search(rf'\| {arm} \| ', text)
  assert 'Total wall time' in text and 'McNemar' in text and '## What the data show' in text
  assert '## The probe during pretraining' in text and '- **linear probe**' in text
  assert '| arm (probe, last evaluation) minus |' in text
  assert text.count('Attribution') >= 3  # the probe and each task
  assert '| architecture | gpt:causal_lm | gpt:prefix_lm |' in text
  assert '| objective | gpt:prefix_lm | t5:prefix_lm |' in text
  for baseline in ('majority class', 'bag of words', 'no entity', 'tag lexicon'):
    assert f'| {baseline} | ' in text
  for key in ('loss_plot', 'accuracy_plot', 'probe_plot'):
    with open(paths[key], 'rb') as f:
      assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(paths[key]) > 10_000

  # The handout and the fine-tuning table reuse these finished runs without training.
  said = []
  dirs = runner.ensure_pretrained(TINY, ('gpt',), str(tmp_path / 'seed0'), said.append)
  assert said == [f'[pretrained] gpt: {tmp_path}/seed0/gpt-causal_lm-pretrain'] and dirs['gpt']


def _results(correct, scratch_of=None):
  """Synthetic rotten_tomatoes results: {arm: (pretrained runs, scratch runs)} of 0/1 vectors
  (an arm is a family, with its own objective, or 'family:objective')."""
  pre, ft = [], []
  for name, (pretrained, scratch) in correct.items():
    family, _, objective = name.partition(':')
    objective = objective or plan.OBJECTIVE[family]
    pre.append(runner.PretrainResult(0, family, objective, 1000, 10, 1e9, 5000,
                                     5.0, 0.1, 148.4, [(1e9, 6.0), (1e10, 5.0)], 3.0))
    for is_pre, runs in ((True, pretrained), (False, scratch)):
      if not is_pre and any(f.family == family and not f.pretrained for f in ft):
        continue  # one from-scratch model per architecture
      for k, c in enumerate(runs):
        counts = stats.correct_counts(c)
        ft.append(runner.FinetuneResult(0, k, 'rotten_tomatoes', family, is_pre,
                                        stats.accuracy(counts.sum(0)), counts, 1.0,
                                        objective if is_pre else ''))
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
  bert, gpt, t5 = (summary.objectives[a] for a in ('bert:mlm', 'gpt:causal_lm',
                                                    't5:span_corruption'))
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

  rows = {r[0].split(':')[0]: r for r in report.downstream_rows(summary)}
  assert rows['bert'][1] == '2' and rows['bert'][2].startswith('87.5 [')
  assert rows['bert'][4].startswith('+35.0 [') and rows['bert'][5] == '< 0.001'
  assert rows['gpt'][5] == rows['gpt'][6] == '1' and rows['t5'][7] == '0.12, 0.12'
  assert float(rows['t5'][5]) < 0.05 < float(rows['t5'][6])  # 4 disagreements: see test_stats
  text = report.verdict(summary)
  assert 'significantly (p < 0.05), for bert:mlm (+35.0 points, p < 0.001)' in text
  assert 'No significant difference from scratch (p >= 0.05): gpt:causal_lm (+0.0 points' in text
  assert 'bert:mlm transfers best: it ranks first in every resample' in text
  assert not summary.pairs  # no two of these arms share a factor
  assert 'every pretrained model beats it significantly' not in text  # t5 is at 0.50


def test_an_unsettled_ranking_is_reported_as_such():
  n = 200
  right = lambda k: np.arange(n) < k
  results = _results({'bert': ([right(101)], [right(100)]), 'gpt': ([right(100)], [right(100)]),
                      't5': ([right(99)], [right(100)])})
  summary = analysis.summarize(results, replicates=500)['rotten_tomatoes']
  text = report.verdict(summary)
  assert text.startswith('No significant difference from scratch (p >= 0.05): bert:mlm')
  assert 'The ranking is not settled: bert:mlm has the best accuracy' in text


def test_attribution_pairs_hold_one_factor_and_say_who_wins():
  n = 200
  right = lambda k: np.arange(n) < k
  results = _results({'gpt:causal_lm': ([right(121)], [right(100)]),
                      'gpt:prefix_lm': ([right(120)], [right(100)]),
                      't5:prefix_lm': ([right(180)], [right(90)])})
  summary = analysis.summarize(results, replicates=500)['rotten_tomatoes']
  # The two GPT arms share their from-scratch model.
  assert summary.objectives['gpt:prefix_lm'].scratch.value == 0.5
  assert summary.objectives['t5:prefix_lm'].scratch.value == pytest.approx(0.45)
  same_arch, same_objective = summary.pairs
  assert (same_arch.a.name, same_arch.b.name, same_arch.fixed) == (
      'gpt:causal_lm', 'gpt:prefix_lm', 'architecture')
  assert same_arch.difference.value == pytest.approx(0.005) and same_arch.difference.p > 0.05
  assert (same_objective.fixed, same_objective.difference.value) == ('objective',
                                                                     pytest.approx(-0.3))
  text = report.verdict(summary)
  assert ('on the decoder-only, causal LM and prefix LM do not differ significantly (causal LM '
          'minus prefix LM: +0.5 [') in text
  assert 'with prefix LM, the encoder-decoder beats the decoder-only by 30.0 points [' in text
  low, high = re.search(r'decoder-only by 30.0 points \[([\d.]+), ([\d.]+)\]', text).groups()
  assert 20 < float(low) < 30 < float(high) < 40


def test_arms_are_checked_and_paired():
  arms = plan.parse_arms(plan.DEFAULT_ARMS)
  assert [a.name for a in arms] == plan.DEFAULT_ARMS.split(',')
  assert [(a.name, b.name, k) for a, b, k in plan.attribution_pairs(arms)] == [
      ('gpt:causal_lm', 'gpt:prefix_lm', 'architecture'),
      ('gpt:prefix_lm', 't5:prefix_lm', 'objective'),
      ('t5:span_corruption', 't5:prefix_lm', 'architecture')]
  for bad, says in (('bert:causal_lm', "'bert:causal_lm' is not an arm"),
                    ('gpt', "'gpt' is not an arm"), ('gpt:causal_lm,gpt:causal_lm', 'twice'),
                    ('', 'at least one arm')):
    with pytest.raises(plan.errors.UserError, match=says) as e:
      plan.parse_arms(bad)
    assert str(e.value).startswith('--arms=')


def test_settings_are_validated_configs():
  data_testlib.small_tokenizer('shakespeare')
  settings = dataclasses.replace(TINY, budget_flops=1e9)
  runs = plan.pretraining_runs(settings, seed=3)
  assert len({r.config.data.shuffle_seed for r in runs}) == 1          # one document order
  assert {r.config.model.d_model for r in runs} == {32}
  assert [r.config.objective.name for r in runs] == ['causal_lm', 'prefix_lm', 'prefix_lm']
  # One optimizer for every arm (T5 included): AdamW at 1e-3, 10% warmup, linear decay.
  for r in runs:
    o = r.config.optim
    assert (o.optimizer, o.lr, o.decay, o.b2) == ('adamw', 1e-3, 'linear', 0.98)
    assert o.warmup_steps == max(1, r.config.train.steps // 10)
  own = plan.pretraining_runs(dataclasses.replace(settings, optimizer='family'), seed=3)
  assert [r.config.optim.optimizer for r in own] == ['adamw', 'adamw', 'adafactor']
  assert collect.markdown_table(['a'], [[1.5]]) == '| a |\n|---|\n| 1.5 |'
