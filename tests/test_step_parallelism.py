"""Dropout keeps data parallelism: XLA's per-device cost of the compiled step, 8 fake devices.

The per-row vmap that makes dropout masks layout-independent once left the row axis
unsharded, so every device computed the whole global batch (7x the FLOPs at GPT small).
Here the compiled step at dropout 0.1 must cost within 1.2x of the step at dropout 0, in
FLOPs and in temporary memory, on every mesh shape.  Nothing is executed.
"""
import functools

import pytest

from ptlm_jax import config_lib
from ptlm_jax.training import compiled, parallel

MESHES = {'data8': (8, 1, 1), 'data4_fsdp2': (4, 2, 1), 'data2_fsdp2_tensor2': (2, 2, 2)}


def _config(family, mesh, rate):
  c = config_lib.base_config(family, 'tiny')
  c.model.update(d_model=64, head_dim=32, num_heads=2, d_ff=256, num_layers=1,
                 num_decoder_layers=1, dropout_rate=rate, attention_dropout_rate=rate)
  c.data.seq_len = 64
  c.train.batch_size = 16
  data, fsdp, tensor = mesh
  c.parallel.update(mode='mesh', mesh_data=data, mesh_fsdp=fsdp, mesh_tensor=tensor)
  return c


@functools.lru_cache(maxsize=None)
def _figures(family, mesh, rate):
  return compiled.step_figures(compiled.lower_train_step(_config(family, mesh, rate)).compile())


@pytest.mark.parametrize('mesh', list(MESHES.values()), ids=list(MESHES))
@pytest.mark.parametrize('family', ['gpt', 'bert'])
def test_dropout_costs_what_the_plain_step_costs_per_device(family, mesh):
  plain, dropped = _figures(family, mesh, 0.0), _figures(family, mesh, 0.1)
  assert dropped['flops'] <= 1.2 * plain['flops'], (dropped['flops'], plain['flops'])
  assert dropped['temp_bytes'] <= 1.2 * plain['temp_bytes'], (
      dropped['temp_bytes'], plain['temp_bytes'])


def test_a_plain_vmap_fails_the_bound(monkeypatch):
  # Without spmd_axis_name (the old step) the rows are computed on every device.
  monkeypatch.setattr(parallel.MeshParallel, 'vmap_rows', parallel.Parallel.vmap_rows)
  plain = _figures('gpt', (8, 1, 1), 0.0)  # no dropout: no vmap
  dropped = _figures.__wrapped__('gpt', (8, 1, 1), 0.1)  # not the cached figures
  assert dropped['flops'] > 1.5 * plain['flops']  # 1.75x here (one layer); 7x at GPT small


def test_the_fit_defaults_train_alike_in_pmap_and_mesh(tmp_path):
  # Base and larger default to bf16 compute, scanned layers, remat 'dots' and fsdp over all
  # devices; pmap (a full copy per device) must still run them, dropout on, to the same losses.
  import numpy as np  # pylint: disable=g-import-not-at-top
  import data_testlib
  import stand_ins
  from test_train_families import _config as family_config
  from ptlm_jax.training import train
  data_testlib.small_tokenizer()
  losses = {}
  for mode, mesh in (('pmap', {}), ('mesh', {'parallel.mesh_data': 1, 'parallel.mesh_fsdp': -1})):
    config = family_config('gpt', **{'parallel.mode': mode, **mesh, 'train.eval_steps': 0,
                                     'model.dropout_rate': 0.1,
                                     'model.attention_dropout_rate': 0.1})
    config.model.update(dtype='bfloat16', scan_layers=True, remat='dots', num_layers=2)
    train.run(config, str(tmp_path / mode), train.build_components)
    metrics = stand_ins.read_metrics(str(tmp_path / mode))
    losses[mode] = [metrics[s]['loss'] for s in (1, 2, 3)]
  assert np.all(np.isfinite(losses['pmap']))
  np.testing.assert_allclose(losses['pmap'], losses['mesh'], rtol=1e-2)
