r"""Training entry point: parses absl flags and calls `ptlm_jax.main.run(config, workdir)`.

  python -m ptlm_jax.main --config=configs/gpt.py:tiny --workdir=runs/gpt \
      --config.train.steps=500 --config.optim.lr=3e-4
"""
import os

# Before TensorFlow (under TFDS) loads: keep its C++ start-up lines off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # TF only reads TFRecords here

from absl import app, flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from ptlm_jax import errors
from ptlm_jax.main import cli, run

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


if __name__ == '__main__':
  app.run(errors.one_line_errors(lambda: run(FLAGS.config, FLAGS.workdir)),
          flags_parser=cli.parse_flags)
