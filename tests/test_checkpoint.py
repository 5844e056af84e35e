"""Exact resume after SIGKILL, SIGTERM, corrupt checkpoints, incompatible configs, retention."""
import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stand_ins
from ptlm_jax import errors
from ptlm_jax.training import checkpoint, parallel, train

HERE = os.path.dirname(os.path.abspath(__file__))
RESUME = {'train.steps': 8, 'train.checkpoint_every': 2, 'train.eval_steps': 0,
          'parallel.mode': 'mesh', 'parallel.mesh_data': 4, 'parallel.mesh_fsdp': 2}


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """Per-step train scalars of an uninterrupted run."""
  return stand_ins.train(tmp_path_factory.mktemp('reference'), RESUME)


def _start(workdir, overrides, sleep=0.0):
  return subprocess.Popen(
      [sys.executable, os.path.join(HERE, 'stand_ins.py'), str(workdir), json.dumps(overrides),
       '--sleep', str(sleep)],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_line(proc, prefix: str) -> list[str]:
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith(prefix):
      return lines
  raise AssertionError(f'the run ended before printing {prefix!r}:\n' + ''.join(lines[-30:]))


def _loss_bits(metrics):
  return {step: values['loss'] for step, values in metrics.items()}


def test_hard_kill_then_same_command_resumes_bit_for_bit(tmp_path, reference):
  killed = _start(tmp_path, RESUME, sleep=0.3)
  _wait_for_line(killed, 'step 5/8')
  killed.send_signal(signal.SIGKILL)
  killed.wait(timeout=60)
  assert killed.returncode == -signal.SIGKILL
  assert not os.path.exists(tmp_path / 'checkpoints' / '8')

  resumed = _start(tmp_path, RESUME)
  output = resumed.communicate(timeout=240)[0]
  assert resumed.returncode == 0, output[-3000:]
  assert 'resumed from step 4' in output or 'resumed from step 2' in output, output[-3000:]
  # Every step's loss, before and after the kill, equals the uninterrupted run's exactly.
  assert _loss_bits(stand_ins.read_metrics(str(tmp_path))) == _loss_bits(reference)


def test_sigterm_saves_exits_cleanly_and_the_checkpoint_resumes(tmp_path, reference):
  preempted = _start(tmp_path, {**RESUME, 'train.checkpoint_every': 100}, sleep=0.3)
  _wait_for_line(preempted, 'step 3/8')
  preempted.send_signal(signal.SIGTERM)
  output = preempted.communicate(timeout=60)[0]
  assert preempted.returncode == 0, output[-3000:]
  saved = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert len(saved) == 1 and 3 <= saved[0] < 8
  assert f'preempted: saved step {saved[0]}' in output

  metrics = stand_ins.train(tmp_path, RESUME)  # the same run, continued in this process
  assert _loss_bits(metrics) == _loss_bits(reference)


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')  # orbax's failed read
def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tmp_path, capsys):
  overrides = {**RESUME, 'train.steps': 4}
  stand_ins.train(tmp_path, overrides)
  state_dir = tmp_path / 'checkpoints' / '4' / 'state'
  for root, _, files in os.walk(state_dir):
    for name in files:
      if name != '_METADATA':
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'\0garbage')
  capsys.readouterr()
  stand_ins.train(tmp_path, {**overrides, 'train.steps': 6})
  captured = capsys.readouterr()
  assert 'checkpoints/4 cannot be restored' in captured.err
  assert 'resumed from step 2' in captured.out
  assert any(name.startswith('4-') for name in os.listdir(tmp_path / 'checkpoints_corrupt'))
  assert {4, 6} <= set(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())


def test_incompatible_config_is_one_line_before_compiling(tmp_path):
  overrides = {**RESUME, 'train.steps': 2}
  stand_ins.train(tmp_path, overrides)
  with pytest.raises(errors.ConfigError) as err:
    stand_ins.train(tmp_path, {**overrides, 'train.steps': 4, 'model.d_ff': 128})
  message = str(err.value)
  assert message.startswith('config.model.d_ff=128 is invalid: expected 64 as in the checkpoint')
  assert '\n' not in message

  # A change the config does not show (here: frozen leaves, so another optimizer state).
  def frozen_components(config):
    components = stand_ins.components_fn()(config)
    components.param_labels = lambda params: jax.tree.map(lambda _: 'freeze', params)
    return components

  with pytest.raises(errors.UserError, match=r'does not fit this config: state/opt_state'):
    train.run(stand_ins.tiny_config({**overrides, 'train.steps': 4}), str(tmp_path),
              frozen_components)
  assert sorted(stand_ins.read_metrics(str(tmp_path))) == [1, 2]  # nothing trained after


def test_pmap_checkpoints_save_one_replica_without_host_copies_and_resume_bit_exactly(tmp_path):
  pmap = {'train.steps': 4, 'train.checkpoint_every': 2, 'train.eval_steps': 0,
          'parallel.mode': 'pmap'}
  whole = stand_ins.train(tmp_path / 'whole', pmap)
  stand_ins.train(tmp_path / 'split', {**pmap, 'train.steps': 2})
  assert _loss_bits(stand_ins.train(tmp_path / 'split', pmap)) == _loss_bits(whole)

  # The checkpoint form: one copy on one device (per process), made on the devices.
  config = stand_ins.tiny_config(pmap)
  par = parallel.make(config)
  spec = train.make_state_spec(config, stand_ins.components_fn()(config), jax.random.PRNGKey(0))
  state = par.init_state(spec.init_state, jax.random.PRNGKey(0))
  with jax.transfer_guard('disallow'):  # no device <-> host copy either way
    global_state = par.to_global(state)
    back = par.from_global(global_state)
  for leaf in jax.tree.leaves(global_state):
    assert len(leaf.sharding.device_set) == 1 and leaf.sharding.is_fully_replicated
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(back)):
    assert b.sharding == a.sharding
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_keeps_last_n_best_and_final(tmp_path):
  config = stand_ins.tiny_config({'train.keep_checkpoints': 2, 'train.steps': 10,
                                  'train.keep_best_by': 'loss'})
  ckpt = checkpoint.Checkpointer(str(tmp_path), config)
  eval_loss = {2: 1.0, 4: 3.0, 6: 2.0}
  for step in (1, 2, 3, 4, 5, 6, 7, 10, 11, 12):
    state = {'w': jnp.full((3,), float(step)), 'step': jnp.asarray(step)}
    metrics = {'loss': eval_loss[step], 'accuracy': 0.0} if step in eval_loss else None
    ckpt.save(step, state, {'index': step}, config, metrics=metrics)
    if step == 7:
      ckpt.wait()
      assert ckpt.manager.all_steps() == [2, 6, 7]  # best (2) and the last two
  ckpt.wait()
  assert ckpt.manager.all_steps() == [2, 10, 11, 12]  # + the final step (train.steps=10)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  step, restored, data_state = ckpt.restore_latest(abstract)
  assert step == 12 and data_state == {'index': 12}
  np.testing.assert_array_equal(restored['w'], 12.0)
  ckpt.close()
