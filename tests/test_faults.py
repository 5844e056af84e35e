"""Faults lose nothing: failed saves, a second run on a workdir, damaged steps, refused runs.

Each test injects the fault from outside the code under test (a full tmpfs, an OSError
from a handler, another process, damaged files) and checks the promise: one line, the
earlier checkpoints intact, and nothing else written.
"""
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

# A save that failed at once leaves orbax's coroutine for another item unawaited.
pytestmark = pytest.mark.filterwarnings('ignore:coroutine .* was never awaited:RuntimeWarning')

import stand_ins
from ptlm_jax import config_lib, errors
from ptlm_jax.training import checkpoint, parallel, train

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = {'train.steps': 8, 'train.checkpoint_every': 2, 'train.eval_steps': 0,
       'train.keep_checkpoints': 10, 'parallel.mode': 'mesh'}


def _script(*args, script='stand_ins.py'):
  return [sys.executable, os.path.join(HERE, script), *map(str, args)]


def _steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())


def _tmp_folders(workdir) -> list[str]:
  return [os.path.join(root, d) for root, dirs, _ in os.walk(workdir) for d in dirs
          if 'orbax-checkpoint-tmp' in d]


def _losses(workdir) -> dict[int, float]:
  return {s: m['loss'] for s, m in stand_ins.read_metrics(str(workdir)).items()}


# ---------------------------------------------------------------------------
# 1. A failed write stops the run with one line; earlier steps stay; no temporary folder.

FULL_DISK = """
mount -t tmpfs -o size=2m tmpfs "$1" || exit 99
"$2" "$3" "$1/run" "$4"; rc=$?
cp -a "$1/run" "$5/run"; exit $rc
"""


def test_full_disk_stops_the_run_with_one_line_and_keeps_earlier_steps(tmp_path):
  """A real full filesystem: a 2 MB tmpfs (2 checkpoints fit) in a private mount namespace."""
  if shutil.which('unshare') is None:
    pytest.skip('needs unshare(1) to mount a private tmpfs')
  mount_point, out = tmp_path / 'mnt', tmp_path / 'out'
  mount_point.mkdir()
  out.mkdir()
  overrides = {**RUN, 'train.steps': 12}
  proc = subprocess.run(
      ['unshare', '--mount', 'sh', '-c', FULL_DISK, 'sh', mount_point, sys.executable,
       os.path.join(HERE, 'stand_ins.py'), json.dumps(overrides), out],
      capture_output=True, text=True, timeout=300, check=False)
  if proc.returncode == 99 or 'unshare:' in proc.stderr:
    pytest.skip(f'cannot mount a tmpfs here: {proc.stderr.strip()[:200]}')
  workdir = out / 'run'
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr[-3000:]  # one line, none of orbax's tracebacks
  kept = _steps(workdir)
  assert kept and not _tmp_folders(workdir)
  assert lines[0].startswith('error: ') and 'No space left on device (errno 28)' in lines[0]
  # The checkpoint is what fills the disk; the metrics writers may meet it first.
  found = re.match(r'error: saving the checkpoint of step (\d+) to (\S+) failed: ', lines[0])
  if found:
    failed = int(found.group(1))
    assert found.group(2) == f'{mount_point}/run/checkpoints/{failed}'
    assert f'step {kept[-1]} is the latest intact checkpoint' in lines[0]
  else:
    failed = int(re.match(r'error: writing into \S+ failed after step (\d+): ', lines[0]).group(1))
  assert failed not in kept
  logged = _losses(workdir)
  assert max(logged) <= failed + overrides['train.checkpoint_every'] < overrides['train.steps']

  # The latest intact step resumes bit-exactly (here on a disk with room).
  resumed = {s: m['loss'] for s, m in stand_ins.train(workdir, overrides).items()}
  again = {s: v for s, v in resumed.items() if s in logged and s > kept[-1]}
  assert again and all(again[s] == logged[s] for s in again)
  assert max(resumed) == overrides['train.steps']


def test_injected_write_error_stops_at_that_step(tmp_path, monkeypatch):
  """A quota error from inside orbax's save of step 4 (any handler may hit one)."""
  original = checkpoint.ProcessStateHandler.save

  def save(self, directory, args):
    if re.search(r'checkpoints/4\b', str(directory)):
      raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(directory))
    return original(self, directory, args)

  monkeypatch.setattr(checkpoint.ProcessStateHandler, 'save', save)
  with pytest.raises(checkpoint.CheckpointWriteError) as err:
    stand_ins.train(tmp_path, RUN)
  message = str(err.value)
  assert message.startswith(f'saving the checkpoint of step 4 to {tmp_path}/checkpoints/4 failed: '
                            f'Disk quota exceeded (errno {errno.EDQUOT}). The run stopped; '
                            'step 2 is the latest intact checkpoint')
  assert '\n' not in message
  assert _steps(tmp_path) == [2] and not _tmp_folders(tmp_path)
  assert max(_losses(tmp_path)) <= 6  # the next save at the latest
  assert not os.path.exists(tmp_path / '.lock')  # the lock went with the run

  monkeypatch.setattr(checkpoint.ProcessStateHandler, 'save', original)
  stand_ins.train(tmp_path / 'reference', RUN)  # uninterrupted
  reference = _losses(tmp_path / 'reference')
  resumed = stand_ins.train(tmp_path, RUN)
  assert {s: m['loss'] for s, m in resumed.items()} == reference


# ---------------------------------------------------------------------------
# 2. One writer per workdir.

def test_second_run_is_refused_naming_the_holder_and_a_killed_runs_lock_is_taken_over(tmp_path):
  first = subprocess.Popen(_script(tmp_path, json.dumps(RUN), '--sleep', 0.5),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    for line in first.stdout:
      if re.match(r'step +2/', line):
        break
    else:
      raise AssertionError('the first run ended early')
    assert first.poll() is None
    with pytest.raises(errors.UserError) as err:  # this test's process is the second run
      stand_ins.train(tmp_path, RUN)
    message = str(err.value)
    assert message.startswith(f'--workdir={tmp_path} is in use by another run (host '
                              f'{os.uname().nodename}, pid {first.pid}, since ')
    assert '\n' not in message
    assert first.poll() is None  # the holder trains on
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
  finally:
    if first.poll() is None:
      first.kill()
  assert os.path.exists(tmp_path / '.lock')  # left behind by the killed run ...
  metrics = stand_ins.train(tmp_path, RUN)    # ... and taken over
  assert max(metrics) == RUN['train.steps'] and not os.path.exists(tmp_path / '.lock')


# ---------------------------------------------------------------------------
# 3. Any damaged file of the newest step: set aside (not deleted), or it did not matter.

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('trained')
  stand_ins.train(workdir, RUN)  # steps 2, 4, 6, 8
  return workdir


def _restorer(config):
  """restore(workdir) -> (step, state leaves, data state) as a resuming run reads them."""
  par = parallel.make(config)
  with par.context():
    spec = train.make_state_spec(config, stand_ins.components_fn()(config), jax.random.PRNGKey(0))
    par.prepare(spec.abstract_state, spec.param_specs)
    abstract = par.global_abstract(spec.abstract_state)

  def restore(workdir):
    with par.context():
      ckpt = checkpoint.Checkpointer(str(workdir), config)
      try:
        ckpt.check_compatible(config, abstract)
        step, state, data = ckpt.restore_latest(abstract, config)
      finally:
        ckpt.close()
    return step, [np.asarray(x) for x in jax.tree.leaves(state)], data
  return restore


@pytest.mark.filterwarnings('error::pytest.PytestUnraisableExceptionWarning')  # 'Event loop is closed'
def test_every_damaged_file_of_the_newest_step_falls_back_or_restores_exactly(trained, tmp_path,
                                                                              capfd):
  restore = _restorer(stand_ins.tiny_config(RUN))
  _, intact, intact_data = restore(trained)
  step_dir = trained / 'checkpoints' / '8'
  files = sorted(os.path.relpath(os.path.join(root, f), step_dir)
                 for root, _, names in os.walk(step_dir) for f in names)
  assert {'data/process_0.json', 'state/manifest.ocdbt', 'config/metadata'} <= set(files)
  set_aside = []
  capfd.readouterr()
  for damage in ('missing', 'garbage'):
    for name in files:
      workdir = tmp_path / 'w'
      shutil.rmtree(workdir, ignore_errors=True)
      shutil.copytree(trained, workdir)
      path = workdir / 'checkpoints' / '8' / name
      if damage == 'missing':
        path.unlink()
      else:
        path.write_bytes(b'\0garbage')
      step, state, data = restore(workdir)
      err = capfd.readouterr().err
      assert 'Traceback' not in err, (damage, name, err[-2000:])
      if step == 8:  # a file restoring does not need: the state is exactly the saved one
        assert data == intact_data and all(np.array_equal(a, b) for a, b in zip(state, intact))
        assert 'cannot be restored' not in err
        continue
      assert step == 6, (damage, name)
      warnings = [line for line in err.splitlines() if line.startswith('warning: checkpoint')]
      assert len(warnings) == 1 and f'{workdir}/checkpoints/8 cannot be restored' in warnings[0]
      moved = os.listdir(workdir / 'checkpoints_corrupt')
      assert len(moved) == 1 and (workdir / 'checkpoints_corrupt' / moved[0] / name).exists() == (
          damage == 'garbage')  # moved aside whole, not deleted
      set_aside.append((damage, name))
  # The files the issue names are among those that fall back.
  for must in ('data/process_0.json', 'state/manifest.ocdbt', 'config/metadata',
               'state/_METADATA'):
    assert ('missing', must) in set_aside and ('garbage', must) in set_aside, must


def test_damaged_steps_fall_back_in_one_line_each_from_the_command_line(trained, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(trained, workdir)
  (workdir / 'checkpoints' / '8' / 'state' / 'manifest.ocdbt').unlink()
  (workdir / 'checkpoints' / '6' / 'data' / 'process_0.json').unlink()
  proc = subprocess.run(_script(workdir, json.dumps({**RUN, 'train.steps': 10})),
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 2, proc.stderr[-3000:]  # no traceback (nor 'Event loop is closed')
  assert 'checkpoints/8 cannot be restored' in lines[0]
  assert 'checkpoints/6 cannot be restored (FileNotFoundError: ' in lines[1]
  assert 'resumed from step 4' in proc.stdout
  assert _steps(workdir)[-1] == 10
  assert sorted(os.listdir(workdir / 'checkpoints_corrupt'))[0].startswith('6-')


# ---------------------------------------------------------------------------
# 4. A refused run writes nothing into the workdir.

def _snapshot(workdir) -> dict[str, str]:
  out = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _bert_config(overrides):
  """tiny_config's sizes on the bert family's defaults."""
  c, gpt = config_lib.base_config('bert', 'tiny'), stand_ins.tiny_config(overrides)
  for group in ('train', 'parallel'):
    c[group].update(gpt[group].to_dict())
  c.model.update({k: gpt.model[k] for k in ('vocab_size', 'd_model', 'num_heads', 'head_dim',
                                            'd_ff', 'num_layers', 'max_len')})
  c.data.seq_len, c.data.sp_vocab_size = gpt.data.seq_len, gpt.data.sp_vocab_size
  return c


def test_refused_run_writes_nothing_into_the_workdir(trained, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(trained, workdir)
  before = _snapshot(workdir)
  refusals = [(_bert_config({**RUN, 'train.steps': 10}), "config.model.family='bert' is invalid"),
              (stand_ins.tiny_config({**RUN, 'train.steps': 10, 'model.d_model': 64}),
               'config.model.d_model=64 is invalid')]
  for config, words in refusals:
    with pytest.raises(errors.ConfigError) as err:
      train.run(config, str(workdir), stand_ins.components_fn())
    assert str(err.value).startswith(words)
    assert _snapshot(workdir) == before


# ---------------------------------------------------------------------------
# A preemption save that cannot finish gives up within train.preemption_timeout.

def test_preemption_save_that_hangs_gives_up_with_one_line(tmp_path):
  overrides = {**RUN, 'train.steps': 100, 'train.checkpoint_every': 1000,
               'train.preemption_timeout': 3}
  proc = subprocess.Popen(_script('hang-save', tmp_path, json.dumps(overrides), '--sleep', 0.2,
                                  script='fault_injection.py'),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    for line in proc.stdout:
      if re.match(r'step +2/', line):
        break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)  # 3 s deadline; without one it never ends
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 2, err[-3000:]
  lines = err.strip().splitlines()
  assert len(lines) == 1 and re.fullmatch(
      r'error: preempted at step \d+, the checkpoint save did not finish within '
      r'train\.preemption_timeout=3s; exiting without it \(the checkpoints finished before are '
      r'kept\)', lines[0]), err[-3000:]


def test_a_url_workdir_is_refused_before_anything_is_written(tmp_path, monkeypatch):
  """gs://... would otherwise become ./gs:/... on local disk: refused with the mount hint."""
  from ptlm_jax.training import start  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  with pytest.raises(errors.UserError, match=r'^--workdir=gs://b/r: a URL is not a workdir') as e:
    start.prepare_workdir('gs://b/r')
  assert 'gcsfuse' in str(e.value) and '\n' not in str(e.value)
  assert not os.listdir(tmp_path)


def test_a_sigterm_returns_preempted_so_an_in_process_job_stops(tmp_path, monkeypatch):
  """train.run says it stopped early; the objective comparison then stops instead of
  fine-tuning from an unfinished pretraining run."""
  build = stand_ins.components_fn()

  class SigtermAt:
    """The stand-in rows, with a SIGTERM to this process before batch `at` (the watch's
    handler records it; the loop saves that step and stops)."""

    def __init__(self, rows, at):
      self.rows, self.at = rows, at

    def __iter__(self):
      return self

    def __next__(self):
      if self.rows.index == self.at:
        os.kill(os.getpid(), signal.SIGTERM)
      return next(self.rows)

    def __getattr__(self, name):  # get_state / set_state
      return getattr(self.rows, name)

  def components(config):
    c = build(config)
    c.train_iter = SigtermAt(c.train_iter, 3)
    return c

  out = train.run(stand_ins.tiny_config({**RUN, 'train.checkpoint_every': 100}), str(tmp_path),
                  components)
  assert out.get('preempted') and out['step'] < RUN['train.steps']
  assert _steps(tmp_path) == [out['step']]  # saved where it stopped

  from experiments.compare_objectives import runner  # pylint: disable=g-import-not-at-top
  from ptlm_jax import main  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(main, 'run', lambda *a, **k: {'step': 3, 'preempted': 1.0})
  with pytest.raises(errors.UserError, match='stopped by SIGTERM while training .*rerun the same'):
    runner._timed_run(stand_ins.tiny_config(RUN), str(tmp_path / 'next'))
  assert not os.path.exists(tmp_path / 'next' / runner.WALL_TIME_FILE)


def test_asyncio_leftovers_of_a_failed_orbax_read_are_dropped_and_others_kept():
  """A future that tensorstore failed from C++ carries no Python frames, only its spec."""
  import logging  # pylint: disable=g-import-not-at-top
  checkpoint._quiet_orbax_tracebacks()  # pylint: disable=protected-access
  logger = logging.getLogger('asyncio')

  def record(error):
    return logger.makeRecord('asyncio', logging.ERROR, __file__, 1,
                             'Future exception was never retrieved', (), (type(error), error, None))

  leftover = ValueError('NOT_FOUND: Error opening "zarr" driver: Metadata at "a/.zarray" in OCDBT '
                        'database at local file "/x/" does not exist [tensorstore_spec=\'{}\']')
  assert not logger.filter(record(leftover))
  assert logger.filter(record(ValueError('a bug of yours')))
