r"""HF checkpoints and model dirs in and out.

  python -m ptlm_jax.main.hf --input=HF_DIR --output=MODEL_DIR      # HF -> ptlm_jax model dir
  python -m ptlm_jax.main.hf --input=MODEL_DIR --output=HF_DIR      # and back
  python -m ptlm_jax.main.hf --input=runs/gpt-lora --output=models/gpt --format=hf
                                              # a training workdir, LoRA merged, as HF or model dir
"""
from absl import app, flags

from ptlm_jax import errors
from ptlm_jax.hf import convert
from ptlm_jax.main import cli
from ptlm_jax.training import checkpoint, pretrained

FLAGS = flags.FLAGS
flags.DEFINE_string('input', None, 'HF checkpoint dir (or cached hub name), a ptlm_jax model dir, '
                    'or a training workdir (PEFT runs are rebuilt and merged).')
flags.DEFINE_string('output', None, 'Directory to write: a ptlm_jax model dir when --input is HF, '
                    'an HF dir when --input is a ptlm_jax model dir, --format for a workdir.')
flags.DEFINE_enum('format', 'model', ['model', 'hf'], 'A workdir: write a ptlm_jax model dir or an HF dir.')
flags.DEFINE_integer('step', 0, 'A workdir: checkpoint step (0 = latest).')
flags.mark_flags_as_required(['input', 'output'])


def run() -> None:
  cli.quiet_logs()
  if checkpoint.is_workdir(FLAGS.input):
    print(pretrained.export(FLAGS.input, FLAGS.output, FLAGS.format, FLAGS.step or None))
  else:
    print(convert.convert(FLAGS.input, FLAGS.output))


if __name__ == '__main__':
  app.run(errors.one_line_errors(run), flags_parser=cli.parse_flags)
