r"""The handout as runnable code: every numeric exercise, answered with the library.

  python -m experiments.handout --workdir=runs/handout [--quick] [--compare_workdir=runs/compare]
  python -m experiments.handout --workdir=runs/handout --only=exercises   # no training (~30 s)

Writes `<workdir>/answers.md` (and prints it).  exercises.py computes the answers that
need no training; measured.py runs the demos and the fine-tuning measurements (reusing
the default job's pretrained tiny BERT and GPT when `--compare_workdir` holds them).
--quick shortens the measured part to a few minutes.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app, flags  # pylint: disable=g-import-not-at-top

from experiments.handout import answers  # pylint: disable=g-import-not-at-top
from ptlm_jax import errors
from ptlm_jax.main import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', 'runs/handout', 'Where answers.md and the runs go.')
flags.DEFINE_bool('quick', False, 'Shorter pretraining and fine-tuning for the measured answers.')
flags.DEFINE_string('compare_workdir', 'runs/compare',
                    "The default job's workdir: its pretrained tiny BERT and GPT are reused.")
flags.DEFINE_enum('only', 'all', ['all', 'exercises'],
                  'exercises: only the answers that need no training.')


def run():
  cli.quiet_logs()
  path = answers.write(FLAGS.workdir, quick=FLAGS.quick, compare_workdir=FLAGS.compare_workdir,
                       measured_part=FLAGS.only == 'all')
  with open(path, encoding='utf-8') as f:
    print(f.read())
  print(f'[handout] answers: {path}')


if __name__ == '__main__':
  app.run(errors.one_line_errors(run))
