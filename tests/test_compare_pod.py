"""--preset=pod: the base-size sweep on C4 and GLUE, planned without a network or gcloud."""
import contextlib
import io
import os
import re

import pytest

from experiments import config_files, sweep
from experiments.compare_objectives import plan, pod
from ptlm_jax import config_lib, errors

ARMS = plan.parse_arms(plan.DEFAULT_ARMS)
GS = '/gcs/bucket/pod'


@pytest.fixture(scope='module')
def runs():
  return pod.runs(ARMS, 'adamw', GS)


def _pretraining(runs_):
  return [r for r in runs_ if not r.source]


def test_gpt2_base_step_flops_by_hand():
  # GPT-2 124M's blocks (Radford et al. 2019): per layer two norms (2 x 768 each), qkv
  # 768 x 2304 + 2304, out 768 x 768 + 768, MLP 768 x 3072 + 3072 and 3072 x 768 + 768;
  # a final norm.  Rows of 512 at batch 128; vocabulary 32,000 pieces + 100 sentinels -> 32,128.
  d, layers, s, b, v = 768, 12, 512, 128, 32_128
  n = layers * (4 * d + d * 3 * d + 3 * d + d * d + d + d * 4 * d + 4 * d + 4 * d * d + d) + 2 * d
  assert n == 85_056_000
  tokens = b * s
  by_hand = 6 * n * tokens + 12 * layers * d * s * tokens + 6 * d * v * tokens
  per_step, _, _ = pod.arm_cost(plan.Arm('gpt', 'causal_lm'), 'adamw')
  assert per_step == by_hand
  assert round(1e18 / by_hand) == 21_341


def test_every_arm_matches_each_budget_within_half_a_step(runs):
  pre = _pretraining(runs)
  assert len(pre) == len(ARMS) * len(pod.BUDGETS) * 3
  for r in pre:
    budget = float(re.search(r'-(\d+e\d+)-lr', r.name).group(1))
    per_step = r.flops / r.steps
    assert abs(r.flops - budget) <= per_step / 2, r.name
    assert r.overrides['train.steps'] == r.steps
    assert r.overrides['optim.warmup_steps'] == r.steps // 10


def test_one_optimizer_and_an_lr_grid_per_arm(runs):
  pre = _pretraining(runs)
  for arm in ARMS:
    for budget in ('1e18', '3e18', '1e19'):
      mine = [r for r in pre if r.name.startswith(f'{arm.family}-{arm.objective}-{budget}-')]
      assert sorted(r.overrides['optim.lr'] for r in mine) == [1e-4, 3e-4, 1e-3]
      assert len({r.steps for r in mine}) == 1
  shared = {k: v for k, v in plan.OPTIMIZERS['adamw'].items() if k != 'lr'}
  for r in pre:  # the config each run gets: the file's, then its overrides
    c = config_files.override(config_files.load(r.config), r.overrides)
    config_lib.validate(c)
    assert {k: c.optim[k] for k in shared} == shared, r.name
    assert (c.data.corpus, c.data.seq_len, c.train.batch_size) == ('tfds:c4/en', 512, 128)
    assert c.model.d_model == 768 and c.model.num_layers == 12


def test_attribution_pairs_share_budget_and_lr(runs):
  names = {r.name for r in _pretraining(runs)}
  pairs = plan.attribution_pairs(ARMS)
  assert {factor for _, _, factor in pairs} == {'architecture', 'objective'}
  for a, b, _ in pairs:
    for budget in ('1e18', '3e18', '1e19'):
      for lr in ('1e-4', '3e-4', '1e-3'):
        assert f'{a.family}-{a.objective}-{budget}-lr{lr}' in names
        assert f'{b.family}-{b.objective}-{budget}-lr{lr}' in names


def test_finetunes_start_from_their_pretraining_run(runs):
  pre = _pretraining(runs)
  order = [r.name for r in runs]
  finetunes = [r for r in runs if r.source]
  assert len(finetunes) == 2 * len(pre)
  for r in finetunes:
    parent, task = r.name.rsplit('-', 1)
    assert r.source == f'{GS}/{parent}' == r.overrides['init.source']
    assert order.index(parent) < order.index(r.name) and order.index(parent) < len(pre)
    family = parent.split('-')[0]
    assert r.config == f'configs/finetune/{task}.py:{family},base,head'
    assert r.overrides['model.pooling'] == 'mean' and r.overrides['data.download'] is True


def test_mnli_config():
  for family in ('bert', 'gpt', 't5'):
    c = config_files.load(f'configs/finetune/mnli.py:{family},base,head')
    config_lib.validate(c)
    assert (c.task.dataset, c.model.num_classes, c.data.eval_split) == (
        'glue/mnli', 3, 'validation_matched')
    assert c.task.input_fields == 'premise,hypothesis'
    assert c.train.steps == -(-3 * 392_702 // 32)  # 3 epochs at batch 32


def test_dry_run_lists_every_run_and_writes_nothing(runs, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  lines = []
  assert pod.main(ARMS, 'adamw', GS, dry_run=True, log=lines.append) == ''
  assert os.listdir(tmp_path) == []
  text = '\n'.join(lines)
  for r in runs:
    assert f'\n{r.name} ' in text
  assert lines[-1].startswith('./launch.sh sweep compare_pod_sweep.py --workdir=/gcs/bucket/pod '
                              '--tpu=')
  assert '--type=v4-32' in lines[-1]
  assert lines[-3].startswith('total: 45 pretraining + 90 fine-tuning runs')


def test_written_sweep_loads_and_runs_on_a_tpu_dry(runs, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = pod.main(ARMS, 'adamw', GS, dry_run=False, log=lambda _: None)
  assert path == os.path.join('.', 'compare_pod_sweep.py') and os.path.isfile(path)
  assert sweep.load_runs(path) == [(r.name, r.config, r.overrides) for r in runs]
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert sweep.main([path, f'--workdir={GS}', '--tpu=t', '--zone=z', '--type=v4-32',
                       '--dry_run']) == 0
  mains = [l for l in out.getvalue().splitlines() if 'ptlm_jax.main' in l]
  assert len(mains) == len(runs)
  assert '--config.init.source=/gcs/bucket/pod/bert-mlm-1e18-lr1e-4' in mains[len(runs) // 3]


def test_a_relative_workdir_becomes_absolute_in_the_sweep(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = pod.main(ARMS[:1], 'adamw', 'pod', dry_run=False, log=lambda _: None)
  loaded = sweep.load_runs(path)
  assert loaded[-1][2]['init.source'] == str(tmp_path / 'pod' / 'bert-mlm-1e19-lr1e-3')


def test_committed_sweep_is_current():
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), pod.COMMITTED)
  with open(path, encoding='utf-8') as f:
    # Out of date: python -m experiments.compare_objectives.pod regenerates it.
    assert f.read() == pod.committed_text()
  assert len(sweep.load_runs(path)) == 135


@pytest.mark.parametrize('arms,optimizer,workdir,flag', [
    ((), 'adamw', GS, '--arms'),
    (ARMS, 'sgd', GS, '--optimizer'),
    (ARMS, 'adamw', ' ', '--workdir'),
    (ARMS, 'adamw', 'gs://bucket/pod', '--workdir=gs://bucket/pod: a URL is not a workdir'),
])
def test_bad_input_is_one_line_naming_the_flag(arms, optimizer, workdir, flag):
  with pytest.raises(errors.UserError, match=flag) as e:
    pod.main(arms, optimizer, workdir, dry_run=True, log=lambda _: None)
  assert '\n' not in str(e.value)


def test_family_optimizer_and_ul2_sentinels():
  # optimizer=family: T5 keeps Adafactor, so its grid is Adafactor's; UL2 at 512 uses 130
  # sentinels, so the embedding gets the rows the trainer would give it (32,000 + 130 -> 32,256).
  pre = _pretraining(pod.runs(plan.parse_arms('t5:ul2'), 'family', GS))
  assert sorted(r.overrides['optim.lr'] for r in pre if '-1e18-' in r.name) == [3e-3, 1e-2, 3e-2]
  assert all('optim.optimizer' not in r.overrides for r in pre)
  assert {r.overrides['model.vocab_size'] for r in pre} == {32_256}
