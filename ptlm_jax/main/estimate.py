r"""Training cost before you train (see ptlm_jax/estimate.py for the method).

  python -m ptlm_jax.main.estimate --config=configs/gpt.py:base --accelerator=h100 \
      --num_devices=8 --tokens=10e9
  python -m ptlm_jax.main.estimate --config=configs/gpt.py:xl --num_devices=16 --compile

`--compile` is the fit check: it also compiles the real train step for `--num_devices`
devices (fake CPU devices when this machine has fewer: XLA_FLAGS is set before jax
loads) on abstract inputs, nothing allocated, and prints XLA's per-device bytes beside
the estimator's prediction.  Compiling a published size on a laptop CPU takes minutes.
"""
import os
import sys


def _fake_devices_for_compile(argv) -> None:
  """--compile over more devices than exist: fake CPU devices, before jax is imported."""
  value = lambda name: next((a.split('=', 1)[1] for a in argv if a.startswith(f'--{name}=')), '')
  if '--compile' not in argv and value('compile').lower() not in ('true', '1'):
    return
  count = value('num_devices')
  if count.isdigit() and 'xla_force_host_platform_device_count' not in os.environ.get(
      'XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count={count}').strip()
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')


_fake_devices_for_compile(sys.argv)
# pylint: disable=g-import-not-at-top,wrong-import-position
import json

from absl import app, flags
from ml_collections import config_flags

from ptlm_jax import config_lib, errors, estimate
from ptlm_jax.main import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file and variant, e.g. configs/gpt.py:base.')
flags.DEFINE_enum('accelerator', 'h100', sorted(estimate.ACCELERATORS), 'Device type (peak, power, price).')
flags.DEFINE_integer('num_devices', 8, 'Devices training together.')
flags.DEFINE_float('tokens', 1e9, 'Training tokens.')
flags.DEFINE_float('mfu', 0.4, 'Model FLOPs utilisation the run sustains (fraction of peak).')
flags.DEFINE_float('pue', 1.1, 'Data-centre power usage effectiveness.')
flags.DEFINE_float('grid_kg_per_kwh', 0.429, 'Grid carbon intensity, kg CO2 per kWh (US average, Patterson et al.).')
flags.DEFINE_float('peak_flops', 0.0, 'Override the peak FLOP/s per device.')
flags.DEFINE_float('power_watts', 0.0, 'Override the average power per device.')
flags.DEFINE_float('price_per_hour', -1.0, 'Override USD per device-hour.')
flags.DEFINE_bool('compile', False, 'Fit check: compile the real train step on --num_devices '
                  '(fake CPU) devices and print XLA\'s per-device bytes beside the estimate.')
flags.DEFINE_bool('json', False, 'Print one JSON line instead of the table.')
flags.mark_flags_as_required(['config'])


def run() -> None:
  config = FLAGS.config
  config_lib.validate(config)
  e = estimate.estimate(config, FLAGS.accelerator, FLAGS.num_devices, FLAGS.tokens, FLAGS.mfu,
                        FLAGS.pue, FLAGS.grid_kg_per_kwh, FLAGS.peak_flops, FLAGS.power_watts,
                        FLAGS.price_per_hour)
  fit = estimate.fit_check(config, FLAGS.num_devices, e) if FLAGS.compile else None
  if FLAGS.json:
    print(json.dumps({**e.to_dict(), **({'compiled': fit} if fit else {})}))
    return
  print(estimate.report(e, config, FLAGS.accelerator, FLAGS.num_devices, FLAGS.tokens))
  if fit:
    print(estimate.fit_report(fit))


if __name__ == '__main__':
  app.run(errors.one_line_errors(run), flags_parser=cli.parse_flags)
