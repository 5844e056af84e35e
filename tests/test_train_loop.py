"""The loop end to end on stand-ins: learning, NaN guard, TensorBoard, eval, profile, FLOPs."""
import glob
import math
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import stand_ins
from ptlm_jax import config_lib, flops
from ptlm_jax.training import train

BASE = {'parallel.mode': 'pmap', 'parallel.num_devices': 2}


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
  """One run with evaluation, checkpoints and a profiler trace; its workdir and result."""
  workdir = tmp_path_factory.mktemp('full')
  result = train.run(stand_ins.tiny_config({
      **BASE, 'train.steps': 12, 'train.log_every': 3, 'train.eval_every': 6, 'optim.lr': 3e-2,
      'train.profile_steps': '4:6'}), str(workdir), stand_ins.components_fn())
  return workdir, result


def test_loss_falls(full_run):
  workdir, result = full_run
  metrics = stand_ins.read_metrics(str(workdir))
  assert sorted(metrics) == [3, 6, 9, 12]
  assert metrics[12]['loss'] < metrics[3]['loss'] - 0.5  # counting documents are learnable
  evals = stand_ins.read_metrics(str(workdir), 'eval/')
  assert sorted(evals) == [6, 12] and evals[12]['loss'] < evals[6]['loss']
  assert result['eval_loss'] == evals[12]['loss']


def test_eval_scalars_are_consistent(full_run):
  evals = stand_ins.read_metrics(str(full_run[0]), 'eval/')
  for values in evals.values():
    assert values['perplexity'] == pytest.approx(math.exp(values['loss']), rel=1e-9)
    assert 0.0 <= values['accuracy'] <= 1.0
    assert values['tokens'] > 0


def test_tensorboard_events_hold_the_scalars(full_run):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  workdir = full_run[0]
  events = glob.glob(str(workdir / 'events.out.tfevents.*'))
  assert events
  found = {}
  for path in events:
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == 'scalars':
          found[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  jsonl = stand_ins.read_metrics(str(workdir), '')
  for step, values in jsonl.items():
    for tag in ('train/loss', 'train/lr', 'train/tokens_per_s', 'eval/loss', 'eval/accuracy'):
      if tag in values:
        assert found[(tag, step)] == pytest.approx(values[tag], rel=1e-6), (tag, step)
  assert ('train/loss', 12) in found and ('eval/perplexity', 12) in found


def test_profiler_trace_is_written(full_run):
  assert glob.glob(str(full_run[0] / 'profile' / '**' / '*.xplane.pb'), recursive=True)


def _restore_params(workdir, step):
  return ocp.StandardCheckpointer().restore(os.path.join(workdir, 'checkpoints', str(step), 'state'))['params']


def test_nan_stop_names_the_step_and_saves_nothing_after(tmp_path):
  config = stand_ins.tiny_config({**BASE, 'train.steps': 6, 'train.checkpoint_every': 1,
                                  'train.eval_steps': 0})
  with pytest.raises(train.TrainingDiverged) as err:
    train.run(config, str(tmp_path), stand_ins.components_fn(poison_at=(2,)))
  message = str(err.value)
  assert message.startswith('non-finite loss at step 3 ') and '\n' not in message
  assert 'no checkpoint after step 2' in message
  saved = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert saved == [1, 2]


def _schedule_counts(workdir, step):
  """The optax counts of a checkpoint: (Adam's, the schedule's {'count'}-only state's)."""
  state = ocp.StandardCheckpointer().restore(os.path.join(workdir, 'checkpoints', str(step),
                                                          'state'))
  found = {'adam': [], 'schedule': []}

  def walk(node):
    if isinstance(node, dict):
      if set(node) == {'count'}:
        found['schedule'].append(int(node['count']))
      elif 'count' in node and 'mu' in node:
        found['adam'].append(int(node['count']))
      for v in node.values():
        walk(v)
    elif isinstance(node, (list, tuple)):
      for v in node:
        walk(v)

  walk(state['opt_state'])
  return found


def test_nan_skip_keeps_the_state_and_goes_on(tmp_path):
  # 5 steps (warm-up 2, linear decay to 0 at step 5): step 4 still has a learning rate > 0.
  config = stand_ins.tiny_config({**BASE, 'train.steps': 5, 'train.checkpoint_every': 1,
                                  'train.eval_steps': 0, 'train.nan_policy': 'skip',
                                  'train.keep_checkpoints': 10})
  train.run(config, str(tmp_path), stand_ins.components_fn(poison_at=(2,)))
  metrics = stand_ins.read_metrics(str(tmp_path))
  assert [metrics[s]['skipped'] for s in (1, 2, 3, 4)] == [0, 0, 1, 0]
  assert all(np.isfinite(metrics[s]['loss']) for s in (1, 2, 4))
  before, after, later = (_restore_params(str(tmp_path), s) for s in (2, 3, 4))
  jax.tree.map(np.testing.assert_array_equal, after, before)  # step 3 changed nothing
  assert not np.array_equal(later['mlp_in']['kernel'], after['mlp_in']['kernel'])
  # The schedule's count follows the step through the skip (so the learning rate of step n
  # is schedule(n - 1), as reported); Adam's own count holds the 3 real updates.
  assert _schedule_counts(str(tmp_path), 4) == {'adam': [3], 'schedule': [4]}
  assert _schedule_counts(str(tmp_path), 2) == {'adam': [2], 'schedule': [2]}



def test_reused_compiled_steps_train_exactly_as_fresh_ones(tmp_path):
  """Runs that differ only in seeds share one step inside reuse_compiled_steps, and the
  numbers are those of runs that compile their own; another shape gets its own step."""
  components_fn = stand_ins.components_fn()
  config = lambda seed, **kw: stand_ins.tiny_config({**BASE, 'train.steps': 4, 'train.seed': seed,
                                                     'data.shuffle_seed': seed, **kw})
  fresh = [train.run(config(seed), str(tmp_path / f'fresh{seed}'), components_fn)
           for seed in (0, 1)]
  with train.reuse_compiled_steps():
    shared = [train.run(config(seed), str(tmp_path / f'shared{seed}'), components_fn)
              for seed in (0, 1)]
    assert len(train._REUSED_STEPS) == 1  # pylint: disable=protected-access
    train.run(config(0, **{'optim.lr': 3e-2}), str(tmp_path / 'other'), components_fn)
    assert len(train._REUSED_STEPS) == 2  # pylint: disable=protected-access
  assert train._REUSED_STEPS is None  # pylint: disable=protected-access
  for a, b in zip(fresh, shared):
    assert a['train_loss'] == b['train_loss'] and a['eval_loss'] == b['eval_loss']
  assert fresh[0]['train_loss'] != fresh[1]['train_loss']  # the seeds did differ


def test_bfloat16_compute_keeps_float32_master_weights(tmp_path):
  config = stand_ins.tiny_config({**BASE, 'train.steps': 2, 'train.eval_steps': 0,
                                  'model.dtype': 'bfloat16'})
  train.run(config, str(tmp_path), stand_ins.components_fn())
  losses = [m['loss'] for m in stand_ins.read_metrics(str(tmp_path)).values()]
  assert all(abs(loss - math.log(256)) < 0.3 for loss in losses)  # ~uniform over 256 ids
  params = _restore_params(str(tmp_path), 2)
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype('float32')}


# ---------------------------------------------------------------------------
# FLOP accounting against hand-computed values.

def test_flops_decoder_and_encoder_decoder():
  m = config_lib.base_config('gpt', 'tiny').model
  m.d_model, m.num_heads, m.head_dim, m.num_layers, m.vocab_size = 8, 2, 4, 2, 16
  counts = {'params_non_embedding': 1000, 'params_non_embedding_dec': 0}
  # dense 6*1000*(2*4); attention 12*2*8*4*(2*4); head 6*8*16*(2*4).
  assert flops.flops_per_step(m, counts, batch=2, length=4) == {
      'model': 48000 + 6144, 'head': 6144}
  m.family, m.num_decoder_layers = 't5', 2
  counts = {'params_non_embedding': 1000, 'params_non_embedding_dec': 600}
  # xkv = 2*8*8*2 = 256; dense 6*((400+256)*2*4 + (600-256)*2*3) = 6*(5248+2064);
  # attention 12*8*(2*4*2*4 + 2*(3*2*3 + 4*2*3)); head 6*8*16*(2*3).
  assert flops.flops_per_step(m, counts, batch=2, length=4, target_length=3) == {
      'model': 6 * (5248 + 2064) + 12 * 8 * (64 + 2 * (18 + 24)), 'head': 4608}


def test_count_params_splits_embeddings_by_logical_axes():
  config = stand_ins.tiny_config()
  spec = train.make_state_spec(config, stand_ins.components_fn()(config), jax.random.PRNGKey(0))
  counts = flops.count_params(spec.boxed_params)
  m = config.model
  assert counts['params_embedding'] == m.vocab_size * m.d_model + m.max_len * m.d_model
  block = (4 * m.d_model * m.num_heads * m.head_dim + 2 * m.d_model * m.d_ff + m.d_ff + m.d_model
           + 3 * 2 * m.d_model)
  assert counts['params_non_embedding'] == block
  assert counts['params_total'] == counts['params_embedding'] + block


def test_peak_table():
  assert flops.peak_flops_per_device('TPU v4') == 275e12
  assert flops.peak_flops_per_device('TPU v5 lite') == 197e12
  assert flops.peak_flops_per_device('NVIDIA H100 80GB HBM3') == 989e12
  assert flops.peak_flops_per_device('cpu') == 0.0
  assert flops.peak_flops_per_device('cpu', override=1e11) == 1e11
