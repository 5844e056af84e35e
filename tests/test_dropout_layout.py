"""Dropout masks depend on (seed, step, global row) only: every layout trains the same run.

The stand-in model has residual dropout; at rate 0.3 different masks move the loss by far
more than the float tolerance, so a layout-dependent draw (a key per device, or one key
for a whole device's rows) fails these tests.
"""
import numpy as np
import pytest

import stand_ins

DROPOUT = {'model.dropout_rate': 0.3, 'train.eval_steps': 0, 'train.log_every': 1}
STEPS = 4


def _losses(metrics, steps=None):
  return np.array([metrics[s]['loss'] for s in sorted(metrics) if steps is None or s in steps])


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('one_device')
  return _losses(stand_ins.train(workdir, {**DROPOUT, 'parallel.mode': 'mesh',
                                           'parallel.num_devices': 1, 'train.steps': STEPS}))


@pytest.mark.parametrize('overrides', [
    {'parallel.mode': 'pmap'},
    {'parallel.mode': 'pmap', 'parallel.num_devices': 2, 'optim.microbatches': 2},
    {'parallel.mode': 'mesh', 'parallel.mesh_data': 2, 'parallel.mesh_fsdp': 2,
     'parallel.mesh_tensor': 2},
], ids=['pmap8', 'pmap2_micro2', 'mesh2x2x2'])
def test_layouts_give_the_same_losses_with_dropout(tmp_path, one_device, overrides):
  losses = _losses(stand_ins.train(tmp_path, {**DROPOUT, **overrides, 'train.steps': STEPS}))
  np.testing.assert_allclose(losses, one_device, rtol=2e-5)


def test_dropout_is_on(tmp_path, one_device):
  # The same run without dropout is a different run (so the tests above test masks).
  plain = _losses(stand_ins.train(tmp_path, {**DROPOUT, 'model.dropout_rate': 0.0,
                                             'parallel.mode': 'mesh', 'parallel.num_devices': 1,
                                             'train.steps': STEPS}))
  assert np.abs(plain - one_device).max() > 1e-3


def test_resume_on_another_device_count_continues_exactly(tmp_path, one_device):
  common = {**DROPOUT, 'parallel.mode': 'pmap', 'train.checkpoint_every': 2}
  stand_ins.train(tmp_path, {**common, 'parallel.num_devices': 2, 'train.steps': 2})
  resumed = stand_ins.train(tmp_path, {**common, 'parallel.num_devices': 4,
                                       'train.steps': STEPS})
  np.testing.assert_allclose(_losses(resumed, steps=(3, 4)), one_device[2:], rtol=2e-5)
