"""pmap, mesh and one device agree; accumulation; sharding rules; two processes; validation."""
import json
import os
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import stand_ins
from ptlm_jax import errors
from ptlm_jax.training import parallel, train

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 3


def _losses(metrics):
  return np.array([metrics[s]['loss'] for s in sorted(metrics)])


@pytest.fixture(scope='module')
def one_device_losses(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('one_device')
  return _losses(stand_ins.train(workdir, {'parallel.mode': 'mesh', 'parallel.num_devices': 1,
                                           'train.steps': STEPS, 'train.eval_steps': 0}))


@pytest.mark.parametrize('overrides', [
    {'parallel.mode': 'pmap'},
    {'parallel.mode': 'mesh', 'parallel.mesh_data': 2, 'parallel.mesh_fsdp': 2,
     'parallel.mesh_tensor': 2},
], ids=['pmap8', 'mesh2x2x2'])
def test_modes_agree_with_one_device(tmp_path, one_device_losses, overrides):
  losses = _losses(stand_ins.train(tmp_path, {**overrides, 'train.steps': STEPS,
                                              'train.eval_steps': 0}))
  assert len(losses) == STEPS and losses[-1] < losses[0]
  np.testing.assert_allclose(losses, one_device_losses, rtol=2e-5)


def test_microbatches_sum_to_the_big_batch(tmp_path):
  common = {'parallel.mode': 'pmap', 'parallel.num_devices': 2, 'train.steps': STEPS,
            'train.eval_steps': 0}
  whole = _losses(stand_ins.train(tmp_path / 'one', {**common, 'optim.microbatches': 1}))
  split = _losses(stand_ins.train(tmp_path / 'four', {**common, 'optim.microbatches': 4}))
  np.testing.assert_allclose(split, whole, rtol=2e-5)


def _state_spec(config):
  components = stand_ins.components_fn()(config)
  return train.make_state_spec(config, components, jax.random.PRNGKey(0))


def test_mesh_shards_parameters_and_moments_by_logical_names():
  config = stand_ins.tiny_config({'parallel.mode': 'mesh', 'parallel.mesh_data': 2,
                                  'parallel.mesh_fsdp': 1, 'parallel.mesh_tensor': 4})
  par = parallel.make(config)
  with par.context():
    spec = _state_spec(config)
    par.prepare(spec.abstract_state, spec.param_specs)
    state = par.init_state(spec.init_state, jax.random.PRNGKey(0))
  specs = jax.tree.map(lambda s: s.spec, par.state_shardings)
  assert specs.params['mlp_in']['kernel'] == P('fsdp', 'tensor')     # (embed, mlp)
  assert specs.params['embedding'] == P('tensor', 'fsdp')            # (vocab, embed)
  assert specs.params['qkv'] == P(None, 'fsdp', None, None)          # 2 heads: 4 does not divide
  assert specs.step == P()
  adam = state.opt_state[1][0]
  assert adam.mu['mlp_in']['kernel'].sharding.spec == P('fsdp', 'tensor')
  # Placed directly sharded: each device holds a quarter of the MLP kernel (32 x 64).
  assert state.params['mlp_in']['kernel'].addressable_shards[0].data.shape == (32, 16)


def test_activation_rules_split_batch_over_data_and_fsdp_only():
  rules = parallel.LOGICAL_AXIS_RULES
  assert nn.logical_to_mesh_axes(('batch', 'length', 'embed'), rules) == P(('data', 'fsdp'), None, None)
  assert nn.logical_to_mesh_axes(('embed', 'mlp'), rules) == P('fsdp', 'tensor')
  assert nn.logical_to_mesh_axes(('batch', 'length', 'vocab'), rules) == P(('data', 'fsdp'), None, 'tensor')


def test_pmap_checkpoint_form_round_trips():
  config = stand_ins.tiny_config({'parallel.mode': 'pmap'})
  par = parallel.make(config)
  spec = _state_spec(config)
  state = par.init_state(spec.init_state, jax.random.PRNGKey(0))
  kernel = state.params['mlp_in']['kernel']
  assert kernel.shape == (8, 32, 64)
  global_state = par.to_global(state)
  assert global_state.params['mlp_in']['kernel'].shape == (32, 64)
  assert global_state.params['mlp_in']['kernel'].sharding.is_fully_replicated
  back = par.from_global(global_state)
  np.testing.assert_array_equal(np.asarray(back.params['mlp_in']['kernel']), np.asarray(kernel))


# ---------------------------------------------------------------------------
# Two processes on localhost (gloo), four CPU devices each.

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, one_device_losses):
  port = _free_port()
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
         'JAX_PLATFORMS': 'cpu'}
  procs = []
  for i in range(2):
    overrides = {'parallel.mode': 'mesh', 'train.steps': STEPS, 'train.eval_steps': 0,
                 'parallel.coordinator_address': f'localhost:{port}',
                 'parallel.num_processes': 2, 'parallel.process_id': i}
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(HERE, 'stand_ins.py'), str(tmp_path / 'mesh'),
         json.dumps(overrides), '--modes', 'mesh,pmap'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outputs = [p.communicate(timeout=240)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert '2 process(es)' in outputs[0]
  for mode in ('mesh', 'pmap'):
    workdir = tmp_path / 'mesh' if mode == 'mesh' else tmp_path / 'mesh-pmap'
    np.testing.assert_allclose(_losses(stand_ins.read_metrics(str(workdir))), one_device_losses,
                               rtol=2e-5, err_msg=mode)
    # Process 0 alone writes logs; both wrote their own input-iterator state.
    with open(workdir / 'metrics.jsonl', encoding='utf-8') as f:
      assert [json.loads(line)['step'] for line in f] == list(range(1, STEPS + 1))
    data_dir = workdir / 'checkpoints' / str(STEPS) / 'data'
    assert [json.loads((data_dir / f'process_{i}.json').read_text()) for i in (0, 1)] == [
        {'index': STEPS}, {'index': STEPS}]


# ---------------------------------------------------------------------------
# Validation: one line, before anything compiles.

@pytest.mark.parametrize('overrides, words', [
    ({'train.batch_size': 12}, 'config.train.batch_size=12 is invalid: expected a multiple of devices x microbatches (8 x 1 = 8)'),
    ({'parallel.mode': 'mesh', 'parallel.mesh_data': 3}, 'product is the device count (8)'),
    ({'parallel.mode': 'mesh', 'parallel.mesh_fsdp': 2, 'train.batch_size': 20},
     'a multiple of mesh data x fsdp x microbatches (4 x 2 x 1 = 8)'),
    ({'objective.name': 'span_corruption'}, "config.objective.name='span_corruption'"),
])
def test_validation_errors_are_one_line(tmp_path, overrides, words):
  built = []
  with pytest.raises(errors.ConfigError) as err:
    train.run(stand_ins.tiny_config(overrides), str(tmp_path), lambda c: built.append(c))
  assert words in str(err.value) and '\n' not in str(err.value)
  assert not built  # raised before the model was even built


def test_unwritable_workdir_is_one_line(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(errors.UserError) as err:
    train.run(stand_ins.tiny_config(), str(blocker / 'run'), lambda c: None)
  assert f'--workdir={blocker / "run"} is not a writable directory' in str(err.value)
  assert '\n' not in str(err.value)
