r"""Command-line entry point: parses absl flags and calls one importable function.

  python -m ptlm_jax.main --config=configs/gpt.py:tiny --workdir=runs/gpt \
      --config.train.steps=500 --config.optim.lr=3e-4
"""
import os

# Before TensorFlow (under TFDS) loads: keep its C++ start-up lines off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # TF only reads TFRecords here

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from ptlm_jax import cli, config_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None,
    'Config file and variant, e.g. configs/gpt.py:tiny. Any field can be overridden with '
    '--config.<group>.<field>=value (e.g. --config.optim.lr=3e-4); unknown fields are errors.',
    lock_config=True)
flags.DEFINE_string('workdir', None,
                    'Directory for checkpoints, TensorBoard logs and reports (created if missing; '
                    'an existing run there is resumed).')
flags.mark_flags_as_required(['config', 'workdir'])


def run(config, workdir: str) -> None:
  """Validates the config and runs the job it describes (importable, e.g. from a notebook)."""
  from ptlm_jax.data import local_files  # pylint: disable=g-import-not-at-top
  local_files.resolve(config)  # your own files: checked, and classes / steps filled in
  config_lib.validate(config)
  cli.quiet_progress_bars()  # after the cheap checks: it imports TensorFlow
  from ptlm_jax import train  # pylint: disable=g-import-not-at-top  (heavy: jax, flax)
  train.train_and_evaluate(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:  # orbax and TFDS log every file at INFO
    logging.set_verbosity(logging.WARNING)
  try:
    run(FLAGS.config, FLAGS.workdir)
  except config_lib.UserError as e:
    cli.fail(str(e))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
