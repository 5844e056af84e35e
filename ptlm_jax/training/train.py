"""The training loop shared by every family: one train step, pmap or mesh, eval, resume.

  python -m ptlm_jax.main --config=configs/gpt.py:tiny --workdir=runs/gpt

`train_and_evaluate(config, workdir)` (called by `ptlm_jax.main`) = `run(config, workdir,
build_components)`.  `build_components` is the only place that imports the real
tokenizer, input pipeline, objective and model; tests pass stand-ins to `run` instead.

One pure step for all families (`make_train_step`):
  1. the objective turns the packed rows into (inputs, targets, weights), each row with
     its own key fold_in(step key, global row index), so masks do not depend on how
     the batch is split over devices or microbatches;
  2. per microbatch (`lax.scan` over `optim.microbatches`), the model's logits and the
     loss sums (losses.py) give gradients of the *summed* loss;
  3. gradients and sums are added over microbatches and devices, then divided once by
     the total target weight: loss = sum(loss) / sum(weight), exactly as one big batch;
  4. the optax update is applied unless the loss or the gradient norm is NaN/Inf; then
     the params and moments are kept as they were (so no checkpoint can hold a poisoned
     state), the schedule's count still advances with the step (the learning rate of
     step n stays `schedule(n)` after a skip), and the host either stops, naming the
     step (`train.nan_policy=stop`), or carries on (`skip`).
Randomness is a function of (train.seed, step, global row): the objective's masks and,
when the model has dropout, its dropout masks (the model runs vmapped over rows, each
row with its own `dropout` key), so pmap, mesh, any device count or microbatch split,
and a run resumed on another device count all draw the same numbers.  The vmap is
`par.vmap_rows`: in mesh mode it names the batch axes (`spmd_axis_name`), so the rows stay
split over data x fsdp and each device computes only its own (a plain vmap made every
device compute the whole batch).  The keys are threefry: jax's `rbg` keys, cheaper on
GPU / TPU, are batched under vmap by drawing every row's bits from the first row's key
(`rng_bit_generator`'s batching rule), which makes the masks depend on the layout.

Partitions (peft/partitions.py): every param gets a label from `config.peft` (or
`Components.param_labels`); the step splits the params into the trainable and the
frozen tree and differentiates only the trainable one, and the optimizer holds state for
the trainable leaves alone.  `peft.method=lora` wraps the model in `lora.LoraModel`.
Where a run starts (init.source, adapter-only checkpoints, resume) is `start.py`; the
start-of-run parameter report is printed and written to `<workdir>/params_report.json`.

`run` reads top to bottom: checks and config → the workdir's lock → model, optimizer and
abstract state → checks against the checkpoints → reporter and parameter report (the first
writes: a refused run has written nothing) → checkpoint (resume or fresh) → compile → `_loop`.

Legend: B batch rows, T target positions, V vocabulary, M microbatches, X any further axes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from typing import Any, Callable, Iterable, Iterator

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from ptlm_jax import errors, flops
from ptlm_jax.peft import partitions as peft
from ptlm_jax.training import checkpoint, losses, metrics, optim, parallel, start


class TrainingDiverged(errors.UserError):
  """A NaN/Inf loss under train.nan_policy=stop."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # updates applied so far (int32)
  params: Any
  opt_state: Any


@dataclasses.dataclass
class Components:
  """What the loop trains; built from the config by `build_components` (or stand-ins)."""
  model: nn.Module                                  # the Flax model (INTERFACES.md signatures)
  objective: Callable                               # (batch, rng) -> (inputs, targets, weights)
  train_iter: Iterator[dict[str, np.ndarray]]       # packed rows, has get_state()/set_state()
  eval_batches: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None  # a fresh finite pass
  # params -> 'train' / 'freeze' / 'lr*X' tree; None: peft.param_labels(params, config.peft).
  param_labels: Callable[[Any], Any] | None = None
  # Fine-tuning hooks.  loss(outputs, targets, weights, z_loss, label_smoothing) -> sums as
  # losses.weighted_cross_entropy (the default) for model outputs that are not plain logits;
  # extra_eval(params) -> scalars (F1, exact match, ROUGE, ...) computed on the host after
  # each evaluation, from the full (global) params; eval_records() -> one JSON-able record
  # per validation example from the latest extra_eval, written by the loop to
  # <workdir>/inference_eval/<split>-<step>.jsonl (as T5X's inference_eval).
  loss: Callable[..., dict] | None = None
  extra_eval: Callable[[Any], dict[str, float]] | None = None
  eval_records: Callable[[], list[dict]] | None = None


def build_components(config) -> Components:
  """The real tokenizer, pipeline, objective and model of a pretraining config.

  (Fine-tuning configs get theirs from `finetune.run.build_components`.)
  """
  if config.task.name:
    raise errors.UserError(f'task.name={config.task.name!r} is a fine-tuning config: run it with '
                           'ptlm_jax.main.run (or finetune.run.train_and_evaluate)')
  # pylint: disable=g-import-not-at-top
  from ptlm_jax import models, objectives
  from ptlm_jax.data import pipeline, tokenizer as tokenizer_lib
  tokenizer = tokenizer_lib.get_tokenizer(config)
  # Before the model is built: rows for the sentinels the objective needs (UL2 at 512).
  note = objectives.reserve_sentinels(config, tokenizer.piece_count)
  if note:
    logging.warning('%s', note)
  objective = objectives.get_objective(config, tokenizer.vocab_info)
  shard = dict(process_index=jax.process_index(), process_count=jax.process_count(),
               row_length=objective.raw_length)
  train_iter = pipeline.make_pretrain_iterator(config, tokenizer, split=config.data.train_split,
                                               **shard)
  eval_batches = lambda: pipeline.make_pretrain_iterator(
      config, tokenizer, split=config.data.eval_split, infinite=False, **shard)
  return Components(models.build_model(config.model), objective, train_iter, eval_batches)


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  return run(config, workdir, build_components)


# ---------------------------------------------------------------------------
# The step functions.

def apply_objective(objective, batch, rng, first_row):
  """objective over each row with key fold_in(rng, first_row + row): layout-independent."""
  rows = batch['tokens'].shape[0]
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(first_row + jnp.arange(rows))
  one_row = lambda row, key: objective(jax.tree.map(lambda x: x[None], row), key)
  inputs, targets, weights = jax.vmap(one_row)(batch, keys)
  return jax.tree.map(lambda x: x[:, 0], (inputs, targets, weights))


def _split_microbatches(x_BxX, m: int):
  """[B, ...] -> [M, B/M, ...]; microbatch i takes rows i, i+M, ... (even over devices)."""
  x_BxMxX = x_BxX.reshape((x_BxX.shape[0] // m, m) + x_BxX.shape[1:])
  return jnp.swapaxes(x_BxMxX, 0, 1)


def _chunk_tokens(config) -> int:
  return config.train.get('loss_chunk_tokens', 0)  # absent in configs saved before it existed


def _apply(model, params, inputs, method=None, dropout_keys=None, vmap_rows=jax.vmap,
           **kwargs):
  """model.apply; with `dropout_keys` (one key per row) vmapped over rows, each with its key.

  Dropout masks then depend on the row alone, not on how many rows a device holds.
  Outputs that do not depend on the row (the LM head's table) come back unbatched.
  `vmap_rows(fn, out_axes)`: the vmap (`Parallel.vmap_rows` keeps the rows sharded).
  """
  if dropout_keys is None:
    return model.apply({'params': params}, **inputs, method=method, **kwargs)

  def one_row(row_inputs, key):
    return model.apply({'params': params}, **jax.tree.map(lambda x: x[None], row_inputs),
                       method=method, rngs={'dropout': key}, **kwargs)

  shapes = jax.eval_shape(one_row, jax.tree.map(lambda x: x[0], inputs), dropout_keys[0])
  # Row-independent outputs (e.g. the vocabulary table) have no leading row axis of 1.
  out_axes = jax.tree.map(lambda s: 0 if s.ndim and s.shape[0] == 1 else None, shapes)
  out = vmap_rows(one_row, out_axes=out_axes)(inputs, dropout_keys)
  return jax.tree.map(lambda x, a: x[:, 0] if a == 0 else x, out, out_axes)


def model_loss(model, chunk_tokens: int, loss=None, vmap_rows=jax.vmap) -> Callable:
  """(params, inputs, targets, weights, z_loss, label_smoothing, **apply_kwargs) -> loss sums.

  A pretraining LM (no `loss` hook, `model.head='lm'`, `chunk_tokens` > 0: the config's
  `train.loss_chunk_tokens`) takes the fused path: the model's `lm_head_inputs` (the
  features before the vocabulary projection, and its table) go to
  `losses.projected_cross_entropy`, which never builds the [B, T, V] logits and computes
  their gradient in the same pass.  Otherwise the
  model's logits go to `loss` (default `losses.weighted_cross_entropy`).  Same sums.
  `dropout_keys` (a keyword argument, one key per row): the model runs per row (`_apply`);
  the loss always runs over the whole batch (so the fused path keeps its memory bound).
  vmap_rows: how the per-row model is vmapped (`Parallel.vmap_rows`).
  """
  model_config = getattr(model, 'config', None)
  if (loss is None and chunk_tokens > 0 and hasattr(model, 'lm_head_inputs')
      and getattr(model_config, 'head', None) == 'lm'):
    def fused(params, inputs, targets_BxT, weights_BxT, z_loss, label_smoothing, **kwargs):
      h_BxTxD, table_VxD, bias_V = _apply(model, params, inputs, method='lm_head_inputs',
                                          vmap_rows=vmap_rows, **kwargs)
      return losses.projected_cross_entropy(h_BxTxD, table_VxD, bias_V, targets_BxT, weights_BxT,
                                            z_loss, label_smoothing, chunk_tokens)
    return fused
  loss = loss or losses.weighted_cross_entropy

  def plain(params, inputs, targets_BxT, weights_BxT, z_loss, label_smoothing, **kwargs):
    logits_BxTxV = _apply(model, params, inputs, vmap_rows=vmap_rows, **kwargs)
    return loss(logits_BxTxV, targets_BxT, weights_BxT, z_loss=z_loss,
                label_smoothing=label_smoothing)
  return plain


def make_train_step(model, objective, tx, config, par, loss=None, trainable=None) -> Callable:
  """train_step(state, batch, rng) -> (state, metrics of sums); see the module docstring.

  trainable: a tree of bools like the params (None: all); only those leaves are
  differentiated and updated (`tx` holds state for them alone), the others pass through.
  """
  m, o = config.optim.microbatches, config.objective
  sums_fn = model_loss(model, _chunk_tokens(config), loss, par.vmap_rows)
  split = ((lambda params: peft.partition(params, trainable)) if trainable is not None
           else (lambda params: (params, {})))

  # Dropout keys per row only when the model has dropout: the vmapped forward is then the
  # price of layout-independent masks; without dropout the plain batched call runs.
  per_row = config.model.dropout_rate > 0 or config.model.attention_dropout_rate > 0

  def loss_fn(train_params, frozen_params, inputs, targets_BxT, weights_BxT, dropout_keys_B):
    params = peft.combine(train_params, frozen_params)
    dropout = ({'dropout_keys': dropout_keys_B} if per_row
               else {'rngs': {'dropout': dropout_keys_B[0]}})
    sums = sums_fn(params, inputs, targets_BxT, weights_BxT, o.z_loss, o.label_smoothing,
                   deterministic=False, **dropout)
    return sums['loss'], sums  # losses.py: 'loss' already includes the z-loss

  grad_fn = jax.grad(loss_fn, has_aux=True)

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    rows = batch['tokens'].shape[0]
    first_row = par.first_row(rows)
    inputs, targets, weights = apply_objective(objective, batch, jax.random.fold_in(rng, 0),
                                               first_row)
    dropout_rng = jax.random.fold_in(rng, 1)
    dropout_keys = jax.vmap(lambda i: jax.random.fold_in(dropout_rng, i))(
        first_row + jnp.arange(rows))
    train_params, frozen_params = split(state.params)

    # -- gradients of the summed loss (trainable leaves only), accumulated over microbatches --
    if m == 1:
      grads, sums = grad_fn(train_params, frozen_params, inputs, targets, weights, dropout_keys)
    else:
      micro = jax.tree.map(lambda x: par.constrain_microbatches(_split_microbatches(x, m)),
                           (inputs, targets, weights, dropout_keys))
      first = jax.tree.map(lambda x: x[0], micro)
      shapes = jax.eval_shape(grad_fn, train_params, frozen_params, *first)
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)

      def accumulate(carry, xs):
        out = grad_fn(train_params, frozen_params, *xs)
        return jax.tree.map(lambda a, b: a + b.astype(jnp.float32), carry, out), None

      (grads, sums), _ = jax.lax.scan(accumulate, zeros, micro)
      grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, train_params)

    # -- summed over devices, divided once --
    grads, sums = par.sum((grads, sums))
    denominator = jnp.where(sums['weight'] > 0, sums['weight'], 1.0)
    grads = jax.tree.map(lambda g: g / denominator, grads)
    grad_norm = optax.tree.norm(grads)

    # -- update, unless something is NaN/Inf --
    finite = jnp.isfinite(sums['loss']) & jnp.isfinite(grad_norm)

    def update(_):
      updates, opt_state = tx.update(grads, state.opt_state, train_params)
      return optax.apply_updates(train_params, updates), opt_state

    def skip(_):
      return train_params, _advance_schedule(state.opt_state)

    # One branch runs: no per-leaf select over params and optimizer state (a where() would
    # read both versions of every leaf), and a skipped step does no optimizer work.
    # `finite` is the same on every device (it comes from summed values).
    new_params, opt_state = jax.lax.cond(finite, update, skip, None)
    state = TrainState(step=state.step + 1, params=peft.combine(new_params, frozen_params),
                       opt_state=opt_state)
    return state, {**sums, 'grad_norm': grad_norm, 'finite': finite.astype(jnp.float32)}

  return train_step


def _advance_schedule(opt_state):
  """opt_state with every schedule count (optax.ScaleByScheduleState) one step on.

  A skipped step keeps params and moments (Adam's and Adafactor's own counts say how many
  updates built them) but moves the learning rate on, so that it stays `schedule(step)`.
  """
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
  return jax.tree.map(
      lambda x: optax.ScaleByScheduleState(count=optax.safe_int32_increment(x.count))
      if is_schedule(x) else x, opt_state, is_leaf=is_schedule)


def make_eval_step(model, objective, par, loss=None, config=None) -> Callable:
  """eval_step(state, batch, rng) -> sums of plain cross-entropy (no z-loss, no smoothing).

  config: for `train.loss_chunk_tokens` (the fused LM head of `model_loss`); None: off.
  """
  sums_fn = model_loss(model, 0 if config is None else _chunk_tokens(config), loss)

  def eval_step(state, batch, rng):
    rows = batch['tokens'].shape[0]
    inputs, targets_BxT, weights_BxT = apply_objective(objective, batch, rng, par.first_row(rows))
    return par.sum(sums_fn(state.params, inputs, targets_BxT, weights_BxT, 0.0, 0.0,
                           deterministic=True))

  return eval_step


# ---------------------------------------------------------------------------
# Helpers of the loop.

def _unbox(tree):
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree,
                      is_leaf=is_box)


def _pad_rows(batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
  """A short last eval batch, padded with empty rows (segment 0: no targets)."""
  have = next(iter(batch.values())).shape[0]
  if have == rows:
    return batch
  pad = lambda v: np.zeros((rows - have,) + v.shape[1:], v.dtype)
  return {k: np.concatenate([v, pad(v)]) for k, v in batch.items()}


def _fetch(pending, par, schedule, nan_policy: str, reporter, last_saved: int | None
           ) -> list[dict[str, float]]:
  """Host copies of the pending steps' metrics; stops on a NaN/Inf step under policy 'stop'."""
  fetched = []
  for step, device_metrics in pending:
    host = par.metrics_to_host(device_metrics)
    host['lr'] = float(schedule(step - 1))
    if not host['finite']:
      message = (f'non-finite loss at step {step} (loss sum {host["loss"]}, '
                 f'grad norm {host["grad_norm"]})')
      if nan_policy == 'stop':
        raise TrainingDiverged(
            f'{message}: stopped (train.nan_policy=stop); the update was not applied and no '
            f'checkpoint after step {last_saved} was written. Lower optim.lr or set '
            'train.nan_policy=skip')
      reporter.print(f'warning: {message}: update skipped (train.nan_policy=skip)')
    fetched.append(host)
  return fetched


def _any_process(flag: bool) -> bool:
  """True if `flag` is true on some process (a tiny collective with several processes)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def _window_scalars(window: list[dict[str, float]]) -> dict[str, float]:
  """Token-weighted train scalars over the steps since the last write (finite steps only)."""
  good = [w for w in window if w['finite']] or window
  weight = sum(w['weight'] for w in good) or 1.0
  return {'loss': sum(w['loss'] for w in good) / weight,
          'accuracy': sum(w['correct'] for w in good) / weight,
          'z_loss': sum(w['z_loss'] for w in good) / weight,
          'grad_norm': sum(w['grad_norm'] for w in good) / len(good),
          'lr': window[-1]['lr'],
          'skipped': float(sum(1 for w in window if not w['finite']))}


@dataclasses.dataclass
class StateSpec:
  """How to build the train state, and its shapes, without computing it."""
  init_state: Callable[[jax.Array], TrainState]  # rng -> TrainState (jit it with out_shardings)
  abstract_state: TrainState                     # ShapeDtypeStructs (jax.eval_shape)
  boxed_params: Any                              # abstract params in nn.LogicallyPartitioned boxes
  param_specs: Any                               # logical PartitionSpecs of the params
  tx: optax.GradientTransformation
  row_length: int                                # packed row length the objective needs
  example_inputs: Any                            # abstract model inputs of one row
  example_targets: Any                           # abstract targets of one row
  labels: Any                                    # 'train' | 'freeze' | 'lr*X' per param
  trainable: Any                                 # bools per param: differentiated or not


def make_state_spec(config, components: Components, rng) -> StateSpec:
  """Abstract initialisation: model.init and tx.init traced with jax.eval_shape only."""
  model, objective = components.model, components.objective
  row_length = getattr(objective, 'raw_length', config.data.seq_len)
  one_row = {k: jax.ShapeDtypeStruct((1, row_length), jnp.int32)
             for k in ('tokens', 'segment_ids', 'positions')}
  example_inputs, example_targets, _ = jax.eval_shape(
      lambda b: apply_objective(objective, b, jax.random.PRNGKey(0), 0), one_row)

  def init_params(rng):
    inputs = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), example_inputs)
    return model.init({'params': rng, 'dropout': rng}, **inputs, deterministic=True)['params']

  boxed_params = jax.eval_shape(init_params, rng)
  abstract_params = _unbox(boxed_params)
  labels = (components.param_labels or (lambda p: peft.param_labels(p, config.peft)))(
      abstract_params)
  trainable = peft.trainable_mask(labels)
  # The optimizer sees the trainable leaves only: frozen ones have no state at all.
  train_labels = peft.partition(labels, trainable)[0]
  all_train = set(jax.tree.leaves(train_labels)) == {'train'}
  tx = optim.make_optimizer(config, peft.partition(abstract_params, trainable)[0],
                            None if all_train else train_labels)

  def init_state(rng):
    params = _unbox(init_params(rng))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(peft.partition(params, trainable)[0]))

  return StateSpec(init_state, jax.eval_shape(init_state, rng), boxed_params,
                   nn.get_partition_spec(boxed_params), tx, row_length, example_inputs,
                   example_targets, labels, trainable)


# ---------------------------------------------------------------------------
# The loop.

def run(config, workdir: str, components_fn: Callable[[Any], Components] = build_components
        ) -> dict[str, float]:
  """Trains (or resumes) the run `config` describes in `workdir`; returns the last scalars."""
  started = time.perf_counter()
  # -- Devices and checks, before anything compiles; init.source's fields --
  parallel.initialize_distributed(config)
  config, source, inherited = start.resolve_config(config, workdir)
  workdir = start.prepare_workdir(workdir)
  with start.WorkdirLock(workdir):  # one run per workdir (process 0 holds it)
    return _run(config, workdir, components_fn, source, inherited, started)


def _run(config, workdir: str, components_fn, source, inherited, started) -> dict[str, float]:
  """`run` once the workdir is this run's: every check before the first write into it."""
  par = parallel.make(config)
  components = components_fn(config)
  components = dataclasses.replace(components, model=peft.wrap(components.model, config.peft))

  # -- Model, optimizer and the abstract state --
  init_rng, train_rng, eval_rng = jax.random.split(jax.random.PRNGKey(config.train.seed), 3)
  with par.context():
    spec = make_state_spec(config, components, init_rng)
  persist = start.Persistence.of(config, spec.abstract_state.params, spec.trainable, source)

  with par.context():
    # -- Checks against the workdir's checkpoints (a refused run has written nothing) --
    ckpt = checkpoint.Checkpointer(workdir, config)
    par.prepare(spec.abstract_state, spec.param_specs)
    global_abstract = par.global_abstract(spec.abstract_state)
    ckpt.check_compatible(config, persist.view(global_abstract))
    if not any(jax.tree.leaves(spec.trainable)):
      raise errors.ConfigError('peft.rules', config.peft.rules,
                               'rules that leave some parameter trainable (with peft.method='
                               f'{config.peft.method!r} every one is frozen)')

    # -- Reporter and parameter report: the first writes --
    reporter = _make_reporter(config, workdir, spec, par)
    start.write_params_report(workdir, config, reporter, spec.abstract_state.params, spec.labels,
                              inherited, persist)

    # -- Checkpoint: resume, or start from scratch (or from init.source) --
    state, start_step = start.initial_state(par, ckpt, persist, global_abstract,
                                            spec.init_state, init_rng, components.train_iter,
                                            reporter, config)
    if start_step == 0:
      reporter.hparams({k: str(v) for k, v in flax.traverse_util.flatten_dict(
          config.to_dict(), sep='.').items()})

    # -- Compile (or take the steps of an identical earlier run: reuse_compiled_steps) --
    train_step, eval_step = _compiled_steps(config, components_fn, components, spec, par)
    evaluate = _make_evaluate(config, workdir, components, par, eval_step, eval_rng,
                              spec.row_length)

    # -- Train --
    return _loop(config, workdir, components, par, state, start_step, train_step, evaluate,
                 train_rng, ckpt, persist, reporter, started)


# Compiled steps shared by the runs of one process (`reuse_compiled_steps`), keyed by
# `_steps_key`.  jax caches a jitted function's traces per function object, and each run
# builds new ones, so a sweep of identical steps (the objective comparison's fine-tunes:
# pretrained and from scratch, several seeds) traces and lowers every shape again, ~1 s
# each on a CPU, even when XLA's persistent cache has the executable.
_REUSED_STEPS: dict | None = None


@contextlib.contextmanager
def reuse_compiled_steps():
  """Within this block, a run whose step is identical to an earlier run's reuses it.

  Identical: the same `components_fn` and the same resolved config apart from the fields
  that never reach the step (`init.*`, where the weights come from; `train.seed` and
  `data.shuffle_seed`, whose keys and order the step takes as arguments).  Only for
  callers that build components from the config alone, as the real builders do.
  """
  global _REUSED_STEPS
  outer, _REUSED_STEPS = _REUSED_STEPS, ({} if _REUSED_STEPS is None else _REUSED_STEPS)
  try:
    yield
  finally:
    _REUSED_STEPS = outer


def _compiled_steps(config, components_fn, components: Components, spec: StateSpec, par):
  """(train_step, eval_step), jitted for `par`; shared within `reuse_compiled_steps`."""
  key = _steps_key(config, components_fn) if _REUSED_STEPS is not None else None
  if key is not None and key in _REUSED_STEPS:
    return _REUSED_STEPS[key]
  steps = (par.compile(make_train_step(components.model, components.objective, spec.tx, config,
                                       par, components.loss, spec.trainable), returns_state=True),
           par.compile(make_eval_step(components.model, components.objective, par,
                                      components.loss, config), returns_state=False))
  if key is not None:
    _REUSED_STEPS[key] = steps
  return steps


def _steps_key(config, components_fn) -> tuple:
  fields = config.to_dict()
  fields.pop('init', None)
  fields['train'].pop('seed', None)
  fields['data'].pop('shuffle_seed', None)
  return components_fn, json.dumps(fields, sort_keys=True, default=str), jax.device_count()


def _make_reporter(config, workdir: str, spec: StateSpec, par) -> metrics.Reporter:
  """The metrics writer, with the FLOPs of one step (MFU) and the start-of-run line."""
  t = config.train
  counts = flops.count_params(spec.boxed_params)
  lengths = {k: v.shape[1] for k, v in spec.example_inputs.items() if getattr(v, 'ndim', 0) == 2}
  input_length = lengths.get('encoder_tokens', lengths.get('tokens', spec.row_length))
  step_flops = flops.flops_per_step(
      config.model, counts, t.batch_size, input_length,
      target_length=lengths.get('decoder_tokens', 0), output_length=spec.example_targets.shape[1])
  peak = flops.peak_flops_per_device(jax.devices()[0].device_kind, t.peak_flops) * par.num_devices
  reporter = metrics.Reporter(workdir, config, tokens_per_step=t.batch_size * spec.row_length,
                              flops=step_flops, peak_flops=peak)
  reporter.print(f'{config.model.family}: {counts["params_total"]:,} parameters '
                 f'({counts["params_non_embedding"]:,} non-embedding); {par.mode} over '
                 f'{par.num_devices} devices, {jax.process_count()} process(es); '
                 f'{step_flops["model"] + step_flops["head"]:.3g} FLOPs per step')
  return reporter


def _make_evaluate(config, workdir: str, components: Components, par, eval_step,
                   eval_rng, row_length: int = 0) -> Callable:
  """evaluate(state, step) -> eval scalars ({} when there is nothing to evaluate).

  Processes may hold different numbers of evaluation batches (each reads its own shard of
  a finite split): every process runs as many batches as the one with the most (up to
  `train.eval_steps`), agreed batch by batch, and those that ran out feed empty rows
  (segment 0: zero weight).  So no process waits alone in a collective, and every
  document any process holds is counted, whatever the number of processes.
  """
  t = config.train
  local_rows = t.batch_size // jax.process_count()

  def evaluate(state, step: int) -> dict[str, float]:
    if components.eval_batches is None or t.eval_steps == 0:
      return {}
    totals: dict[str, float] = {}
    batches = iter(components.eval_batches())
    # The shapes of an empty batch: this process's last one, else packed rows.
    like = {k: np.zeros((1, row_length), np.int32) for k in ('tokens', 'segment_ids', 'positions')}
    for i in range(t.eval_steps):
      batch = next(batches, None)
      if not _any_process(batch is not None):
        break
      if batch is None:
        batch = {k: np.zeros((local_rows,) + v.shape[1:], v.dtype) for k, v in like.items()}
      else:
        like = batch
      sums = eval_step(state, par.shard_batch(_pad_rows(batch, local_rows)),
                       jax.random.fold_in(eval_rng, i))
      for k, v in par.metrics_to_host(sums).items():
        totals[k] = totals.get(k, 0.0) + v
    if not totals:
      return {}
    loss = totals['loss'] / max(totals['weight'], 1e-9)
    scalars = {'loss': loss, 'accuracy': totals['correct'] / max(totals['weight'], 1e-9),
               'perplexity': math.exp(min(loss, 50.0)), 'tokens': totals['weight']}
    if components.extra_eval is not None:
      scalars.update(components.extra_eval(
          peft.inference_params(par.to_global(state).params, config.peft)))
      if components.eval_records is not None and jax.process_index() == 0:
        checkpoint.write_eval_records(workdir, config.data.eval_split, step,
                                      components.eval_records())
    return scalars
  return evaluate


def _loop(config, workdir, components, par, state, start_step, train_step, evaluate, train_rng,
          ckpt, persist, reporter, started) -> dict[str, float]:
  """Steps from start_step to train.steps: log, evaluate and save on their cadences."""
  t = config.train
  schedule = optim.make_schedule(config, xp=np)  # host copies of the logged rate
  watch = checkpoint.PreemptionWatch(t.get('preemption_timeout', 300))
  profiler = metrics.Profiler(workdir, t.profile_steps)
  pending: list[tuple[int, Any]] = []   # (step, device metrics) not yet fetched
  window: list[dict[str, float]] = []
  last = {'step': start_step}
  try:
    if start_step >= t.steps:
      reporter.print(f'step {start_step} >= train.steps={t.steps}: nothing to train')
    for step in range(start_step, t.steps):
      profiler.before(step)
      batch = par.shard_batch(next(components.train_iter))
      state, step_metrics = train_step(state, batch, train_rng)
      profiler.after(step, step_metrics)
      done = step + 1
      pending.append((done, step_metrics))
      if step == start_step:  # the first step includes compilation
        jax.block_until_ready(step_metrics)
        seconds = time.perf_counter() - started
        reporter.print(f'step {done} (compilation included) done {seconds:.1f}s after start')
        reporter.restart_clock(done)

      final = done == t.steps
      preempted = watch.reached(done)
      eval_due = t.eval_steps > 0 and (done % t.eval_every == 0 or final)
      save_due = done % t.checkpoint_every == 0 or final or preempted
      if done % t.log_every == 0 or final or eval_due or save_due:
        # Fetch (and check for NaN) before anything is evaluated or saved.
        window += _fetch(pending, par, schedule, t.nan_policy, reporter, ckpt.latest_step())
        pending.clear()
      if window and (done % t.log_every == 0 or final):
        scalars = _window_scalars(window)
        last.update({f'train_{k}': v for k, v in scalars.items()})
        reporter.train(done, scalars)
        window.clear()
      eval_scalars = evaluate(state, done) if eval_due else {}
      if eval_scalars:
        last.update({f'eval_{k}': v for k, v in eval_scalars.items()})
        reporter.eval(done, eval_scalars)
      if save_due:
        ranked = {k: eval_scalars[k] for k in ('loss', 'accuracy')} if eval_scalars else None
        ckpt.save(done, par.to_global(persist.view(state)), components.train_iter.get_state(),
                  config, metrics=ranked, peft_info=persist.peft_info)
      ckpt.check()  # a failed asynchronous save stops the run here, one line naming it
      if eval_due or save_due:
        reporter.restart_clock(done)
      last['step'] = done
      if preempted and not final:
        ckpt.wait()
        reporter.print(f'preempted: saved step {done} to {ckpt.directory}; exiting')
        last['preempted'] = 1.0  # callers that run more after this one must stop too
        break
  except BaseException as e:
    failed = True
    error = _one_line_write_error(e, workdir, last['step'])
    if error is e:
      raise
    raise error from None
  else:
    failed = False
  finally:
    # Each is closed (the save's wait inside the preemption deadline); a failure while
    # closing is reported only if nothing else is on its way out already.
    for close in (ckpt.close, watch.close, reporter.close):
      try:
        close()
      except Exception as e:  # pylint: disable=broad-except
        if not failed:
          failed = True
          error = _one_line_write_error(e, workdir, last['step'])
          if error is not e:
            raise error from None
          raise
  return last


def _one_line_write_error(error: BaseException, workdir: str, step: int) -> BaseException:
  """A full disk, quota or permission error while writing metrics, as a one-line UserError
  (checkpoints raise their own, CheckpointWriteError); any other error as it is."""
  reason = None if isinstance(error, errors.UserError) else checkpoint.os_failure(error)
  if reason is None:
    return error
  return errors.UserError(f'writing into {workdir} failed after step {step}: {reason}. The run '
                          'stopped (free space or fix the permissions, then rerun the same '
                          'command to resume)')
