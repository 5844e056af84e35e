"""Learning-rate schedules and optimizers (optax), built from `config.optim`.

  tx = optim.make_optimizer(config, params)               # every leaf trained
  tx = optim.make_optimizer(config, params, labels=tree)  # PEFT: per-leaf labels
  lr_now = optim.make_schedule(config)(step)

Schedule (n = step + 1 is the 1-based number of the update being made, W =
`optim.warmup_steps`, S = `train.steps`, f = `optim.final_lr_frac`):

  warmup(n) = min(1, n / W)                       (1 when W = 0; rsqrt: always 1)
  p(n)      = clip((n - W) / (S - W), 0, 1)       progress through the decay
  constant  1
  linear    1 - (1 - f) * p
  cosine    f + (1 - f) * (1 + cos(pi * p)) / 2
  rsqrt     max(f, sqrt(W' / max(n, W')))         W' = max(W, 1); T5's inverse square root
  lr(step)  = optim.lr * warmup(n) * decay(n)

So the first update already moves (lr / W), the peak is reached at update W, and
linear / cosine end exactly at f * lr on the last update.  `rsqrt` has no linear ramp:
T5 (Raffel et al. 2020, sec. 3.1.2) holds the rate at 0.01 for the first 10^4 steps
and then decays it as 1 / sqrt(step), i.e. lr = 1 / sqrt(max(n, 10^4)), which is
lr 1e-2 with W = 10^4 here.

Optimizers (all behind global-norm clipping when `optim.grad_clip_norm` > 0):
  adamw      optax.adamw, decoupled weight decay on the `decay_mask` leaves only.
  adafactor  T5's settings via optax.adafactor: factored second moments for
             dimensions >= 128, decay rate 0.8 (beta2_t = 1 - t^-0.8), update clipping
             at RMS 1.0, no momentum (beta1 = 0), updates scaled by the parameter's
             RMS (multiply_by_parameter_scale), eps 1e-30.  T5 used a built-in
             "relative step" schedule; here the schedule above drives it instead.
  sgd        optax.sgd with `optim.momentum`; L2 decay on the `decay_mask` leaves.

Weight-decay rule (`decay_mask`): a leaf is decayed unless its name is `bias` or
`scale`, or any module on its path has "norm" in its name (LayerNorm_0, RMSNorm,
final_norm, ...).  Embeddings and kernels are decayed.

PEFT hook: `labels` is a tree like `params` whose leaves are 'train', 'freeze',
'lr*X' (X a float multiplier of the schedule) or 'lr*X0,X1,...' (one multiplier per
row of axis 0: the layers of a scanned leaf, see peft.py).  Frozen leaves get zero
updates and carry no optimizer state (optax.multi_transform); each label gets its own
copy of the optimizer.  Clipping sees only the gradients of trained leaves and rows.
(The train loop hands the optimizer only the trainable leaves: peft.partition.)
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ptlm_jax import errors

Schedule = Callable[[jax.Array | int], jax.Array]
_NO_DECAY_LEAVES = ('bias', 'scale')
_LR_LABEL = re.compile(r'lr\*([0-9.eE+-]+(?:,[0-9.eE+-]+)*)')


# ---------------------------------------------------------------------------
# Schedules.

def make_schedule(config, xp=jnp) -> Schedule:
  """The learning rate of the update made at `step` (0-based count of updates done).

  `xp=numpy` gives the same function for the host: the loop logs the rate of every step,
  and eager jnp costs ~15 ms a step in dispatch, as much as a tiny model's update.
  """
  p = config.optim
  peak, warmup, total, floor = p.lr, p.warmup_steps, config.train.steps, p.final_lr_frac
  decay_steps = max(total - warmup, 1)

  def schedule(step):
    n = xp.asarray(step, xp.float32) + 1.0
    # T5's rsqrt "warm-up" is a constant stretch at the peak, not a ramp.
    warm = xp.minimum(1.0, n / warmup) if warmup > 0 and p.decay != 'rsqrt' else 1.0
    progress = xp.clip((n - warmup) / decay_steps, 0.0, 1.0)
    if p.decay == 'constant':
      decay = 1.0
    elif p.decay == 'linear':
      decay = 1.0 - (1.0 - floor) * progress
    elif p.decay == 'cosine':
      decay = floor + (1.0 - floor) * 0.5 * (1.0 + xp.cos(math.pi * progress))
    elif p.decay == 'rsqrt':
      w = max(warmup, 1)
      decay = xp.maximum(floor, xp.sqrt(w / xp.maximum(n, w)))
    else:
      raise errors.ConfigError('optim.decay', p.decay, "one of ('linear', 'cosine', 'rsqrt', 'constant')")
    return peak * warm * decay

  return schedule


# ---------------------------------------------------------------------------
# Which leaves get weight decay.

def _path_names(path) -> list[str]:
  names = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
  return names


def decays(path) -> bool:
  """The weight-decay rule of the module docstring, for one key path."""
  names = _path_names(path)
  if names and names[-1] in _NO_DECAY_LEAVES:
    return False
  return not any('norm' in n.lower() for n in names[:-1])


def decay_mask(params: Any) -> Any:
  """A tree of bools like `params`: True where weight decay applies."""
  return jax.tree_util.tree_map_with_path(lambda path, _: decays(path), params)


# ---------------------------------------------------------------------------
# Optimizers.

def _base_optimizer(config, schedule: Schedule) -> optax.GradientTransformation:
  p = config.optim
  if p.optimizer == 'adamw':
    return optax.adamw(schedule, b1=p.b1, b2=p.b2, eps=p.eps, weight_decay=p.weight_decay,
                       mask=decay_mask)
  if p.optimizer == 'adafactor':
    return optax.adafactor(
        schedule, min_dim_size_to_factor=128, decay_rate=0.8, multiply_by_parameter_scale=True,
        clipping_threshold=1.0, momentum=None, eps=1e-30, factored=True,
        weight_decay_rate=p.weight_decay or None, weight_decay_mask=decay_mask)
  if p.optimizer == 'sgd':
    sgd = optax.sgd(schedule, momentum=p.momentum or None)
    if p.weight_decay:
      return optax.chain(optax.add_decayed_weights(p.weight_decay, mask=decay_mask), sgd)
    return sgd
  raise errors.ConfigError('optim.optimizer', p.optimizer, "one of ('adamw', 'adafactor', 'sgd')")


def _scaled(schedule: Schedule, factor: float) -> Schedule:
  return lambda step: factor * schedule(step)


def _rows(factors, x):
  return jnp.asarray(factors, x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))


def _scale_rows(factors: list[float]) -> optax.GradientTransformation:
  """Multiplies row i (axis 0) of every update by factors[i]: a per-layer learning rate."""
  return optax.stateless(lambda updates, params: jax.tree.map(
      lambda u: u * _rows(factors, u), updates))


def _zero_frozen_rows(labels) -> optax.GradientTransformation:
  """Zeroes the gradient rows whose factor is 0, so that clipping does not count them."""
  def live(label):
    factors = _row_factors(label)
    return None if factors is None else np.asarray(factors) != 0.0
  masks = jax.tree.map(live, labels)  # None (an empty subtree) for whole leaves
  return optax.stateless(lambda updates, params: jax.tree.map(
      lambda u, m: u if m is None else u * _rows(m, u), updates, masks))


def _row_factors(label: str) -> list[float] | None:
  match = _LR_LABEL.fullmatch(label)
  if not match or ',' not in label:
    return None
  return [float(x) for x in match.group(1).split(',')]


def make_optimizer(config, params: Any = None, labels: Any = None) -> optax.GradientTransformation:
  """The optax transform for `config.optim` (see the module docstring).

  params: the parameter tree (only needed with `labels`, to check their structure).
  labels: optional tree of 'train' | 'freeze' | 'lr*X' leaves, one per parameter.
  """
  schedule = make_schedule(config)
  clip = ([optax.clip_by_global_norm(config.optim.grad_clip_norm)]
          if config.optim.grad_clip_norm > 0 else [])
  if labels is None:
    return optax.chain(*clip, _base_optimizer(config, schedule))

  if params is not None and (jax.tree.structure(params) != jax.tree.structure(labels)):
    raise ValueError('optimizer labels must have the structure of the parameters')
  transforms = {'freeze': optax.set_to_zero()}
  for label in set(jax.tree.leaves(labels)):
    if label == 'train':
      transforms[label] = _base_optimizer(config, schedule)
    elif (factors := _row_factors(label)) is not None:
      transforms[label] = optax.chain(_base_optimizer(config, schedule), _scale_rows(factors))
    elif (match := _LR_LABEL.fullmatch(label)):
      transforms[label] = _base_optimizer(config, _scaled(schedule, float(match.group(1))))
    elif label != 'freeze':
      raise errors.ConfigError('peft.rules', label,
                                   "leaf labels 'train', 'freeze', 'lr*X' or 'lr*X0,X1,...'")
  frozen = jax.tree.map(lambda label: label == 'freeze', labels)
  # Zero the frozen gradients first so that they do not count in the clipping norm.
  return optax.chain(optax.masked(optax.set_to_zero(), frozen), _zero_frozen_rows(labels),
                     *clip, optax.multi_transform(transforms, labels))
