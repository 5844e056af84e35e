"""The real train step of a config, compiled on abstract inputs: XLA's own cost and bytes.

  lowered = compiled.lower_train_step(config)      # nothing allocated, nothing executed
  figures = compiled.step_figures(lowered.compile())
  # {'flops': ..., 'temp_bytes': ..., 'argument_bytes': ..., 'total_bytes': ..., ...}

The step is the one `train.run` compiles (`train.make_train_step` under `parallel.make
(config)`: objective on device, model, loss, gradient, optimizer, NaN guard) with the
model and objective `build_components` would build, but its inputs are
`jax.ShapeDtypeStruct`s carrying their shardings, so a model larger than this machine
compiles too (`python -m ptlm_jax.main.estimate --compile` on N fake CPU devices).  The
tokenizer is not read: the objective gets a `VocabInfo` of `data.sp_vocab_size` pieces
(the shapes are what matter).

Figures are per device: XLA compiles one SPMD program (mesh) or one per-device program
(pmap), and `memory_analysis()` / `cost_analysis()` describe that program.
`total_bytes` = arguments + outputs - aliased (donated state) + temporaries: what one
device holds at the step's peak.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ptlm_jax import config_lib
from ptlm_jax.training import parallel, train


def lower_train_step(config, num_devices: int | None = None) -> Any:
  """The train step of `config` lowered on abstract state and batch (a `jax.stages.Lowered`).

  num_devices: the devices it runs over (default: `parallel.num_devices` or all); they
  must exist (fake CPU devices: XLA_FLAGS=--xla_force_host_platform_device_count=N).
  """
  # pylint: disable=g-import-not-at-top  (flax models load only when a step is built)
  from ptlm_jax import models, objectives
  from ptlm_jax.data import vocab
  from ptlm_jax.peft import partitions as peft
  config = config.copy_and_resolve_references()
  if num_devices:
    config.parallel.num_devices = num_devices
  config_lib.validate(config, num_devices=jax.device_count())
  par = parallel.make(config)
  objective = objectives.get_objective(config, vocab.VocabInfo(config.data.sp_vocab_size))
  model = peft.wrap(models.build_model(config.model), config.peft)
  components = train.Components(model, objective, iter(()))
  rng = jax.random.PRNGKey(0)
  with par.context():
    spec = train.make_state_spec(config, components, rng)
    par.prepare(spec.abstract_state, spec.param_specs)
    state, batch = _abstract_inputs(par, spec, config.train.batch_size)
    step = par.compile(train.make_train_step(model, objective, spec.tx, config, par, None,
                                             spec.trainable), returns_state=True)
    return step.lower(state, batch, rng)


def _abstract_inputs(par, spec, batch_size: int):
  """(state, batch) as ShapeDtypeStructs in the layout `par.compile` expects."""
  fields = ('tokens', 'segment_ids', 'positions')
  if par.mode == 'mesh':
    rows = jax.ShapeDtypeStruct((batch_size, spec.row_length), jnp.int32,
                                sharding=par.batch_sharding)
    return par.global_abstract(spec.abstract_state), {k: rows for k in fields}
  n = len(par.local_devices)  # pmap: a leading device axis on state and batch
  per_device = lambda x: jax.ShapeDtypeStruct((n,) + tuple(x.shape), x.dtype)
  rows = jax.ShapeDtypeStruct((n, batch_size // n, spec.row_length), jnp.int32)
  return jax.tree.map(per_device, spec.abstract_state), {k: rows for k in fields}


def step_figures(compiled_step) -> dict[str, float]:
  """Per-device FLOPs and bytes of a compiled step (see the module docstring)."""
  cost = compiled_step.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled_step.memory_analysis()
  out = dict(flops=float(cost.get('flops', 0.0)),
             bytes_accessed=float(cost.get('bytes accessed', 0.0)),
             argument_bytes=memory.argument_size_in_bytes,
             output_bytes=memory.output_size_in_bytes,
             alias_bytes=memory.alias_size_in_bytes,
             temp_bytes=memory.temp_size_in_bytes)
  out['total_bytes'] = (out['argument_bytes'] + out['output_bytes'] - out['alias_bytes']
                        + out['temp_bytes'])
  return out
