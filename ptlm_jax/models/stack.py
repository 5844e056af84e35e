"""A stack of identical blocks: unrolled or `nn.scan`ned, with an optional remat policy.

Unrolled, layer i's params live under `layers_{i}`; scanned (`model.scan_layers`), all
layers share one subtree `layers` whose leaves gain a leading axis of size N (logical
name 'layers'), so compile time stays flat in depth.  `stack_layers` / `unstack_layers`
convert a params tree between the two layouts (HF import/export goes through the
unrolled one):

  params_scanned = stack.stack_layers(params_unrolled)
  params_unrolled = stack.unstack_layers(params_scanned)

Decode caches are scanned along axis 1 instead, so that every cache array keeps its
batch axis first in both layouts (beam search can reorder rows with one gather).

`model.remat`: none (keep every activation), full (keep only each layer's input) or dots
(`REMAT_POLICIES`: keep the projections, recompute the attention scores).

A block is a module `Block(config, deterministic=..., decode=..., name=...)` whose
`__call__(x, *args)` returns `(x, None)`; every extra arg is shared by all layers.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np

from ptlm_jax.models import layers

# What the backward may read instead of recomputing.  'dots' keeps the projections'
# outputs (x . W, matmuls without batch dimensions) but not the attention scores and their
# product with the values (batched over rows and heads), the [B, H, T, S] arrays that grow
# with the square of the length (MaxText's `dots_with_no_batch_dims_saveable`).  By name:
# the models' matmuls are custom_vjp calls (layers.matmul), whose dots no dot policy sees.
REMAT_POLICIES = {
    'full': jax.checkpoint_policies.nothing_saveable,  # recompute everything
    'dots': jax.checkpoint_policies.save_only_these_names(layers.PROJECTION),
}
_LAYER_KEY = re.compile(r'^layers_(\d+)$')


def apply_layers(block_cls: type[nn.Module], config, num_layers: int, x, *args,
                 deterministic: bool, decode: bool = False, **block_kwargs):
  """Runs `num_layers` blocks over x; call inside a parent's compact method."""
  block = block_cls
  if config.remat != 'none':
    block = nn.remat(block, policy=REMAT_POLICIES[config.remat],
                     prevent_cse=not config.scan_layers)
  kwargs = dict(config=config, deterministic=deterministic, decode=decode, **block_kwargs)
  if config.scan_layers:
    scanned = nn.scan(
        block, variable_axes={'params': 0, 'cache': 1},
        split_rngs={'params': True, 'dropout': True},
        in_axes=(nn.broadcast,) * len(args), length=num_layers,
        metadata_params={nn.PARTITION_NAME: 'layers'})
    x, _ = scanned(**kwargs, name='layers')(x, *args)
    return x
  for i in range(num_layers):
    x, _ = block(**kwargs, name=f'layers_{i}')(x, *args)
  return x


def _map_dicts(tree, fn: Callable[[dict], dict]):
  if not isinstance(tree, dict):
    return tree
  return fn({k: _map_dicts(v, fn) for k, v in tree.items()})


def _stack_level(node: dict) -> dict:
  numbered = {int(m.group(1)): k for k in node if (m := _LAYER_KEY.match(k))}
  if not numbered:
    return node
  if sorted(numbered) != list(range(len(numbered))):
    raise ValueError(f'layer keys are not 0..N-1: {sorted(numbered)}')
  layers = [node[numbered[i]] for i in range(len(numbered))]
  out = {k: v for k, v in node.items() if not _LAYER_KEY.match(k)}
  out['layers'] = jax.tree.map(lambda *xs: np.stack(xs) if isinstance(xs[0], np.ndarray)
                               else jax.numpy.stack(xs), *layers)
  return out


def _unstack_level(node: dict) -> dict:
  if 'layers' not in node:
    return node
  stacked = node['layers']
  n = jax.tree.leaves(stacked)[0].shape[0]
  out = {k: v for k, v in node.items() if k != 'layers'}
  for i in range(n):
    out[f'layers_{i}'] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return out


def stack_layers(params: Any) -> Any:
  """Unrolled params (`layers_0..N-1`) -> scanned params (`layers`, leading axis N)."""
  return _map_dicts(params, _stack_level)


def unstack_layers(params: Any) -> Any:
  """Scanned params (`layers`, leading axis N) -> unrolled params (`layers_0..N-1`)."""
  return _map_dicts(params, _unstack_level)
