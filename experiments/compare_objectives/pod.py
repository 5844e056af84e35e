r"""`--preset=pod`: the objective comparison at base size on C4, as a sweep for a TPU VM.

  python -m experiments.compare_objectives --preset=pod --workdir=/gcs/BUCKET/compare-pod --dry_run
  python -m experiments.compare_objectives --preset=pod --workdir=/gcs/BUCKET/compare-pod
  ./launch.sh sweep compare_pod_sweep.py --workdir=/gcs/BUCKET/compare-pod \
      --tpu=ptlm-pod --zone=us-central2-b --type=v4-32

Every arm (`--arms`, plan.Arm) pretrains its family's `base` config (BERT-base, GPT-2 124M,
T5-base) on `tfds:c4/en` at rows of 512 tokens, batch 128 (T5's 65,536 tokens per step),
with the one shared optimizer (`--optimizer`, plan.OPTIMIZERS: AdamW, 10% warmup, linear
decay by default) at each of `BUDGETS` training FLOPs and each learning rate of its grid
(`LRS`).  As for the laptop arms, steps = round(budget / FLOPs per step), with FLOPs per
step counted as the trainer counts them (its abstract state, objective and
flops.flops_per_step), so every arm of a budget trains within half a step of it.  Then
each pretraining run is fine-tuned on GLUE SST-2 and MNLI (`TASKS`: the handout's recipe
of configs/finetune/*.py, 3 epochs at 2e-5, a head on the mean of the final states for
every family) from its pretraining workdir (`init.source`).

The sweep file carries every number (steps, warmup, the workdirs), so `./launch.sh sweep
... --dry_run` needs only the standard library; this module needs jax to count FLOPs.
Estimated chip-hours are the estimator's (ptlm_jax/estimate.py: FLOPs / (peak x MFU) on
`ACCELERATOR` at `MFU`), its per-chip memory on the `CHIPS` chips of a `TPU_TYPE`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os

from experiments import config_files
from experiments.compare_objectives import plan
from ptlm_jax import config_lib, errors

TPU_TYPE, CHIPS, ACCELERATOR = 'v4-32', 16, 'tpu-v4'  # v4-32: 32 TensorCores, 16 chips
TPU_NAME, ZONE = 'ptlm-pod', 'us-central2-b'          # the printed command's; any will do
MFU = 0.4                     # the estimator's default; base models at 8 rows a chip
BUDGETS = (1e18, 3e18, 1e19)  # training FLOPs; 1e19 is ~0.4x T5's baseline (2^35 tokens)
SEQ_LEN, BATCH = 512, 128
CORPUS = 'tfds:c4/en'
EVAL_POINTS = 10              # validation evaluations (and checkpoints) per pretraining run
# Peak learning rates per optimizer: half-decade steps that bracket BERT's 1e-4 (Devlin et
# al. 2019; config_lib's base lr) and GPT-3 Small's 6e-4 (Brown et al. 2020, Table 2.1)
# for AdamW, and T5's 1e-2 for Adafactor; an arm whose best is at an edge says so.
LRS = {'adamw': (1e-4, 3e-4, 1e-3), 'adafactor': (3e-3, 1e-2, 3e-2)}
CONFIGS = {'bert': 'configs/bert.py:base', 'gpt': 'configs/gpt.py:base',
           't5': 'configs/t5.py:base'}
# SST-2: single-sentence sentiment; MNLI: sentence-pair inference, GLUE's largest task
# and the one BERT and T5 report first.  Fine-tuning costs ~1% of pretraining (table).
COMMITTED = 'experiments/sweeps/compare_objectives_pod.py'  # the default arms' sweep
COMMITTED_WORKDIR = '/gcs/BUCKET/compare-pod'
TASKS = {'sst2': 'configs/finetune/sst2.py', 'mnli': 'configs/finetune/mnli.py'}
ALWAYS = ('objective.name', 'optim.lr', 'train.steps')  # written even when the file's own
# GLUE is small: downloaded.  One head for every family: the mean of the final states (plan).
FINETUNE = {'data.download': True, 'model.pooling': 'mean'}


@dataclasses.dataclass
class PodRun:
  name: str
  config: str             # 'file.py:arg'
  overrides: dict         # group.field -> value (what the sweep passes as --config.*)
  steps: int
  flops: float            # training FLOPs: steps x FLOPs per step
  chip_hours: float       # the estimator's, on ACCELERATOR at MFU
  gib_per_chip: float     # the estimator's memory per chip on CHIPS chips
  source: str = ''        # fine-tunes: the pretraining run's workdir


def _label(x: float) -> str:
  return f'{x:.0e}'.replace('e+', 'e').replace('e-0', 'e-')  # 1e+18 -> 1e18, 1e-04 -> 1e-4


def _diff(config, spec: str) -> dict:
  """The fields of `config` that differ from the config file's own: the sweep's overrides."""
  base = config_files.load(spec).to_dict()
  return {f'{g}.{k}': v for g, fields in config.to_dict().items() for k, v in fields.items()
          if base[g][k] != v or f'{g}.{k}' in ALWAYS}


def pretraining_config(arm: plan.Arm, optimizer: str, steps: int = 1, lr: float = 0.0):
  """The arm's base config on C4 at the shared shapes and optimizer (`lr`: its grid's)."""
  c = config_files.load(CONFIGS[arm.family])
  c.objective.name = arm.objective
  c.data.corpus = CORPUS
  c.data.seq_len = SEQ_LEN
  c.data.pack_mode = 'pack'  # one stream for every arm (T5's own default is 'chunk')
  c.train.batch_size = BATCH
  # UL2 at 512 needs more sentinels than the tokenizer's 100: the embedding rows train.run
  # would add, added here so the FLOPs counted are the trainer's.
  from ptlm_jax import objectives  # pylint: disable=g-import-not-at-top  (jax)
  objectives.reserve_sentinels(c, c.data.sp_vocab_size)
  # C4 is far larger than any budget here reads, so no epoch repeats: no dropout (T5 1.1).
  c.model.dropout_rate = c.model.attention_dropout_rate = 0.0
  t = c.train
  t.steps = steps
  plan.apply_optimizer(c, optimizer)  # warmup: 10% of steps
  c.optim.lr = lr or c.optim.lr
  t.eval_every = t.checkpoint_every = math.ceil(steps / EVAL_POINTS)
  t.eval_steps = 20
  t.log_every = max(1, min(100, t.eval_every))
  config_lib.validate(c)
  return c


def _estimate(config):
  from ptlm_jax import estimate  # pylint: disable=g-import-not-at-top  (jax)
  tokens = config.train.batch_size * config.data.seq_len  # one step; hours scale with steps
  return estimate.estimate(config, ACCELERATOR, CHIPS, tokens, MFU, pue=1.1,
                           grid_kg_per_kwh=0.429)


def _check(arms, optimizer: str, workdir: str) -> None:
  if not arms or not all(isinstance(a, plan.Arm) for a in arms):
    raise errors.UserError(f'--arms: expected at least one architecture:objective arm, '
                           f'got {arms!r}')
  if optimizer not in plan.OPTIMIZERS:
    raise errors.UserError(f'--optimizer={optimizer}: expected one of '
                           f'{", ".join(plan.OPTIMIZERS)}')
  if not str(workdir).strip():
    raise errors.UserError('--workdir: the pod preset needs a workdir (a bucket mounted on '
                           'every TPU VM worker, e.g. /gcs/BUCKET/compare-pod)')
  from ptlm_jax.training import start  # pylint: disable=g-import-not-at-top  (jax)
  start.refuse_url(workdir)


def pod_workdir(workdir: str) -> str:
  """The workers' path, absolute (fine-tunes name it in init.source)."""
  return os.path.abspath(workdir)


@functools.lru_cache(maxsize=None)
def arm_cost(arm: plan.Arm, optimizer: str):
  """(FLOPs per step, the estimator's Estimate of one step, the arm's lr grid)."""
  c = pretraining_config(arm, optimizer)
  # Without a tokenizer: the project's SentencePiece layout follows from data.sp_vocab_size,
  # so C4 stays unread.
  from ptlm_jax.data import vocab  # pylint: disable=g-import-not-at-top  (jax)
  per_step, _, _, decoder_length = plan.step_flops(c, vocab.VocabInfo(c.data.sp_vocab_size))
  # The estimator derives T5's decoder length for span corruption only: give it the real one.
  c.objective.targets_length = decoder_length
  e = _estimate(c)
  if not math.isclose(e.flops_per_step, per_step, rel_tol=1e-9):  # the hours would be off
    raise AssertionError(f'{arm.name}: estimator {e.flops_per_step:.6g} vs trainer '
                         f'{per_step:.6g} FLOPs per step')
  return per_step, e, LRS[c.optim.optimizer]


@functools.lru_cache(maxsize=None)
def finetune_cost(spec: str):
  """(steps, the estimator's Estimate of one step) of a fine-tuning config file."""
  c = config_files.override(config_files.load(spec), FINETUNE)
  config_lib.validate(c)
  return c.train.steps, _estimate(c)


def runs(arms, optimizer: str, workdir: str) -> list[PodRun]:
  """Every pretraining run (budget, arm, lr), then every fine-tune (task) of each."""
  _check(arms, optimizer, workdir)
  workdir = pod_workdir(workdir)
  pretrain, finetune = [], []
  for budget in BUDGETS:
    for arm in arms:
      per_step, e, lrs = arm_cost(arm, optimizer)
      steps = round(budget / per_step)
      spec = CONFIGS[arm.family]
      for lr in lrs:
        name = f'{arm.family}-{arm.objective}-{_label(budget)}-lr{_label(lr)}'
        c = pretraining_config(arm, optimizer, steps, lr)
        pretrain.append(PodRun(name, spec, _diff(c, spec), steps, steps * per_step,
                               steps * e.device_hours, e.memory_bytes['total'] / 2**30))
        source = f'{workdir}/{name}'
        for task, path in TASKS.items():
          ft_spec = f'{path}:{arm.family},base,head'
          ft_steps, ft = finetune_cost(ft_spec)
          finetune.append(PodRun(
              f'{name}-{task}', ft_spec, {**FINETUNE, 'init.source': source}, ft_steps,
              ft_steps * ft.flops_per_step, ft_steps * ft.device_hours,
              ft.memory_bytes['total'] / 2**30, source))
  return pretrain + finetune


def common_overrides(runs_: list[PodRun]) -> dict:
  """The overrides every run in `runs_` shares (printed once, written once)."""
  first, rest = runs_[0].overrides, runs_[1:]
  return {k: v for k, v in first.items() if all(r.overrides.get(k, object()) == v for r in rest)}


def table(all_runs: list[PodRun]) -> list[str]:
  pre = [r for r in all_runs if not r.source]
  shared = common_overrides(pre)
  lines = [f'# pretraining overrides shared by all {len(pre)}: ' +
           ' '.join(f'{k}={v}' for k, v in shared.items()),
           '# fine-tune overrides shared by all: ' +
           ' '.join(f'{k}={v}' for k, v in FINETUNE.items()),
           f'{"run":<46} {"config":<38} {"steps":>7} {"FLOPs":>9} {"chip-h":>8} '
           f'{"GiB/chip":>8}  overrides']
  for r in all_runs:
    own = {k: v for k, v in r.overrides.items() if k not in (FINETUNE if r.source else shared)}
    lines.append(f'{r.name:<46} {r.config:<38} {r.steps:>7} {r.flops:>9.3g} '
                 f'{r.chip_hours:>8.2f} {r.gib_per_chip:>8.2f}  ' +
                 ' '.join(f'{k}={v}' for k, v in own.items()))
  hours = sum(r.chip_hours for r in all_runs)
  ft_hours = sum(r.chip_hours for r in all_runs if r.source)
  lines.append(f'total: {len(pre)} pretraining + {len(all_runs) - len(pre)} fine-tuning runs, '
               f'{sum(r.flops for r in all_runs):.3g} FLOPs, {hours:,.0f} {ACCELERATOR} chip-hours '
               f'(fine-tuning {ft_hours:,.0f}), {hours / CHIPS:,.1f} h on one {TPU_TYPE} '
               f'at MFU {MFU}')
  return lines


def sweep_text(all_runs: list[PodRun], workdir: str, command: str) -> str:
  """A sweep file (experiments/sweep.py) with every number written out: stdlib only."""
  pre = [r for r in all_runs if not r.source]
  shared = common_overrides(pre)
  entries = []
  for r in all_runs:
    group, own = (('FINETUNE', {k: v for k, v in r.overrides.items() if k not in FINETUNE})
                  if r.source else
                  ('PRETRAIN', {k: v for k, v in r.overrides.items() if k not in shared}))
    inner = ''.join(f', {k!r}: {v!r}' for k, v in own.items())
    entries.append(f'    ({r.name!r}, {r.config!r}, {{**{group}{inner}}}),')
  return '\n'.join([
      'r"""The objective comparison at base size on C4 and GLUE (--preset=pod), generated by',
      'experiments/compare_objectives/pod.py; the fine-tunes read <workdir>/<pretraining run>',
      'of the workdir below, so another workdir means another file:',
      '',
      f'  python -m experiments.compare_objectives --preset=pod --workdir={workdir}',
      f'  {command}',
      '',
      f'{len(pre)} pretraining runs (arms x budgets {", ".join(map(_label, BUDGETS))} FLOPs x '
      'learning rates), then',
      f'{len(all_runs) - len(pre)} fine-tunes ({", ".join(TASKS)}).  C4 (c4/en) is built with '
      'Apache Beam, never downloaded',
      'here: prepare it once (`tfds build c4/en`) into a data dir the workers read',
      '(--config.data.data_dir, or PTLM_DATA_DIR).',
      '"""',
      f'WORKDIR = {workdir!r}',
      f'PRETRAIN = {shared!r}',
      f'FINETUNE = {FINETUNE!r}',
      'RUNS = [', *entries, ']', ''])


def launch_command(path: str, workdir: str) -> str:
  return (f'./launch.sh sweep {path} --workdir={workdir} --tpu={TPU_NAME} --zone={ZONE} '
          f'--type={TPU_TYPE}')


def sweep_path(workdir: str) -> str:
  """Where the sweep file goes: the current directory (the workdir is the workers' path)."""
  del workdir
  return os.path.join('.', 'compare_pod_sweep.py')


def main(arms, optimizer: str, workdir: str, dry_run: bool, log=print) -> str:
  """Prints the plan (dry_run) or writes the sweep file and prints its launch command."""
  all_runs = runs(arms, optimizer, workdir)
  workdir = pod_workdir(workdir)
  path = sweep_path(workdir)
  command = launch_command(os.path.relpath(path), workdir)
  for line in table(all_runs):
    log(line)
  if dry_run:
    log(f'# dry run: nothing written; without --dry_run this writes {path} to run with:')
    log(command)
    return ''
  with open(path, 'w', encoding='utf-8') as f:
    f.write(sweep_text(all_runs, workdir, command))
  log(f'# wrote {path} ({len(all_runs)} runs); run it on a TPU VM with:')
  log(command)
  return path


def committed_text() -> str:
  """The committed sweep file (COMMITTED): the default arms and optimizer, a placeholder
  bucket; tests/test_compare_pod.py checks that it is up to date."""
  arms = plan.parse_arms(plan.DEFAULT_ARMS)
  return sweep_text(runs(arms, 'adamw', COMMITTED_WORKDIR), COMMITTED_WORKDIR,
                    launch_command(COMMITTED, COMMITTED_WORKDIR))


if __name__ == '__main__':  # regenerates the committed sweep file
  with open(os.path.join(os.path.dirname(__file__), '..', '..', COMMITTED), 'w',
            encoding='utf-8') as f:
    f.write(committed_text())
