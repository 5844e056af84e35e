r"""The fit table: published sizes at their recipe batches, compiled on fake CPU devices.

  python -m benchmarks.fit_check --out=benchmarks/results/fit_check_2026-12-07.jsonl
  python -m benchmarks.fit_check --configs=configs/gpt.py:gpt2 --setups=8x80   # one line
  python -m benchmarks.fit_check --reestimate=FILE --table   # today's estimator, as markdown

For each config and setup (devices x GB), the estimator (ptlm_jax/estimate.py) picks the
fewest microbatches (`optim.microbatches`, dividing the rows per device) whose predicted
per-device total fits in 90% of the device memory; the real train step is then compiled
with them for that many fake CPU devices (training/compiled.py: abstract inputs, nothing
allocated) and XLA's per-device bytes are written beside the prediction, one JSON line
each.  Defaults are the configs' own (base and larger: bfloat16 compute, float32 master
weights and AdamW / Adafactor state, scanned layers, remat 'dots', fsdp over all devices).
Compiles take minutes each on a laptop CPU.
"""
from __future__ import annotations

import os
import sys

_DEVICES = 16  # the largest setup; every setup uses the first N of them
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           f' --xla_force_host_platform_device_count={_DEVICES}')
# pylint: disable=g-import-not-at-top,wrong-import-position
import importlib.util
import json
import time

import jax
from absl import app, flags

from ptlm_jax import estimate
from ptlm_jax.training import compiled

CONFIGS = ('configs/gpt.py:gpt2', 'configs/gpt.py:medium', 'configs/gpt.py:xl',
           'configs/bert.py:base', 'configs/bert.py:large', 'configs/t5.py:base',
           'configs/t5.py:large')
flags.DEFINE_string('configs', ','.join(CONFIGS), 'Comma-separated config:variant.')
flags.DEFINE_string('setups', '8x80,16x32', 'Comma-separated devices x GB per device.')
flags.DEFINE_string('out', '', 'Append JSON lines here too.')
flags.DEFINE_float('headroom', 0.9, 'Fraction of device memory the estimate may fill.')
flags.DEFINE_string('reestimate', '', 'Rewrite this JSONL\'s estimates with the current '
                    'estimator (same configs, devices and microbatches; nothing compiled).')
flags.DEFINE_bool('table', False, 'Print --reestimate\'s file as a markdown table.')
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(spec: str):
  path, variant = spec.split(':')
  module_spec = importlib.util.spec_from_file_location('_config', os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant)


def _estimate(config, devices):
  return estimate.estimate(config, 'h100', devices, 1e9, 0.4, 1.1, 0.429)


def fewest_microbatches(config, devices: int, capacity: float) -> int:
  """The fewest microbatches (dividing the rows per device) whose estimate fits `capacity`."""
  rows = config.train.batch_size // devices  # fsdp (or data) over every device
  for m in (m for m in range(1, rows + 1) if rows % m == 0):
    config.optim.microbatches = m
    if _estimate(config, devices).memory_bytes['total'] <= capacity:
      return m
  return rows


def measure(spec: str, devices: int, gb: float, headroom: float) -> dict:
  config = load(spec)
  config.parallel.num_devices = devices
  m = fewest_microbatches(config, devices, headroom * gb * 1e9)
  config.optim.microbatches = m
  e = _estimate(config, devices)
  start = time.perf_counter()
  figures = compiled.step_figures(compiled.lower_train_step(config, devices).compile())
  c = config.model
  return dict(config=spec, params=e.params_total, devices=devices, device_gb=gb,
              batch=config.train.batch_size, seq_len=config.data.seq_len, microbatches=m,
              dtype=c.dtype, remat=c.remat, scan_layers=c.scan_layers,
              parallel=config.parallel.mode, optimizer=config.optim.optimizer,
              compile_s=round(time.perf_counter() - start, 1), **figures,
              estimated_bytes=e.memory_bytes['total'],
              estimate_over_compiled=round(e.memory_bytes['total'] / figures['total_bytes'], 3),
              fits=figures['total_bytes'] <= gb * 1e9, backend=jax.default_backend(),
              jax=jax.__version__)


def reestimate(path: str) -> list[dict]:
  records = [json.loads(line) for line in open(path) if line.strip()]
  for r in records:
    config = load(r['config'])
    config.parallel.num_devices = r['devices']
    config.optim.microbatches = r['microbatches']
    r['estimated_bytes'] = _estimate(config, r['devices']).memory_bytes['total']
    r['estimate_over_compiled'] = round(r['estimated_bytes'] / r['total_bytes'], 3)
  with open(path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
  return records


def table(records: list[dict]) -> str:
  lines = ['| model | params | devices x GB | batch x length | microbatches | compiled GB / device '
           '| estimated GB | estimate / compiled | fits |', '|' + '---|' * 9]
  for r in records:
    lines.append(f"| {r['config']} | {r['params'] / 1e6:,.0f}M | {r['devices']} x {r['device_gb']:g} "
                 f"| {r['batch']} x {r['seq_len']} | {r['microbatches']} "
                 f"| {r['total_bytes'] / 1e9:.1f} | {r['estimated_bytes'] / 1e9:.1f} "
                 f"| {r['estimate_over_compiled']:.2f} | {'yes' if r['fits'] else 'no'} |")
  return '\n'.join(lines)


def main(argv) -> None:
  del argv
  if FLAGS.reestimate:
    records = reestimate(FLAGS.reestimate)
    print(table(records) if FLAGS.table else '\n'.join(json.dumps(r) for r in records))
    return
  for setup in FLAGS.setups.split(','):
    devices, gb = setup.split('x')
    for spec in FLAGS.configs.split(','):
      line = json.dumps(measure(spec, int(devices), float(gb), FLAGS.headroom))
      print(line, flush=True)
      if FLAGS.out:
        with open(FLAGS.out, 'a') as f:
          f.write(line + '\n')


if __name__ == '__main__':
  sys.exit(app.run(main))
