r"""Command line of the objective comparison (see __init__.py).

  python -m experiments.compare_objectives --workdir=runs/compare [--seeds=3] [--corpus=shakespeare]
"""
import dataclasses
import os
import time

# Before TensorFlow (under TFDS) loads: keep its C++ start-up lines off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
# XLA:CPU at LLVM optimisation level 1: the comparison's models are tiny, their steps run in
# library matmuls, and level 1 compiles each new step ~25% sooner with the same step time
# (measured: a cold rotten_tomatoes fine-tune 29.6-30.1 s against 32.5-35.5 s; pretraining
# steps level).  Before jax starts its backend; an XLA_FLAGS that sets the level wins.
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_backend_optimization_level=1').strip()

from absl import app, flags  # pylint: disable=g-import-not-at-top

from experiments.compare_objectives import downstream, plan, report, runner  # pylint: disable=g-import-not-at-top
from ptlm_jax import errors
from ptlm_jax.main import cli

_DEFAULTS = plan.Settings()
FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', 'runs/compare', 'Where the runs, report.md and the plots go.')
flags.DEFINE_integer('seeds', 1, 'Pretraining seeds 0..N-1 (each pretrains, then fine-tunes).')
flags.DEFINE_integer('finetune_seeds', _DEFAULTS.finetune_seeds,
                     'Fine-tuning runs per pretrained (and from-scratch) model and task.')
flags.DEFINE_list('tasks', list(_DEFAULTS.tasks), 'Downstream tasks: rotten_tomatoes, shakespeare_ner.')
flags.DEFINE_enum('corpus', _DEFAULTS.corpus, ['news', 'shakespeare'], 'Pretraining corpus.')
flags.DEFINE_float('budget_flops', _DEFAULTS.budget_flops,
                   'Training FLOPs of each pretraining run (steps = budget / FLOPs per step).')
flags.DEFINE_integer('finetune_steps', _DEFAULTS.finetune_steps,
                     'rotten_tomatoes fine-tuning updates (batch 32) per model.')
flags.DEFINE_float('finetune_lr', _DEFAULTS.finetune_lr, 'Fine-tuning peak learning rate.')
flags.DEFINE_string('finetune_train_split', _DEFAULTS.finetune_train_split,
                    "Labelled rotten_tomatoes examples used, e.g. 'train[:2000]'.")
flags.DEFINE_integer('ner_steps', _DEFAULTS.ner_steps, 'shakespeare_ner fine-tuning updates (batch 32).')
flags.DEFINE_string('ner_train_split', _DEFAULTS.ner_train_split,
                    "Labelled shakespeare_ner speeches used, e.g. 'train[:2000]'.")
flags.DEFINE_string('arms', _DEFAULTS.arms,
                    'architecture:objective pairs, comma-separated (bert:mlm, gpt:causal_lm, '
                    'gpt:prefix_lm, t5:span_corruption, t5:prefix_lm, t5:ul2).')
flags.DEFINE_enum('optimizer', _DEFAULTS.optimizer, list(plan.OPTIMIZERS),
                  'One optimizer and schedule for every arm (family: each its own, confounded).')
flags.DEFINE_bool('probe', _DEFAULTS.probe,
                  'A linear probe (rotten_tomatoes) at every pretraining evaluation.')
flags.DEFINE_enum('preset', 'laptop', ['laptop', 'pod'],
                  'laptop: this job; pod: base-size arms on c4/en with GLUE, written as a sweep '
                  'for a TPU VM (experiments/compare_objectives/pod.py).')
flags.DEFINE_bool('dry_run', False, 'With --preset=pod: print every run, its FLOPs, steps and '
                  'estimated TPU-hours; write nothing.')


def run():
  arms = plan.parse_arms(FLAGS.arms)
  if FLAGS.preset == 'pod':
    from experiments.compare_objectives import pod  # pylint: disable=g-import-not-at-top
    pod.main(arms, FLAGS.optimizer, FLAGS.workdir, FLAGS.dry_run)
    return
  if FLAGS.dry_run:
    raise errors.UserError('--dry_run is for --preset=pod (this job prints its runs as it goes)')
  for name in ('seeds', 'finetune_seeds'):
    if FLAGS[name].value < 1:
      raise errors.UserError(f'--{name}={FLAGS[name].value} is invalid: expected an integer >= 1')
  unknown = [t for t in FLAGS.tasks if t not in downstream.TASKS]
  if unknown or not FLAGS.tasks:
    raise errors.UserError(f'--tasks={",".join(FLAGS.tasks)} is invalid: expected some of '
                           f'{", ".join(downstream.TASKS)}')
  settings = dataclasses.replace(
      _DEFAULTS, corpus=FLAGS.corpus, budget_flops=FLAGS.budget_flops,
      finetune_steps=FLAGS.finetune_steps, finetune_lr=FLAGS.finetune_lr,
      finetune_train_split=FLAGS.finetune_train_split, finetune_seeds=FLAGS.finetune_seeds,
      tasks=tuple(FLAGS.tasks), ner_steps=FLAGS.ner_steps, ner_train_split=FLAGS.ner_train_split,
      arms=','.join(a.name for a in arms), optimizer=FLAGS.optimizer, probe=FLAGS.probe)
  cli.quiet_logs()  # after the flag checks: it imports TensorFlow
  started = time.perf_counter()
  results = runner.run(settings, FLAGS.workdir, seeds=FLAGS.seeds)
  results.seconds = time.perf_counter() - started
  paths = report.write(results, os.path.abspath(FLAGS.workdir), FLAGS.seeds)
  print()
  with open(paths['report'], encoding='utf-8') as f:
    print(f.read())
  print(f"[compare] done in {results.seconds / 60:.1f} min. Report: {paths['report']}")
  print(f"[compare] plots: {', '.join(v for k, v in paths.items() if k != 'report')}")


if __name__ == '__main__':
  app.run(errors.one_line_errors(run))
