"""Parallel modes that wrap the one train step: pmap data parallel, or a sharded mesh.

  parallel.initialize_distributed(config)   # multi-host: before anything touches devices
  par = parallel.make(config)               # DataParallel (pmap) or MeshParallel (mesh)
  with par.context():
    par.prepare(abstract_state, param_specs)  # shardings from jax.eval_shape + logical names
    state = par.init_state(init_fn, rng)
    step = par.compile(train_step, returns_state=True)
    state, metrics = step(state, par.shard_batch(host_batch), rng)

`parallel.mode=pmap` (`DataParallel`): `jax.pmap` over the local devices with the
axis 'batch'.  The state is replicated: every leaf has a leading device axis, placed
directly by a jit whose output sharding splits that axis over the devices (the current
replacement for the deprecated `jax.device_put_replicated`).  Each device takes
B_local / devices rows; the step sums numerators and denominators over the axis with
`lax.psum` and divides once.  Multi-host: pmap spans every process's devices.

`parallel.mode=mesh` (`MeshParallel`): `jax.jit` over a (data, fsdp, tensor) device mesh
with `NamedSharding`s.  Batches split over data x fsdp; parameters and their optimizer
moments are sharded by `LOGICAL_AXIS_RULES`, which map the models' logical axis names
(INTERFACES.md) to mesh axes: embed -> fsdp (ZeRO-3 style), heads / mlp / vocab ->
tensor (Megatron style).  The first rule whose mesh axis is still free wins, so an
activation [batch, length, embed] is split over batch only.  A dimension that a mesh
axis does not divide stays whole.  The state is initialised abstractly
(`jax.eval_shape`) and materialised directly sharded by a jit with `out_shardings`, so
models larger than one device fit.

Checkpoints always see the *global* form of the state (`to_global` / `from_global`):
the mesh state as it is; the pmap state as one replica (the first local device's copy,
one device per process, no host round trip), which orbax writes once, collectively from
every process; a restore places it back on every device.

Multi-host: `initialize_distributed` calls `jax.distributed.initialize` (coordinator,
process count and id from the config, from JAX_COORDINATOR_ADDRESS & co., or detected
on Cloud TPU / SLURM / Open MPI).  Each process feeds only its rows of the global batch
(`jax.make_array_from_process_local_data` in mesh mode; pmap assembles them itself).
On CPUs the collectives between processes run over gloo.

Legend: B batch rows, M microbatches, X any further axes.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from ptlm_jax import config_lib, errors

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')
PMAP_AXIS = 'batch'
# Logical axis name -> mesh axes, in priority order (flax.linen.logical_axis_rules).
LOGICAL_AXIS_RULES = (
    ('batch', BATCH_AXES),
    ('vocab', 'tensor'),
    ('heads', 'tensor'),
    ('mlp', 'tensor'),
    ('embed', 'fsdp'),
    ('kv', None),
    ('length', None),
    ('layers', None),
    ('relpos_buckets', None),
    ('type_vocab', None),
    ('position', None),
    ('classes', None),
)
# The same rules for code running on one row inside `Parallel.vmap_rows`: there the row
# axis is the vmapped one (split over data x fsdp by `spmd_axis_name`), so no constraint
# inside may name those mesh axes again (an activation's 'embed' would take the free fsdp).
ROW_AXIS_RULES = tuple(
    (name, None if set((axes,) if isinstance(axes, str) else axes or ()) & set(BATCH_AXES)
     else axes) for name, axes in LOGICAL_AXIS_RULES)


# ---------------------------------------------------------------------------
# Multi-host start-up.

def _cluster_env() -> bool:
  """True where a multi-process launcher is visible (Cloud TPU pod, SLURM, Open MPI)."""
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return (len([h for h in hosts.split(',') if h]) > 1
          or int(os.environ.get('SLURM_NTASKS', '1') or 1) > 1
          or int(os.environ.get('OMPI_COMM_WORLD_SIZE', '1') or 1) > 1)


def initialize_distributed(config) -> None:
  """Starts jax.distributed when the config or the environment asks for several processes."""
  q = config.parallel
  address = q.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS', '')
  if q.distributed == 'off' or q.num_processes == 1 or jax.distributed.is_initialized():
    return
  if q.distributed == 'auto' and not (address or q.num_processes > 1 or _cluster_env()):
    return
  # Cross-process collectives on CPU need gloo; accelerators ignore this setting.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(coordinator_address=address or None,
                               num_processes=q.num_processes or None,
                               process_id=q.process_id if q.process_id >= 0 else None)
  except (ValueError, RuntimeError) as e:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.UserError(
        f'jax.distributed.initialize failed (parallel.coordinator_address={address!r}, '
        f'num_processes={q.num_processes}, process_id={q.process_id}): {first_line}') from None


def _devices(config) -> list:
  n = config.parallel.num_devices
  if n and jax.process_count() > 1:
    raise errors.ConfigError('parallel.num_devices', n, '0 (all devices) when running several processes')
  return jax.devices()[:n] if n else jax.devices()


# ---------------------------------------------------------------------------
# Shardings from logical axis names.

def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """Drops mesh axes from dimensions they do not divide evenly."""
  dims = []
  for axes, size in zip(tuple(spec) + (None,) * (len(shape) - len(spec)), shape):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    dims.append(axes if names and size % ways == 0 else None)
  return P(*dims)


def _keys(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def state_partition_specs(abstract_state: Any, abstract_params: Any, param_specs: Any) -> Any:
  """A PartitionSpec per state leaf: a parameter's own, or that of the parameter it mirrors.

  Optimizer moments are found by their key path ending in a parameter's path with the
  same shape (Adam mu / nu); anything else (step counts, Adafactor's factored
  statistics) is replicated.
  """
  by_path = {}
  for (path, leaf), spec in zip(jax.tree_util.tree_leaves_with_path(abstract_params),
                                jax.tree.leaves(param_specs, is_leaf=lambda x: isinstance(x, P))):
    by_path[_keys(path)] = (tuple(leaf.shape), spec)
  lengths = sorted({len(k) for k in by_path}, reverse=True)

  def spec_for(path, leaf):
    keys = _keys(path)
    for n in lengths:
      match = by_path.get(keys[-n:]) if len(keys) >= n else None
      if match and match[0] == tuple(leaf.shape):
        return match[1]
    return P()

  return jax.tree_util.tree_map_with_path(spec_for, abstract_state)


# ---------------------------------------------------------------------------
# The interface of a parallel mode; the defaults are what a mode without per-device
# code (mesh) does, so each mode writes only what differs.

class Parallel:
  """How the one train step runs over devices.  Inside the step: `sum`, `first_row`,
  `device_rng`, `constrain_microbatches`, `vmap_rows`; around it: `prepare`, `init_state`,
  `shard_batch`, `compile`, `metrics_to_host`; checkpoints: `global_abstract`,
  `to_global`, `from_global` (one global array per leaf, whatever the mode)."""
  mode = ''

  def __init__(self, config):
    self.devices = _devices(config)
    self.num_devices = len(self.devices)

  def context(self):
    return contextlib.nullcontext()

  def sum(self, tree):
    """Sums over the devices that split the batch (identity when the step sees it whole)."""
    return tree

  def first_row(self, local_rows: int):
    """Global index of this device's first batch row."""
    del local_rows
    return 0

  def device_rng(self, rng):
    return rng

  def constrain_microbatches(self, x_MxBxX):
    return x_MxBxX

  def vmap_rows(self, fn: Callable, out_axes=0) -> Callable:
    """jax.vmap of a one-row fn over the batch rows, keeping the rows where they are."""
    return jax.vmap(fn, out_axes=out_axes)

  def prepare(self, abstract_state, param_specs) -> None:
    """Derives the state's placement from its shapes (before init_state / compile)."""
    del abstract_state, param_specs

  def to_global(self, state):
    return state

  def from_global(self, state):
    return state


# ---------------------------------------------------------------------------
# pmap: replicated state, per-device batches.

class DataParallel(Parallel):
  """`jax.pmap` data parallelism with a replicated state (see the module docstring)."""
  mode = 'pmap'

  def __init__(self, config):
    super().__init__(config)
    self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
    self.local_mesh = Mesh(np.array(self.local_devices), (PMAP_AXIS,))
    self.global_mesh = Mesh(np.array(self.devices), ('replica',))
    self._first_replica = self._one_replica = self._stack = None  # built on first use

  # Inside the step (under pmap).
  def sum(self, tree):
    return jax.lax.psum(tree, PMAP_AXIS)

  def first_row(self, local_rows: int):
    return jax.lax.axis_index(PMAP_AXIS) * local_rows

  def device_rng(self, rng):
    return jax.random.fold_in(rng, jax.lax.axis_index(PMAP_AXIS))

  # Around the step.
  def init_state(self, init_fn: Callable, rng):
    """init_fn(rng) computed once per device and placed with a leading device axis."""
    n = len(self.local_devices)
    stacked = lambda r: jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), init_fn(r))
    return jax.jit(stacked, out_shardings=NamedSharding(self.local_mesh, P(PMAP_AXIS)))(rng)

  def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    n = len(self.local_devices)
    sharding = NamedSharding(self.local_mesh, P(PMAP_AXIS))
    return {k: jax.device_put(v.reshape((n, v.shape[0] // n) + v.shape[1:]), sharding)
            for k, v in batch.items()}

  def compile(self, fn: Callable, *, returns_state: bool) -> Callable:
    """fn(state, batch, rng) under pmap: state and batch per device, rng shared.

    returns_state: fn returns (new state, metrics); the old state's buffers are donated.
    """
    return jax.pmap(fn, axis_name=PMAP_AXIS, in_axes=(0, 0, None),
                    donate_argnums=(0,) if returns_state else ())

  def metrics_to_host(self, metrics) -> dict[str, float]:
    return {k: float(np.asarray(v)[0]) for k, v in jax.device_get(metrics).items()}

  # Checkpoint form: one copy, replicated over every device of every process.
  def global_abstract(self, abstract_state):
    sharding = NamedSharding(self.global_mesh, P())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        abstract_state)

  # Neither conversion goes through host memory, and the saved form is one replica: the
  # first local device's copy, on one device per process (orbax writes process 0's).
  # Each is one jitted program for the whole tree (compiled once per run, not per leaf).
  def to_global(self, state):
    if self._first_replica is None:
      firsts = {}
      for d in self.devices:
        firsts.setdefault(d.process_index, d)
      self._one_replica = NamedSharding(Mesh(np.array(list(firsts.values())), ('replica',)), P())
      self._first_replica = jax.jit(lambda tree: jax.tree.map(lambda x: x[0], tree))
    first = self.local_devices[0]
    shards = jax.tree.map(lambda x: next(s.data for s in x.addressable_shards if s.device == first),
                          state)
    return jax.tree.map(
        lambda x: jax.make_array_from_single_device_arrays(x.shape, self._one_replica, [x]),
        self._first_replica(shards))

  def from_global(self, state):
    replicated = NamedSharding(self.local_mesh, P())
    if self._stack is None:
      n = len(self.local_devices)
      self._stack = jax.jit(
          lambda tree: jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), tree),
          out_shardings=NamedSharding(self.local_mesh, P(PMAP_AXIS)))

    def on_local_devices(x):  # replicated over this process's devices, device to device
      by_device = {s.device: s.data for s in x.addressable_shards}
      if all(d in by_device for d in self.local_devices):
        return jax.make_array_from_single_device_arrays(
            x.shape, replicated, [by_device[d] for d in self.local_devices])
      return jax.device_put(x.addressable_shards[0].data, replicated)
    return self._stack(jax.tree.map(on_local_devices, state))


# ---------------------------------------------------------------------------
# mesh: jit with NamedShardings over (data, fsdp, tensor).

class MeshParallel(Parallel):
  """`jax.jit` over a (data, fsdp, tensor) mesh (see the module docstring)."""
  mode = 'mesh'

  def __init__(self, config):
    super().__init__(config)
    shape = config_lib.mesh_shape(config, self.num_devices)
    self.mesh = jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                              devices=self.devices)
    self.batch_sharding = NamedSharding(self.mesh, P(BATCH_AXES))
    self.replicated = NamedSharding(self.mesh, P())
    self.state_shardings = None

  def context(self):
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(LOGICAL_AXIS_RULES))
    return stack

  # Inside the step (under jit, on the global batch).
  def constrain_microbatches(self, x_MxBxX):
    spec = P(None, BATCH_AXES, *([None] * (x_MxBxX.ndim - 2)))
    return jax.lax.with_sharding_constraint(x_MxBxX, NamedSharding(self.mesh, spec))

  def vmap_rows(self, fn: Callable, out_axes=0) -> Callable:
    """jax.vmap over rows split over data x fsdp (`spmd_axis_name`).

    A plain vmap would leave the row axis unconstrained while the model's logical
    constraints shard its batch of one: XLA then gives every device the whole batch
    (dropout at GPT small on 8 devices: 7x the FLOPs, 6.6x the temp memory).
    """
    def one_row(*args):
      with nn.logical_axis_rules(ROW_AXIS_RULES):
        return fn(*args)
    return jax.vmap(one_row, out_axes=out_axes, spmd_axis_name=BATCH_AXES)

  # Around the step.
  def prepare(self, abstract_state, param_specs) -> None:
    """Derives the state's NamedShardings from the params' logical PartitionSpecs."""
    mesh_specs = nn.logical_to_mesh(param_specs, LOGICAL_AXIS_RULES)
    specs = state_partition_specs(abstract_state, abstract_state.params, mesh_specs)
    self.state_shardings = jax.tree.map(
        lambda spec, x: NamedSharding(self.mesh, _fit(spec, x.shape, self.mesh)),
        specs, abstract_state, is_leaf=lambda x: isinstance(x, P))

  def init_state(self, init_fn: Callable, rng):
    """init_fn(rng) materialised directly in its shards (never whole on one device)."""
    return jax.jit(init_fn, out_shardings=self.state_shardings)(rng)

  def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in batch.items()}

  def compile(self, fn: Callable, *, returns_state: bool) -> Callable:
    """fn(state, batch, rng) under jit: state sharded, batch split over data x fsdp.

    returns_state: fn returns (new state, metrics); the old state's buffers are donated.
    """
    out = (self.state_shardings, self.replicated) if returns_state else self.replicated
    return jax.jit(fn, in_shardings=(self.state_shardings, self.batch_sharding, self.replicated),
                   out_shardings=out, donate_argnums=(0,) if returns_state else ())

  def metrics_to_host(self, metrics) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}

  def global_abstract(self, abstract_state):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract_state, self.state_shardings)


def make(config) -> Parallel:
  """The parallel mode `config.parallel.mode` names, over the devices it may use."""
  return MeshParallel(config) if config.parallel.mode == 'mesh' else DataParallel(config)
