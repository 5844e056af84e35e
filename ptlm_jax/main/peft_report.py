r"""The trainable-parameter report of a config's PEFT settings, without training anything.

  python -m ptlm_jax.main.peft_report --config=configs/bert.py:base \
      --config.peft.method=lora --config.peft.lora_rank=16
"""
from absl import app, flags
from ml_collections import config_flags

from ptlm_jax import config_lib, errors
from ptlm_jax.main import cli
from ptlm_jax.peft import partitions

config_flags.DEFINE_config_file('config', None, 'Config file and variant, e.g. '
                                'configs/bert.py:base; --config.peft.* as in training.',
                                lock_config=True)
flags.mark_flags_as_required(['config'])


def run() -> None:
  config = flags.FLAGS.config
  config_lib.validate(config)
  partitions.check_config(config.peft)
  print(f'{config.model.family}, peft.method={config.peft.method}:')
  print(partitions.format_report(partitions.config_report(config)))


if __name__ == '__main__':
  app.run(errors.one_line_errors(run), flags_parser=cli.parse_flags)
