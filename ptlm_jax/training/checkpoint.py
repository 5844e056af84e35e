"""Checkpoints in `<workdir>/checkpoints` (orbax-checkpoint), resume and preemption.

  ckpt = checkpoint.Checkpointer(workdir, config)
  ckpt.check_compatible(config, global_abstract_state)  # before compiling or writing anything
  restored = ckpt.restore_latest(global_abstract_state, config)  # None, or (step, state, data)
  ckpt.save(step, global_state, train_iter.get_state(), config, metrics={'loss': ...})
  ckpt.check()                                           # every step: a failed save stops here
  ckpt.close()                                           # waits for async saves

Each step directory holds three items: `state` (the train state: step, params,
optimizer state; sharded arrays written collectively by every process), `data` (each
process's input-iterator state, `process_<i>.json`) and `config` (the config as JSON).
An adapter-only checkpoint (a PEFT run from `init.source`: `state` holds only the
trainable and new params) has a fourth, `peft`: the pointer to its base (`{"source":
path, "source_step": step}`), which `pretrained.from_pretrained` follows.
Saves are asynchronous: the arrays are copied off the devices, then written in the
background while training goes on; orbax renames a step directory into place only
once it is complete, so a killed save leaves no step behind.  A save that fails (disk
full, quota, permission) raises `CheckpointWriteError` at the next `check()` or save:
one line naming the step, its path and the OS error; its temporary folder is removed
and the earlier steps are untouched (orbax deletes old steps only after a save finishes).

Kept: the last `train.keep_checkpoints`, the best by the eval metric
`train.keep_best_by` (a checkpoint is ranked only when an evaluation ran at its step),
and the final step (`train.steps`) always.

Resume: the latest step that restores is used, and the loop says which.  A step that
any process fails to read (any file missing or corrupt: the state's arrays or metadata,
`data/process_<i>.json`, the config) is moved whole to `<workdir>/checkpoints_corrupt/`
with a one-line warning, and the previous step is tried.  `check_compatible` compares the
saved config's model shape and optimizer, then every array's shape, with this run's and
raises a one-line `ConfigError` on a difference; `restore_latest` checks each step it
tries the same way.

Preemption (`PreemptionWatch`): one process alone installs a SIGTERM handler that sets
a flag; the loop checks it after every step, saves and exits cleanly.  With several
processes, SIGTERM may reach them at different steps, so the loop asks
`multihost_utils.reached_preemption_sync_point(step)` instead: jax's preemption service
(started by `jax.distributed.initialize`, listening for SIGTERM) agrees on one step for
every process.  (That call is always False without jax.distributed, hence the plain
handler for one process, e.g. a CPU or single-GPU job.)  From then on the save has
`train.preemption_timeout` seconds; past that the process prints one line and exits 2.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ptlm_jax import config_lib, errors

# Model fields a run may change on resume; every other `model` field fixes array shapes.
_FREE_MODEL_FIELDS = ('dropout_rate', 'attention_dropout_rate', 'dtype', 'remat',
                      'attention_impl', 'layer_norm_eps', 'relative_max_distance')


def _from_orbax(error: BaseException | None) -> bool:
  """Whether `error` (or an exception in its cause chain) was raised inside orbax."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    tb = error.__traceback__
    while tb is not None:
      if f'{os.sep}orbax{os.sep}' in tb.tb_frame.f_code.co_filename:
        return True
      tb = tb.tb_next
    error = error.__cause__ or error.__context__
  return False


class _OrbaxTracebacks(logging.Filter):
  """Drops the tracebacks that orbax's and clu's background threads log for a failed
  write or read, and asyncio's 'exception was never retrieved' for orbax's abandoned
  writes: the loop reports each failure as one line (CheckpointWriteError, a failed
  metrics write, or the warning that sets a step aside)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if not record.exc_info:
      return True
    if any(f'{os.sep}{name}{os.sep}' in record.pathname for name in ('orbax', 'clu')):
      return False
    error = record.exc_info[1]
    return not (record.name == 'asyncio' and (_from_orbax(error) or _from_tensorstore(error)))


def _from_tensorstore(error: BaseException | None) -> bool:
  """Whether `error` is tensorstore's, as orbax's reads and writes raise them: a future set
  from C++ has no Python frames to tell, but its message names the tensorstore spec."""
  return error is not None and ('tensorstore_spec' in str(error) or 'OCDBT' in str(error))


def _quiet_orbax_tracebacks() -> None:
  for name in ('absl', 'asyncio'):
    logger = logging.getLogger(name)
    if not any(isinstance(f, _OrbaxTracebacks) for f in logger.filters):
      logger.addFilter(_OrbaxTracebacks())


def _orbax_leftover(unraisable) -> bool:
  """Whether an unraisable exception is debris of an orbax read or write that already
  failed: tensorstore completing a future once orbax's event loop has closed ('Event loop
  is closed'), or one of orbax's coroutines raising as it is closed unfinished."""
  error = unraisable.exc_value
  if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
    return True
  code = getattr(unraisable.object, 'cr_code', None)
  in_orbax = code is not None and f'{os.sep}orbax{os.sep}' in code.co_filename
  return in_orbax or _from_orbax(error) or _from_tensorstore(error)


def _ignore_orbax_leftovers() -> None:
  """Keeps the debris of a failed orbax read or write (see `_orbax_leftover`) from being
  printed as tracebacks, which Python does where no one can catch them.  The failure
  itself was already reported as one line."""
  previous = sys.unraisablehook
  if getattr(previous, 'ptlm_ignores_orbax_leftovers', False):
    return

  def hook(unraisable):
    if not _orbax_leftover(unraisable):
      previous(unraisable)
  hook.ptlm_ignores_orbax_leftovers = True
  sys.unraisablehook = hook


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
    written = sorted(int(m.group(1)) for p in directory.iterdir()
                     if (m := re.fullmatch(r'process_(\d+)\.json', p.name)))
    states = [json.loads((directory / f'process_{i}.json').read_text()) for i in written]
    if states and all('lanes' in s for s in states):
      # The packed pipeline's cursors are per row of the global batch, not per process:
      # every process gets all of them, so any process count can resume.  A missing or
      # partial file leaves rows without a cursor: a damaged step, set aside.
      lanes = {k: v for s in states for k, v in s['lanes'].items()}
      if len(lanes) != states[0].get('global_batch', len(lanes)):
        raise FileNotFoundError(f'{directory} lacks the input cursors of '
                                f'{states[0]["global_batch"] - len(lanes)} rows')
      return dict(states[0], lanes=lanes)
    # A complete set of files from another process count is the user's mistake; anything
    # else missing is a damaged step, set aside like any other unreadable file.
    if written and written == list(range(len(written))) and len(written) != jax.process_count():
      raise errors.UserError(
          f'{directory} was written by {len(written)} process(es) and this run has '
          f'{jax.process_count()}: resume with as many processes')
    if not path.exists():
      raise FileNotFoundError(f'{path} is missing')
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


class CheckpointWriteError(errors.UserError):
  """A checkpoint could not be written (disk full, permission, quota): the run stops there."""


# OS errors a write can meet that the user can fix; found by name in messages of libraries
# that do not raise an OSError (tensorstore, TensorFlow's summary writer).
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO)


def os_failure(error: BaseException) -> str | None:
  """'No space left on device (errno 28)' when an OS error caused `error`, else None.

  Looks through the cause chain for an OSError, tensorstore's [os_error_code='28'] or the
  text of a write errno.
  """
  seen, cause = set(), error
  while cause is not None and id(cause) not in seen:
    if isinstance(cause, OSError) and cause.errno:
      return f'{cause.strerror or os.strerror(cause.errno)} (errno {cause.errno})'
    text = str(cause)
    if (code := re.search(r"os_error_code='?(\d+)", text)) and int(code.group(1)):
      return f'{os.strerror(int(code.group(1)))} (errno {code.group(1)})'
    for number in _WRITE_ERRNOS:
      if os.strerror(number) in text:
        return f'{os.strerror(number)} (errno {number})'
    seen.add(id(cause))
    cause = cause.__cause__ or cause.__context__
  return None


def _os_reason(error: BaseException) -> str:
  return os_failure(error) or f'{type(error).__name__}: {_first_line(error)}'


def _first_line(error: BaseException) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


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
    _quiet_orbax_tracebacks()
    _ignore_orbax_leftovers()
    self.manager = self._open(options)
    self._pending: int | None = None  # the step whose asynchronous save may still fail

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
    Raises CheckpointWriteError if the previous save failed, or this one fails at once.
    """
    if step in self.manager.all_steps():
      return  # e.g. the final step of a run that resumed at its end
    self.wait()  # orbax waits for the previous save anyway; its failure is its own step's
    items = dict(state=ocp.args.StandardSave(state), data=ProcessStateSave(data_state),
                 config=ocp.args.JsonSave(json.loads(config.to_json())))
    if peft_info is not None:
      items['peft'] = ocp.args.JsonSave(peft_info)
    args = ocp.args.Composite(**items)
    self._pending = step
    try:
      self.manager.save(step, args=args, metrics=metrics, force=True)
    except Exception as e:  # pylint: disable=broad-except  (OSError, or orbax's wrapper of one)
      self._write_failed(e)

  def check(self) -> None:
    """CheckpointWriteError if the save in flight has failed; never waits (call every step)."""
    if self._pending is not None and not self.manager.is_saving_in_progress():
      self.wait()

  def wait(self) -> None:
    """Waits for the save in flight; CheckpointWriteError if it failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      if self._pending is None:
        raise
      self._write_failed(e)
    self._pending = None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()  # after a failure orbax raises it once only: this one is clean

  def _write_failed(self, error: Exception) -> None:
    """Removes the step's temporary folder and raises the one-line CheckpointWriteError."""
    step, self._pending = self._pending, None
    if jax.process_index() == 0:
      for name in os.listdir(self.directory):
        if name.startswith(f'{step}.orbax-checkpoint-tmp'):
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    kept = steps(os.path.dirname(self.directory))
    intact = f'step {kept[-1]} is the latest intact checkpoint' if kept else 'none was saved'
    raise CheckpointWriteError(
        f'saving the checkpoint of step {step} to {self.directory}/{step} failed: '
        f'{_os_reason(error)}. The run stopped; {intact} (free space or fix the permissions, '
        'then rerun the same command to resume)') from None

  # -- resuming ------------------------------------------------------------
  def check_compatible(self, config, abstract_state) -> None:
    """ConfigError if the newest readable checkpoint's model or state shapes differ from
    this run's.  Steps whose config or metadata cannot be read are set aside first."""
    while (step := self.latest_step()) is not None:
      error = None
      try:
        self._check_step(step, config, abstract_state)
      except Exception as e:  # pylint: disable=broad-except  (a UserError, or unreadable)
        error = e
      if not self._agreed_unreadable(step, error):
        return

  def _check_step(self, step: int, config, abstract_state) -> None:
    """Reads the step's config and state metadata (any failure: unreadable) and compares."""
    where = f'{self.directory}/{step}'
    saved = self.manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']
    current = json.loads(config.to_json())
    fields = [('model', 'family')] + [('model', k) for k in current['model']
                                      if k not in _FREE_MODEL_FIELDS + ('family',)]
    fields.append(('optim', 'optimizer'))
    for group, name in fields:
      if name in saved.get(group, {}) and saved[group][name] != current[group][name]:
        raise errors.ConfigError(
            f'{group}.{name}', current[group][name],
            f'{saved[group][name]!r} as in the checkpoint {where} (resuming needs the same model '
            'and optimizer; start a new --workdir)')
    metadata = self.manager.item_metadata(step)['state']
    if metadata is None:
      raise FileNotFoundError(f'{where}/state has no metadata')
    saved_shapes, shapes = _flat_shapes(metadata), _flat_shapes(abstract_state)
    for path in sorted(set(saved_shapes) | set(shapes)):
      if saved_shapes.get(path) != shapes.get(path):
        raise errors.UserError(
            f'the checkpoint {where} does not fit this config: state/{path} has shape '
            f'{saved_shapes.get(path, "absent")} there and {shapes.get(path, "absent")} here '
            '(start a new --workdir)')

  def restore_latest(self, abstract_state, config=None) -> tuple[int, Any, dict] | None:
    """(step, state, data_state) from the newest readable step, or None for a fresh run.

    With `config`, each step tried is first checked as `check_compatible` does.  Every
    process must read a step for it to be used: a step unreadable on any is set aside on all.
    """
    while (step := self.latest_step()) is not None:
      error, restored = None, None
      try:
        if config is not None:
          self._check_step(step, config, abstract_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ProcessStateRestore()))
      except Exception as e:  # pylint: disable=broad-except  (any unreadable file)
        error = e
      if not self._agreed_unreadable(step, error):
        return step, restored['state'], restored['data']
    return None

  def _agreed_unreadable(self, step: int, error: Exception | None) -> bool:
    """Whether every process may use `step` (False), or it was set aside (True); raises
    this process's UserError, or names another's.  Every process decides alike."""
    outcome = 0 if error is None else 2 if isinstance(error, errors.UserError) else 1
    worst = _agree_max(outcome)
    if worst == 2:
      raise (error if outcome == 2 else errors.UserError(
          f'another process cannot resume from {self.directory}/{step} (see its error)'))
    if worst == 1:
      self._set_aside(step, error)
    return worst == 1

  def _set_aside(self, step: int, error: Exception | None) -> None:
    reason = (f'{type(error).__name__}: {_first_line(error)}' if error is not None
              else 'unreadable on another process')
    _ignore_orbax_leftovers()
    target = os.path.join(os.path.dirname(self.directory), 'checkpoints_corrupt',
                          f'{step}-{int(time.time())}')
    _warn(f'checkpoint {self.directory}/{step} cannot be restored ({reason}); moved to '
          f'{target}, trying the previous one')
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    multihost_utils.sync_global_devices(f'checkpoint_set_aside_{step}')
    self.manager.reload()


def _agree_max(value: int) -> int:
  """The largest of every process's `value` (the value itself with one process)."""
  if jax.process_count() == 1:
    return value
  return int(np.max(multihost_utils.process_allgather(np.int32(value))))


# ---------------------------------------------------------------------------
# Preemption.

class PreemptionWatch:
  """Says when to save and stop after a SIGTERM (see the module docstring).

  Once it has said so, the save and the exit have `timeout` seconds: past that (a save
  that waits on a dead process or a hung filesystem), the process prints one line and
  exits with status 2, keeping the checkpoints already finished.
  """

  def __init__(self, timeout: float = 300):
    self.signalled = False
    self.timeout = timeout
    self._deadline = None
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
      reached = multihost_utils.reached_preemption_sync_point(step)
    else:
      reached = self.signalled
    if reached and self._deadline is None:
      self._deadline = threading.Timer(self.timeout, self._give_up, args=(step,))
      self._deadline.daemon = True
      self._deadline.start()
    return reached

  def _give_up(self, step: int) -> None:
    print(f'error: preempted at step {step}, the checkpoint save did not finish within '
          f'train.preemption_timeout={self.timeout:g}s; exiting without it (the checkpoints '
          'finished before are kept)', file=sys.stderr, flush=True)
    os._exit(2)  # pylint: disable=protected-access  (the main thread may be stuck in C++)

  def close(self) -> None:
    if self._deadline is not None:
      self._deadline.cancel()
      self._deadline = None
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
