r"""Parameter partitions and parameter-efficient fine-tuning: labels, LoRA, the report.

Everything here works on plain nested dicts (what `model.init` returns, boxed or
unboxed) addressed by '/'-joined paths such as 'decoder/layers_0/attention/query/kernel'.

Partitions.  `param_labels(params, config.peft)` gives every leaf a label that
`optim.make_optimizer` understands: 'train', 'freeze', 'lr*X' (the schedule times X) or
'lr*X0,X1,...' (one factor per layer of a scanned leaf, whose axis 0 is the layer).  A
leaf's label is decided in this order:
  1. `peft.rules`: 'regex=action;regex=action;...', searched in the path, first match
     wins, action one of train | freeze | lr*X (a `;` inside a regex is not supported);
  2. the shortcuts: `peft.freeze_embeddings` (token / position / type tables and BERT's
     embedding norm) and `peft.freeze_layers=k` (layers 0..k-1 of every stack; T5's
     relative-position table counts as layer 0, where HF keeps it);
  3. the method's rules (`METHOD_RULES`; anything they leave out is frozen):
       lora     the LoRA factors, a task head and the [CLS] pooler (Hu et al. 2021)
       prefix   the prefix slots (and their MLP), a task head and the pooler (Li & Liang)
       adapter  the adapters, every norm, a task head and the pooler (Houlsby et al.)
     A task head (`head/...`) and BERT's pooler are new when fine-tuning, so they train.
  4. otherwise 'train'.
`peft.layerwise_lr_decay=d` then multiplies each trained leaf's rate by d^depth: 0 above
the last layer (heads, final norms), n - i for layer i of a stack of n, and N + 1 for
the embeddings (N the deepest stack).  A scanned leaf cannot be half frozen, so there
`freeze_layers` and LLRD become per-layer factors ('lr*0,0,1,1'): the frozen layers'
values stay bit-identical, but their gradients are computed and they keep Adam state.

  labels = peft.param_labels(params, config.peft)
  trainable, frozen = peft.partition(params, peft.trainable_mask(labels))
  params = peft.combine(trainable, frozen)

LoRA (Hu et al. 2021).  The factors live in their own tree under the key 'lora', beside
the model's params: for a kernel W with input axes I and output axes O (D x H x K for a
query: I = (D,), O = (H, K); H x K x D for the attention output: I = (H, K)),
`lora/<path of W>/a` is I x r and `.../b` is r x O, and the model computes with
W + (alpha / r) * a . b.  `a` starts Kaiming-uniform, U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
as HF peft (`kaiming_uniform_(a=sqrt(5))`); `b` starts at zero, so training starts
from the base model exactly.  Scanned kernels keep their leading layer axis on both.
The model itself never changes: `LoraModel` merges inside `apply`, so every family works.

  model = peft.LoraModel(models.build_model(config.model), config.peft)
  variables = model.init(rng, **inputs)           # {'params': {..., 'lora': {...}}}
  plain = peft.merge_lora(params, config.peft)    # W + (alpha/r) a.b, no 'lora' key

Report.  `report(params, labels)` counts total and trainable parameters per group;
`lora_example()` is the handout's worked example:

  >>> peft.lora_example(768, 768, rank=16)['lora_params']
  24576        # 4.17% of the 589,824 entries of the matrix

Legend: R LoRA rank, I flattened input axes, O flattened output axes, N layers.
"""
from __future__ import annotations

import math
import re
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ptlm_jax import config_lib

LORA = 'lora'
_ACTION = re.compile(r'train|freeze|lr\*[0-9.eE+-]+')
_LAYER = re.compile(r'^layers_(\d+)$')
_EMBEDDINGS = re.compile(r'(^|/)(token_embed|position_embed|type_embed|embed_norm)/')
_RELPOS = re.compile(r'(^|/)relpos/')
_HEAD = r'^head/|(^|/)pooler/'
METHOD_RULES = {
    'none': [],
    'lora': [(r'^lora/', 'train'), (_HEAD, 'train')],
    'prefix': [(r'/prefix/', 'train'), (_HEAD, 'train')],
    'adapter': [(r'_adapter/', 'train'), (r'norm[^/]*/[^/]+$', 'train'), (_HEAD, 'train')],
}


# ---------------------------------------------------------------------------
# Paths and partitions.

def flatten(tree) -> dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x} (boxed leaves stay whole)."""
  return flax.traverse_util.flatten_dict(tree, sep='/')


def unflatten(flat: dict[str, Any]) -> dict:
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def partition(tree, mask) -> tuple[dict, dict]:
  """(leaves where mask is True, the others), two trees with the nesting of `tree`.

  >>> partition({'a': 1, 'b': {'c': 2}}, {'a': True, 'b': {'c': False}})
  ({'a': 1}, {'b': {'c': 2}})
  """
  flat, keep = flatten(tree), flatten(mask)
  return (unflatten({k: v for k, v in flat.items() if keep[k]}),
          unflatten({k: v for k, v in flat.items() if not keep[k]}))


def combine(*trees) -> dict:
  """The union of trees with disjoint leaves (the inverse of `partition`)."""
  flat = {}
  for tree in trees:
    flat.update(flatten(tree))
  return unflatten(flat)


def select(tree, paths) -> dict:
  """The subtree of the leaves whose paths are in `paths`."""
  return unflatten({k: v for k, v in flatten(tree).items() if k in paths})


# ---------------------------------------------------------------------------
# Labels.

def parse_rules(text: str) -> list[tuple[str, str]]:
  """'regex=action;...' -> [(regex, action)]; ConfigError naming a bad part.

  >>> parse_rules('layers_[01]/=freeze; embed=lr*0.1')
  [('layers_[01]/', 'freeze'), ('embed', 'lr*0.1')]
  """
  rules = []
  for part in filter(None, (p.strip() for p in (text or '').split(';'))):
    pattern, sep, action = part.rpartition('=')
    pattern, action = pattern.strip(), action.strip()
    if not sep or not pattern or not _ACTION.fullmatch(action):
      raise config_lib.ConfigError('peft.rules', part, "'regex=action' with action train, "
                                   "freeze or lr*X, rules separated by ';'")
    try:
      re.compile(pattern)
    except re.error as e:
      raise config_lib.ConfigError('peft.rules', pattern, f'a valid regex ({e})') from None
    rules.append((pattern, action))
  return rules


def _first_match(rules, path: str) -> str | None:
  return next((action for pattern, action in rules if re.search(pattern, path)), None)


def _layer_of(path: str) -> tuple[str, int | None] | None:
  """(stack path, layer index or None when scanned) of a leaf inside a layer stack.

  The 'lora/' prefix is dropped, so LoRA factors share their kernel's layer; T5's
  relative-position table belongs to layer 0 of its stack.
  """
  parts = path.split('/')
  if parts[0] == LORA:
    parts = parts[1:]
  for i, part in enumerate(parts):
    if (m := _LAYER.match(part)):
      return '/'.join(parts[:i]), int(m.group(1))
    if part == 'layers':
      return '/'.join(parts[:i]), None
    if part == 'relpos':
      return '/'.join(parts[:i]), 0
  return None


def _stack_sizes(flat: dict[str, Any]) -> dict[str, int]:
  sizes: dict[str, int] = {}
  for path, leaf in flat.items():
    found = _layer_of(path)
    if found and not _RELPOS.search(path):
      stack, index = found
      n = np.shape(_value(leaf))[0] if index is None else index + 1
      sizes[stack] = max(sizes.get(stack, 0), n)
  return sizes


def _value(leaf):
  return leaf.value if isinstance(leaf, nn.LogicallyPartitioned) else leaf


def _factor(path: str, leaf, peft_config, rules, sizes) -> float | np.ndarray:
  """The lr factor of one leaf (0 = frozen), or one per layer for a scanned leaf."""
  f = peft_config
  action = _first_match(rules, path)
  layer = _layer_of(path)
  if action is None:
    if f.freeze_embeddings and _EMBEDDINGS.search(path):
      action = 'freeze'
    elif f.method != 'none':
      action = _first_match(METHOD_RULES[f.method], path) or 'freeze'
    else:
      action = 'train'
    if f.freeze_layers and layer and action != 'freeze':
      stack, index = layer
      if index is None:  # scanned: rows 0..k-1 of the layer axis
        n = sizes[stack]
        factor = 1.0 if action == 'train' else float(action[3:])
        return _llrd(np.where(np.arange(n) < f.freeze_layers, 0.0, factor), path, f, sizes)
      if index < f.freeze_layers:
        action = 'freeze'
  if action == 'freeze':
    return 0.0
  return _llrd(1.0 if action == 'train' else float(action[3:]), path, f, sizes)


def _llrd(factor, path: str, peft_config, sizes):
  decay = peft_config.layerwise_lr_decay
  if decay == 1.0:
    return factor
  layer = _layer_of(path)
  if _EMBEDDINGS.search(path):
    depth = max(sizes.values(), default=0) + 1
  elif layer is None:
    depth = 0
  else:
    stack, index = layer
    n = sizes[stack]
    depth = n - np.arange(n) if index is None else n - index
  return factor * decay ** np.asarray(depth, np.float64)


def _label(factor) -> str:
  factor = np.asarray(factor, np.float64)
  if factor.ndim and np.all(factor == factor[0]):
    factor = factor[0]
  if factor.ndim == 0:
    value = float(factor)
    return 'freeze' if value == 0.0 else 'train' if value == 1.0 else f'lr*{value!r}'
  if not np.any(factor):
    return 'freeze'
  return 'lr*' + ','.join(repr(float(x)) for x in factor)


def param_labels(params, peft_config) -> dict:
  """A tree like `params` of 'train' | 'freeze' | 'lr*X' | 'lr*X0,...' (module docstring).

  >>> param_labels({'embed': {'token_embed': {'embedding': w}},
  ...               'encoder': {'layers_0': {'k': w}, 'layers_1': {'k': w}}},
  ...              ConfigDict(dict(..., freeze_layers=1, layerwise_lr_decay=0.5)))
  {'embed': {'token_embed': {'embedding': 'lr*0.125'}},
   'encoder': {'layers_0': {'k': 'freeze'}, 'layers_1': {'k': 'lr*0.5'}}}
  """
  flat = flatten(params)
  rules, sizes = parse_rules(peft_config.rules), _stack_sizes(flat)
  return unflatten({path: _label(_factor(path, leaf, peft_config, rules, sizes))
                    for path, leaf in flat.items()})


def trainable_mask(labels) -> dict:
  """True for every leaf whose label is not 'freeze' (those are differentiated)."""
  return jax.tree.map(lambda label: label != 'freeze', labels)


# ---------------------------------------------------------------------------
# LoRA.

def lora_scale(peft_config) -> float:
  return float(peft_config.lora_alpha) / float(peft_config.lora_rank)


def _lora_axes(path: str, leaf) -> tuple[int, int]:
  """(leading layer axes, input axes) of a kernel, from its logical axis names.

  A kernel whose last axis is 'embed' maps everything before it to d_model (e.g. the
  attention output H x K -> D); any other kernel maps its first axis (D -> H x K, D -> F).
  Unboxed leaves: no layer axis unless the path is scanned, one input axis.
  """
  names = leaf.names if isinstance(leaf, nn.LogicallyPartitioned) else None
  value = _value(leaf)
  lead = (1 if names[0] == 'layers' else 0) if names else int('/layers/' in f'/{path}/')
  rest = value.ndim - lead
  if rest < 2:
    raise config_lib.ConfigError('peft.lora_targets', path,
                                 'patterns matching kernels (>= 2 axes besides the layer axis)')
  inputs = rest - 1 if names and names[-1] == 'embed' else 1
  return lead, inputs


def _box(value, names):
  return nn.LogicallyPartitioned(value, names) if names is not None else value


def init_lora(params, peft_config, rng) -> dict:
  """The LoRA tree (without the 'lora' key) for `params` (boxed leaves keep their names).

  ConfigError when `peft.lora_targets` matches no parameter.
  """
  pattern, rank = peft_config.lora_targets, peft_config.lora_rank
  targets = {p: leaf for p, leaf in flatten(params).items() if re.search(pattern, p)}
  if not targets:
    raise config_lib.ConfigError('peft.lora_targets', pattern,
                                 'a regex matching some kernels, e.g. (query|value)/kernel$')
  lora = {}
  for i, (path, leaf) in enumerate(sorted(targets.items())):
    lead, inputs = _lora_axes(path, leaf)
    value = _value(leaf)
    shape, split = value.shape, lead + inputs
    fan_in = math.prod(shape[lead:split])
    bound = 1.0 / math.sqrt(fan_in)
    a = jax.random.uniform(jax.random.fold_in(rng, i), shape[:split] + (rank,), value.dtype,
                           -bound, bound)
    b = jnp.zeros(shape[:lead] + (rank,) + shape[split:], value.dtype)
    names = leaf.names if isinstance(leaf, nn.LogicallyPartitioned) else None
    lora[f'{path}/a'] = _box(a, None if names is None else names[:split] + (None,))
    lora[f'{path}/b'] = _box(b, None if names is None else names[:lead] + (None,) + names[split:])
  return unflatten(lora)


def lora_delta(a, b, kernel_shape) -> jax.Array:
  """a . b in the kernel's shape, in float32 (a scanned pair is multiplied layer by layer)."""
  lead = a.ndim + b.ndim - 2 - len(kernel_shape)
  batch = a.shape[:lead]
  a_NxIxR = a.reshape(batch + (-1, a.shape[-1])).astype(jnp.float32)
  b_NxRxO = b.reshape(batch + (b.shape[lead], -1)).astype(jnp.float32)
  return jnp.matmul(a_NxIxR, b_NxRxO).reshape(kernel_shape)


def _apply_lora(params, lora, scale: float, sign: float) -> dict:
  flat = flatten(params)
  for path, pair in flatten_pairs(lora).items():
    if path not in flat:
      raise KeyError(f'LoRA factors for {path}, which the params do not have')
    w = flat[path]
    flat[path] = (w.astype(jnp.float32) + sign * scale * lora_delta(pair['a'], pair['b'], w.shape)
                  ).astype(w.dtype)
  return unflatten(flat)


def flatten_pairs(lora) -> dict[str, dict]:
  """{'<kernel path>': {'a': ..., 'b': ...}} of a LoRA tree."""
  pairs: dict[str, dict] = {}
  for path, value in flatten(lora).items():
    kernel, _, factor = path.rpartition('/')
    pairs.setdefault(kernel, {})[factor] = value
  return pairs


def merge(params, lora, scale: float) -> dict:
  """params with W + scale * a.b at every LoRA pair (float32 sum, cast back to W's dtype)."""
  return _apply_lora(params, lora, scale, 1.0)


def unmerge(params, lora, scale: float) -> dict:
  """The inverse of `merge`: W - scale * a.b (exact up to float rounding)."""
  return _apply_lora(params, lora, scale, -1.0)


def merge_lora(params, peft_config) -> dict:
  """Plain model params from params holding a 'lora' tree (unchanged without one)."""
  if LORA not in params:
    return params
  base = {k: v for k, v in params.items() if k != LORA}
  return merge(base, params[LORA], lora_scale(peft_config))


class LoraModel:
  """A Flax module with LoRA factors beside its params, merged on every `apply`.

  `init` returns the module's variables plus params['lora'] (boxed like the module's
  params, so mesh shardings follow); `apply` merges W + (alpha/r) a.b and calls the
  module, so gradients reach the factors through the merged kernels.  Anything else
  (`config`, methods) is the wrapped module's.
  """

  def __init__(self, module: nn.Module, peft_config):
    self.module, self.peft_config = module, peft_config
    self.scale = lora_scale(peft_config)

  def __getattr__(self, name):
    if name in ('module', 'peft_config', 'scale'):  # not set yet (e.g. while unpickling)
      raise AttributeError(name)
    return getattr(self.module, name)

  def init(self, rngs, *args, **kwargs):
    rng = rngs['params'] if isinstance(rngs, dict) else rngs
    variables = self.module.init(rngs, *args, **kwargs)
    if LORA in variables['params']:
      raise ValueError("the model already has a top-level param named 'lora'")
    lora = init_lora(variables['params'], self.peft_config, jax.random.fold_in(rng, 0x10A))
    return {**variables, 'params': {**variables['params'], LORA: lora}}

  def apply(self, variables, *args, **kwargs):
    params = merge_lora(variables['params'], self.peft_config)
    return self.module.apply({**variables, 'params': params}, *args, **kwargs)


def wrap(model, peft_config):
  """The model the loop trains: `LoraModel` for peft.method=lora, else the model itself."""
  return LoraModel(model, peft_config) if peft_config.method == 'lora' else model


def inference_params(params, peft_config) -> dict:
  """What the plain model applies: LoRA merged in; other methods' params as they are."""
  return merge_lora(params, peft_config)


# ---------------------------------------------------------------------------
# The parameter report.

_GROUPS = (('lora', r'^lora/'), ('prefix', r'/prefix/'), ('adapter', r'_adapter/'),
           ('head', _HEAD), ('embeddings', _EMBEDDINGS.pattern),
           ('norms', r'norm[^/]*/[^/]+$'), ('layers', r'(^|/)(layers|layers_\d+|relpos)/'))


def _group(path: str) -> str:
  return next((name for name, pattern in _GROUPS if re.search(pattern, path)), 'other')


def _trainable_size(label: str, shape) -> int:
  size = math.prod(shape)
  if label == 'freeze':
    return 0
  factors = label[3:].split(',') if label.startswith('lr*') else ['1']
  if len(factors) == 1:
    return size
  live = sum(1 for x in factors if float(x) != 0.0)
  return size // shape[0] * live


def report(params, labels) -> dict:
  """Total / trainable parameter counts, overall and per group (lora, prefix, adapter,
  head, embeddings, norms, layers, other), for params (arrays or shapes) and labels."""
  flat, flat_labels = flatten(params), flatten(labels)
  groups: dict[str, dict[str, int]] = {}
  for path, leaf in flat.items():
    shape = tuple(np.shape(_value(leaf)))
    g = groups.setdefault(_group(path), {'total': 0, 'trainable': 0})
    g['total'] += math.prod(shape)
    g['trainable'] += _trainable_size(flat_labels[path], shape)
  total = sum(g['total'] for g in groups.values())
  trainable = sum(g['trainable'] for g in groups.values())
  return {'total': total, 'trainable': trainable,
          'trainable_percent': 100.0 * trainable / max(total, 1),
          'frozen': total - trainable,
          'labels': sorted(set(flat_labels.values())),
          'groups': {name: groups[name] for name, _ in _GROUPS + (('other', ''),)
                     if name in groups}}


def format_report(rep: dict) -> str:
  lines = [f"parameters: {rep['total']:,} total, {rep['trainable']:,} trainable "
           f"({rep['trainable_percent']:.2f}%)"]
  for name, g in rep['groups'].items():
    lines.append(f"  {name:<11}{g['total']:>14,} total {g['trainable']:>14,} trainable")
  return '\n'.join(lines)


def lora_example(d_in: int = 768, d_out: int = 768, rank: int = 16,
                 model_params: int = 340_000_000) -> dict:
  """The handout's example: LoRA on one d_in x d_out matrix, against the matrix and a model.

  >>> lora_example()   # 768 x 768, r = 16
  {'matrix_params': 589824, 'lora_params': 24576, 'percent_of_matrix': 4.1666...,
   'percent_of_model': 0.00722...}
  """
  lora = rank * (d_in + d_out)
  return {'matrix_params': d_in * d_out, 'lora_params': lora,
          'percent_of_matrix': 100.0 * lora / (d_in * d_out),
          'percent_of_model': 100.0 * lora / model_params}
