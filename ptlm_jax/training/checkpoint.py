"""Checkpoints in `<workdir>/checkpoints` (orbax-checkpoint), resume and preemption.

  ckpt = checkpoint.Checkpointer(workdir, config)
  ckpt.check_compatible(config, global_abstract_state)  # before compiling anything
  restored = ckpt.restore_latest(global_abstract_state) # None, or (step, state, data_state)
  ckpt.save(step, global_state, train_iter.get_state(), config, metrics={'loss': ...})
  ckpt.close()                                           # waits for async saves

Each step directory holds three items: `state` (the train state: step, params,
optimizer state; sharded arrays written collectively by every process), `data` (each
process's input-iterator state, `process_<i>.json`) and `config` (the config as JSON).
An adapter-only checkpoint (a PEFT run from `init.source`: `state` holds only the
trainable and new params) has a fourth, `peft`: the pointer to its base (`{"source":
path, "source_step": step}`), which `pretrained.from_pretrained` follows.
Saves are asynchronous: the arrays are copied off the devices, then written in the
background while training goes on; orbax renames a step directory into place only
once it is complete, so a killed save leaves no step behind.

Kept: the last `train.keep_checkpoints`, the best by the eval metric
`train.keep_best_by` (a checkpoint is ranked only when an evaluation ran at its step),
and the final step (`train.steps`) always.

Resume: the latest step that restores is used, and the loop says which.  A step that
fails to restore (a corrupt or truncated file) is moved to `<workdir>/checkpoints_corrupt/`
with a warning, and the previous step is tried.  `check_compatible` compares the saved
config's model shape and optimizer, then every array's shape, with this run's and
raises a one-line `ConfigError` on a difference.

Preemption (`PreemptionWatch`): one process alone installs a SIGTERM handler that sets
a flag; the loop checks it after every step, saves and exits cleanly.  With several
processes, SIGTERM may reach them at different steps, so the loop asks
`multihost_utils.reached_preemption_sync_point(step)` instead: jax's preemption service
(started by `jax.distributed.initialize`, listening for SIGTERM) agrees on one step for
every process.  (That call is always False without jax.distributed, hence the plain
handler for one process, e.g. a CPU or single-GPU job.)
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import sys
import time
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ptlm_jax import config_lib, errors

# Model fields a run may change on resume; every other `model` field fixes array shapes.
_FREE_MODEL_FIELDS = ('dropout_rate', 'attention_dropout_rate', 'dtype', 'remat',
                      'attention_impl', 'layer_norm_eps', 'relative_max_distance')


def _warn(message: str) -> None:
  if jax.process_index() == 0:
    print(f'warning: {message}', file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Per-process input-iterator state: a small orbax handler every process writes to.

class ProcessStateHandler(ocp.CheckpointHandler):
  """Saves one JSON file per process (the input pipeline reads a different shard in each)."""

  def _path(self, directory):
    return directory / f'process_{jax.process_index()}.json'

  def save(self, directory, args: 'ProcessStateSave'):
    self._path(directory).write_text(json.dumps(args.state))

  def restore(self, directory, args: 'ProcessStateRestore | None' = None):
    path = self._path(directory)
    states = [json.loads(p.read_text()) for p in sorted(directory.glob('process_*.json'))]
    if states and all('lanes' in s for s in states):
      # The packed pipeline's cursors are per row of the global batch, not per process:
      # every process gets all of them, so any process count can resume.
      return dict(states[0], lanes={k: v for s in states for k, v in s['lanes'].items()})
    if not path.exists():
      raise errors.UserError(
          f'{path} is missing: the checkpoint was written by a different number of processes '
          f'(this run has {jax.process_count()})')
    return json.loads(path.read_text())


@ocp.args.register_with_handler(ProcessStateHandler, for_save=True)
@dataclasses.dataclass
class ProcessStateSave(ocp.args.CheckpointArgs):
  state: dict


@ocp.args.register_with_handler(ProcessStateHandler, for_restore=True)
@dataclasses.dataclass
class ProcessStateRestore(ocp.args.CheckpointArgs):
  pass


# ---------------------------------------------------------------------------
# The manager.

def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
  """'params/Dense_0/kernel' -> shape, for state trees and orbax metadata trees alike."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    keys = [str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path]
    out['/'.join(keys)] = tuple(getattr(leaf, 'shape', ()))
  return out


class Checkpointer:
  """An orbax CheckpointManager in `<workdir>/checkpoints` with this project's policies."""

  def __init__(self, workdir: str, config):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINTS)
    t = config.train
    cm = ocp.checkpoint_managers
    policies = [cm.LatestN(t.keep_checkpoints), cm.CustomSteps([t.steps])]
    if t.keep_best_by:
      lower_is_better = t.keep_best_by == 'loss'
      policies.append(cm.BestN(get_metric_fn=lambda m: m[t.keep_best_by], reverse=lower_is_better,
                               n=1, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=cm.AnyPreservationPolicy(policies),
        enable_async_checkpointing=True, cleanup_tmp_directories=True, create=True)
    self.manager = self._open(options)

  def _open(self, options):
    handlers = {'state': ocp.StandardCheckpointHandler(), 'data': ProcessStateHandler(),
                'config': ocp.JsonCheckpointHandler(), PEFT_ITEM: ocp.JsonCheckpointHandler()}
    self._options = options
    return ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  # -- saving --------------------------------------------------------------
  def save(self, step: int, state, data_state: dict, config, metrics: dict | None = None,
           peft_info: dict | None = None) -> None:
    """Starts an asynchronous save of `state` (global form) at `step`; every process calls it.

    peft_info: the base pointer of an adapter-only state (written as the `peft` item).
    """
    if step in self.manager.all_steps():
      return  # e.g. the final step of a run that resumed at its end
    items = dict(state=ocp.args.StandardSave(state), data=ProcessStateSave(data_state),
                 config=ocp.args.JsonSave(json.loads(config.to_json())))
    if peft_info is not None:
      items['peft'] = ocp.args.JsonSave(peft_info)
    args = ocp.args.Composite(**items)
    self.manager.save(step, args=args, metrics=metrics, force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  # -- resuming ------------------------------------------------------------
  def check_compatible(self, config, abstract_state) -> None:
    """ConfigError if the latest checkpoint's model or state shapes differ from this run's."""
    step = self.latest_step()
    if step is None:
      return
    where = f'{self.directory}/{step}'
    try:
      saved = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']
    except Exception:  # pylint: disable=broad-except
      return  # unreadable: restore_latest reports it and falls back
    current = json.loads(config.to_json())
    fields = [('model', k) for k in current['model'] if k not in _FREE_MODEL_FIELDS]
    fields.append(('optim', 'optimizer'))
    for group, name in fields:
      if name in saved.get(group, {}) and saved[group][name] != current[group][name]:
        raise errors.ConfigError(
            f'{group}.{name}', current[group][name],
            f'{saved[group][name]!r} as in the checkpoint {where} (resuming needs the same model '
            'and optimizer; start a new --workdir)')
    try:
      metadata = self.manager.item_metadata(step)['state']
    except Exception:  # pylint: disable=broad-except
      return
    if metadata is None:
      return
    saved_shapes, shapes = _flat_shapes(metadata), _flat_shapes(abstract_state)
    for path in sorted(set(saved_shapes) | set(shapes)):
      if saved_shapes.get(path) != shapes.get(path):
        raise errors.UserError(
            f'the checkpoint {where} does not fit this config: state/{path} has shape '
            f'{saved_shapes.get(path, "absent")} there and {shapes.get(path, "absent")} here '
            '(start a new --workdir)')

  def restore_latest(self, abstract_state) -> tuple[int, Any, dict] | None:
    """(step, state, data_state) from the newest readable step, or None for a fresh run."""
    while (step := self.latest_step()) is not None:
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ProcessStateRestore()))
        return step, restored['state'], restored['data']
      except errors.UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (any unreadable file)
        self._set_aside(step, e)
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    target = os.path.join(os.path.dirname(self.directory), 'checkpoints_corrupt',
                          f'{step}-{int(time.time())}')
    _warn(f'checkpoint {self.directory}/{step} cannot be restored ({type(error).__name__}: '
          f'{first_line}); moved to {target}, trying the previous one')
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    multihost_utils.sync_global_devices(f'checkpoint_set_aside_{step}')
    self.manager.reload()


# ---------------------------------------------------------------------------
# Preemption.

class PreemptionWatch:
  """Says when to save and stop after a SIGTERM (see the module docstring)."""

  def __init__(self):
    self.signalled = False
    self._previous = None
    self._multiprocess = jax.process_count() > 1
    if not self._multiprocess:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
      except ValueError:  # not the main thread (e.g. a notebook worker): no handler
        self._previous = None

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.signalled = True

  def reached(self, step: int) -> bool:
    if self._multiprocess:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.signalled

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


# ---------------------------------------------------------------------------
# Reading a workdir's finished checkpoints without a manager (init.source, export,
# generation): `checkpoints/<step>/{state,data,config,peft}`.

CHECKPOINTS = 'checkpoints'
PEFT_ITEM = 'peft'  # the item with the base pointer of adapter-only checkpoints


def is_workdir(path: str) -> bool:
  return os.path.isdir(os.path.join(os.path.expanduser(path), CHECKPOINTS))


def steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, CHECKPOINTS)
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def latest_step(workdir: str, step: int | None = None) -> int:
  """`step` if the workdir has it, else its latest step; UserError when there is none."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  found = steps(workdir)
  if not found:
    raise errors.UserError(f'{workdir}/{CHECKPOINTS} holds no finished checkpoint yet')
  if step is None:
    return found[-1]
  if step not in found:
    raise errors.UserError(f'{workdir}/{CHECKPOINTS} has no step {step} (it has {found})')
  return step


def step_dir(workdir: str, step: int | None) -> str:
  workdir = os.path.abspath(os.path.expanduser(workdir))
  return os.path.join(workdir, CHECKPOINTS, str(latest_step(workdir, step)))


def _with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A saved config over the current defaults (fields added since then get their default)."""
  family = saved.get('model', {}).get('family', 'gpt')
  merged = config_lib.base_config(family, 'tiny').to_dict()
  for group, fields in saved.items():
    if isinstance(fields, dict) and isinstance(merged.get(group), dict):
      merged[group].update(fields)
    else:
      merged[group] = fields
  return ml_collections.ConfigDict(merged)


def run_config(path: str, step: int | None = None) -> ml_collections.ConfigDict | None:
  """The full config a training workdir was trained with, or None for other directories."""
  if not is_workdir(path):
    return None
  config_path = os.path.join(step_dir(path, step), 'config', 'metadata')
  if not os.path.exists(config_path):  # orbax's JsonCheckpointHandler file name
    raise errors.UserError(f'{config_path} is missing: not a complete ptlm_jax checkpoint')
  with open(config_path, encoding='utf-8') as f:
    return _with_defaults(json.load(f))


def peft_pointer(workdir: str, step: int | None = None) -> dict | None:
  """The base pointer of an adapter-only checkpoint ({'source', 'source_step'}), else None."""
  path = os.path.join(step_dir(workdir, step), PEFT_ITEM, 'metadata')
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def load_workdir_params(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, Any]:
  """(run config, params) of a training workdir's latest (or given) step, on the host's devices.

  The params are what the checkpoint holds: for an adapter-only checkpoint, only the
  trainable and new ones (see `from_pretrained` for the whole model).
  """
  config = run_config(workdir, step)
  state_dir = os.path.join(step_dir(workdir, step), 'state')
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  try:
    tree = checkpointer.metadata(state_dir).item_metadata.tree
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UserError(f'{state_dir} cannot be read ({type(e).__name__}: '
                               f'{str(e).splitlines()[0][:200]})') from None
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = {'params': jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree['params'])}
  restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), abstract)
  restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
      item=abstract, restore_args=restore_args, partial_restore=True))
  return config, restored['params']


# ---------------------------------------------------------------------------
# Per-example evaluation records beside the checkpoints (Components.eval_records):
# `inference_eval/<split>-<step>.jsonl`, as T5X lays out its inference_eval.

INFERENCE_EVAL = 'inference_eval'


def eval_records_path(workdir: str, split: str, step: int) -> str:
  """Where the evaluation at `step` keeps its per-example records (Components.eval_records)."""
  name = re.sub(r'[^A-Za-z0-9_.-]+', '_', split)  # 'validation[:500]' -> 'validation_500_'
  return os.path.join(workdir, INFERENCE_EVAL, f'{name}-{step}.jsonl')


def write_eval_records(workdir: str, split: str, step: int, records: list[dict]) -> str:
  """Records as JSON lines, written whole or not at all (temporary file, then rename)."""
  path = eval_records_path(workdir, split, step)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
  os.replace(path + '.tmp', path)
  return path


def read_eval_records(workdir: str, split: str, step: int) -> list[dict]:
  """The records `write_eval_records` wrote; UserError when that evaluation wrote none."""
  path = eval_records_path(workdir, split, step)
  if not os.path.exists(path):
    raise errors.UserError(f'{path} does not exist: the run wrote no per-example records of '
                           f'{split!r} at step {step} (a task run evaluates at its last step '
                           'unless train.eval_steps=0)')
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]
