"""Where a run starts: its resolved config, what its checkpoints hold, and its first state.

`train.run` calls these in order:
  config, source, notes = start.resolve_config(config, workdir)   # init.source fields
  workdir = start.prepare_workdir(workdir)                        # made, writable
  with start.WorkdirLock(workdir):                                # one run per workdir
    persist = start.Persistence.of(config, spec, source)          # adapter-only or whole
    state, step = start.initial_state(...)                        # resume | source | scratch

With `init.source` (a pretraining workdir, a model dir or an HF dir) every param that
matches by path and shape is filled from it on a fresh start (pretrained.py).  With a PEFT
method on as well, checkpoints hold only what the source cannot give back (trainable and
new params, their optimizer state) plus a pointer to the source; resuming rebuilds the
rest from the source (`Persistence.adapter_only`).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import fcntl
import json
import math
import os
import socket
import sys
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from ptlm_jax import config_lib, errors
from ptlm_jax.peft import partitions as peft
from ptlm_jax.training import pretrained


def resolve_config(config, workdir: str):
  """(a resolved copy of config, the init.source or None, notes on the fields it fixed).

  Checks the config on this run's devices before anything compiles; the source's
  architecture and tokenizer fields are taken over (pretrained.inherit_fields).
  """
  config_lib.validate(config, num_devices=jax.device_count())
  peft.check_config(config.peft)
  config = copy.deepcopy(config)
  pretrained.pin_resumed_source(config, workdir)
  source = pretrained.load_source(config)
  inherited = pretrained.inherit_fields(config, source) if source else []
  if inherited:
    config_lib.validate(config, num_devices=jax.device_count())
  return config, source, inherited


def refuse_url(workdir: str) -> None:
  """UserError for a URL workdir (gs://...), naming the gcsfuse mount to use instead."""
  if '://' in str(workdir):
    raise errors.UserError(
        f'--workdir={workdir}: a URL is not a workdir; mount the bucket on every host '
        '(gcsfuse --implicit-dirs BUCKET /gcs/BUCKET) and pass the path, e.g. '
        '--workdir=/gcs/BUCKET/runs/NAME')


def prepare_workdir(workdir: str) -> str:
  """The absolute workdir, created if needed; UserError if it cannot be written.

  A URL (gs://...) is refused: the loop writes its lock, metrics, per-example records and
  data state with the local file API, so a bucket must be mounted (gcsfuse) and given as a
  path.  Refused here, before anything compiles, rather than created as './gs:/...'."""
  refuse_url(workdir)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{jax.process_index()}')
    with open(probe, 'w', encoding='utf-8') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise errors.UserError(
        f'--workdir={workdir} is not a writable directory ({e.strerror})') from None
  return workdir


class WorkdirLock:
  """One run per workdir: `<workdir>/.lock`, held with `fcntl.flock` by process 0.

    with start.WorkdirLock(workdir):   # UserError naming the holder if another run has it
      ...

  The lock belongs to an open file, so the OS releases it when its process dies however
  it dies (kill -9 included); the next run takes it over.  The file holds the holder's
  host, pid and start time for the message; it is removed when the run ends.  Every
  process learns process 0's outcome, so a refused multi-host run stops everywhere.
  """
  NAME = '.lock'

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, self.NAME)
    self._fd = None
    refusal = self._acquire() if jax.process_index() == 0 else ''
    if jax.process_count() > 1:
      refused = multihost_utils.broadcast_one_to_all(np.int32(bool(refusal)))
      if int(refused) and not refusal:
        refusal = f'--workdir={workdir} is in use by another run (see process 0)'
    if refusal:
      raise errors.UserError(refusal)

  def _acquire(self) -> str:
    """'' once held, else the refusal."""
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = os.read(fd, 4096).decode('utf-8', 'replace')
        os.close(fd)
        return (f'--workdir={os.path.dirname(self.path)} is in use by another run '
                f'({_holder(holder)}); wait for it to end or choose another --workdir')
      except OSError as e:  # a filesystem without locks: run, unprotected
        os.close(fd)
        print(f'warning: cannot lock {self.path} ({e.strerror}): a second run on this '
              'workdir would not be refused', file=sys.stderr, flush=True)
        return ''
      # The previous holder may have removed the file between our open and flock: then
      # this lock is on a file no one else will open; start over on the current one.
      try:
        same = os.path.samestat(os.fstat(fd), os.stat(self.path))
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    info = {'host': socket.gethostname(), 'pid': os.getpid(),
            'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    self._fd = fd
    return ''

  def release(self) -> None:
    if self._fd is not None:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(self.path)  # while still held: a later opener makes a new file
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def _holder(text: str) -> str:
  try:
    info = json.loads(text)
    return f"host {info['host']}, pid {info['pid']}, since {info['started']}"
  except (ValueError, KeyError, TypeError):
    return 'holder unknown'


@dataclasses.dataclass
class Persistence:
  """What checkpoints hold: the whole state, or (adapter-only) the params `saved` names."""
  match: pretrained.Match | None   # init.source params matched against the model's
  saved: set[str] | None           # '/'-joined param paths a checkpoint holds (None: all)
  peft_info: dict | None           # the source pointer written beside adapter-only checkpoints

  @classmethod
  def of(cls, config, abstract_params, trainable, source) -> 'Persistence':
    match = pretrained.match_params(abstract_params, source) if source else None
    if match is None or config.peft.method == 'none':
      return cls(match, None, None)
    flagged = {k for k, v in peft.flatten(trainable).items() if v}
    return cls(match, flagged | set(match.fresh) | set(match.replaced), source.pointer())

  @property
  def adapter_only(self) -> bool:
    return self.saved is not None

  def view(self, state):
    """The part of a state that checkpoints hold."""
    if self.saved is None:
      return state
    return state.replace(params=peft.select(state.params, self.saved))


def initial_state(par, ckpt, persist: Persistence, global_abstract, init_state: Callable,
                  init_rng, train_iter, reporter, config=None) -> tuple[Any, int]:
  """(state, its step): the latest readable checkpoint if there is one, else a fresh state
  with init.source's matching params placed (the data iterator is set to the checkpoint's).

  config: each step tried is checked against it (`Checkpointer.check_compatible`).
  """
  restored = ckpt.restore_latest(persist.view(global_abstract), config)
  if not restored:
    state = par.init_state(init_state, init_rng)
    if persist.match is not None:
      state = _place_params(state, par, persist.match.copied)
    return state, 0
  step, global_state, data_state = restored
  if persist.adapter_only:  # the base from init.source, then the saved params and optimizer
    state = _place_params(par.init_state(init_state, init_rng), par, persist.match.copied)
    state = _overlay(state, par, global_state)
  else:
    state = par.from_global(global_state)
  train_iter.set_state(data_state)
  reporter.print(f'resumed from step {step} ({ckpt.directory}/{step})')
  return state, step


def _place_params(state, par, host_params: dict[str, np.ndarray]):
  """The state with params replaced by host arrays ('/'-joined paths), in their shardings."""
  if not host_params:
    return state
  global_state = par.to_global(state)
  flat = peft.flatten(global_state.params)
  for path, host in host_params.items():
    old = flat[path]
    host = np.asarray(host, old.dtype)
    flat[path] = jax.make_array_from_callback(old.shape, old.sharding, lambda i, h=host: h[i])
  return par.from_global(global_state.replace(params=peft.unflatten(flat)))


def _overlay(state, par, restored):
  """A fresh state (base params placed) with a restored adapter-only state laid over it."""
  global_state = par.to_global(state)
  return par.from_global(global_state.replace(
      step=restored.step, params=peft.combine(global_state.params, restored.params),
      opt_state=restored.opt_state))


def write_params_report(workdir, config, reporter, abstract_params, labels, inherited,
                        persist: Persistence) -> None:
  """Prints the parameter report and writes it to <workdir>/params_report.json."""
  report = peft.report(abstract_params, labels)
  report['method'] = config.peft.method
  for note in inherited:
    reporter.print(note)
  reporter.print(peft.format_report(report))
  if persist.match is not None:
    report['init'] = persist.match.summary()
    reporter.print(persist.match.describe())
  if persist.saved is not None:
    sizes = peft.flatten(jax.tree.map(lambda x: math.prod(x.shape), abstract_params))
    report['checkpoint_params'] = sum(n for path, n in sizes.items() if path in persist.saved)
    reporter.print(f"checkpoints hold {report['checkpoint_params']:,} of {report['total']:,} "
                   f'parameters (the rest comes from init.source={config.init.source})')
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'params_report.json'), 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=2)
