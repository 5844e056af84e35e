r"""Training cost before you train (see ptlm_jax/estimate.py for the method).

  python -m ptlm_jax.main.estimate --config=configs/gpt.py:base --accelerator=h100 \
      --num_devices=8 --tokens=10e9
"""
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
flags.DEFINE_bool('json', False, 'Print one JSON line instead of the table.')
flags.mark_flags_as_required(['config'])


def run() -> None:
  config = FLAGS.config
  config_lib.validate(config)
  e = estimate.estimate(config, FLAGS.accelerator, FLAGS.num_devices, FLAGS.tokens, FLAGS.mfu,
                        FLAGS.pue, FLAGS.grid_kg_per_kwh, FLAGS.peak_flops, FLAGS.power_watts,
                        FLAGS.price_per_hour)
  if FLAGS.json:
    print(json.dumps(e.to_dict()))
  else:
    print(estimate.report(e, config, FLAGS.accelerator, FLAGS.num_devices, FLAGS.tokens))


if __name__ == '__main__':
  app.run(errors.one_line_errors(run), flags_parser=cli.parse_flags)
