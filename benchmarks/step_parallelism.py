r"""Per-device cost of the compiled train step on N fake CPU devices, with and without dropout.

  python -m benchmarks.step_parallelism --families=gpt,bert --meshes=8x1x1,4x2x1,2x2x2
  python -m benchmarks.step_parallelism --families=gpt --meshes=8x1x1 --plain_vmap  # the old step
  python -m benchmarks.step_parallelism --families=gpt --meshes=8x1x1 --time_steps=5

One JSON line per (family, mesh, dropout): XLA's `cost_analysis()` FLOPs and
`memory_analysis()` temp bytes of the one per-device program (training/compiled.py),
at the `small` variant (GPT small: batch 32 x 128, d_model 256, 4 layers) unless
`--variant` says otherwise.  `--plain_vmap` puts back the per-row vmap without
`spmd_axis_name` (every device then computes the whole batch).  `--time_steps` also runs
the step on random rows (median seconds per step: dropout's threefry bits are the
difference between the rates; on a shared CPU compare lines of one run only).
"""
from __future__ import annotations

import os
import sys


def _fake_devices(argv) -> None:
  n = next((int(a.split('=')[1]) for a in argv if a.startswith('--devices=')), 8)
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={n}')


_fake_devices(sys.argv)  # before jax is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
import json
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from ptlm_jax import config_lib
from ptlm_jax.training import compiled, parallel

flags.DEFINE_integer('devices', 8, 'Fake CPU devices.')
flags.DEFINE_string('families', 'gpt,bert', 'Comma-separated families.')
flags.DEFINE_string('variant', 'small', 'Config variant.')
flags.DEFINE_string('meshes', '8x1x1,4x2x1,2x2x2', 'Comma-separated data x fsdp x tensor.')
flags.DEFINE_string('rates', '0.0,0.1', 'Dropout rates (residual and attention).')
flags.DEFINE_bool('plain_vmap', False, 'The old per-row vmap (no spmd_axis_name).')
flags.DEFINE_integer('time_steps', 0, 'Also time this many steps (after one untimed).')
FLAGS = flags.FLAGS


def measure(family: str, variant: str, mesh: tuple[int, int, int], rate: float,
            time_steps: int = 0) -> dict:
  c = config_lib.base_config(family, variant)
  c.model.update(dropout_rate=rate, attention_dropout_rate=rate)
  c.parallel.update(mode='mesh', mesh_data=mesh[0], mesh_fsdp=mesh[1], mesh_tensor=mesh[2])
  start = time.perf_counter()
  step = compiled.lower_train_step(c).compile()
  out = dict(family=family, variant=variant, mesh='x'.join(map(str, mesh)), dropout=rate,
             compile_s=round(time.perf_counter() - start, 1))
  figures = compiled.step_figures(step)
  out.update(gflops_per_device=round(figures['flops'] / 1e9, 3),
             temp_mib_per_device=round(figures['temp_bytes'] / 2**20, 2))
  if time_steps:
    out['step_s_median'] = _time(step, time_steps)
  return out


def _time(step, steps: int) -> float:
  """Median seconds of `steps` runs of the compiled step on zero state and random rows."""
  (state_info, batch_info, key_info), shardings = step.args_info[0], step.input_shardings[0]
  rng = np.random.RandomState(0)
  put = lambda info, sharding, fill: jax.device_put(fill(info.shape).astype(info.dtype), sharding)
  state = jax.tree.map(lambda i, s: put(i, s, np.zeros), state_info, shardings[0])
  batch = jax.tree.map(lambda i, s: put(i, s, lambda shape: rng.randint(1, 50, shape)),
                       batch_info, shardings[1])
  key = put(key_info, shardings[2], lambda shape: np.arange(np.prod(shape)).reshape(shape))
  times = []
  for i in range(steps + 1):
    begin = time.perf_counter()
    state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    if i:
      times.append(time.perf_counter() - begin)
  return round(statistics.median(times), 4)


def main(argv) -> None:
  del argv
  if FLAGS.plain_vmap:
    parallel.MeshParallel.vmap_rows = parallel.Parallel.vmap_rows
  for family in FLAGS.families.split(','):
    for mesh in FLAGS.meshes.split(','):
      for rate in (float(r) for r in FLAGS.rates.split(',')):
        record = measure(family, FLAGS.variant, tuple(int(x) for x in mesh.split('x')), rate,
                         FLAGS.time_steps)
        record.update(plain_vmap=FLAGS.plain_vmap, devices=jax.device_count(),
                      jax=jax.__version__)
        print(json.dumps(record), flush=True)


if __name__ == '__main__':
  app.run(main)
