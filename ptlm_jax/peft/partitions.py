r"""Parameter partitions for fine-tuning: which params train, freeze or get another rate.

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

On the command line (quote the rules: they hold ';' and '*'):
  --config.peft.rules='layers_[01]/=freeze;token_embed=lr*0.1' --config.peft.freeze_layers=2

LoRA (lora.py).  With `peft.method=lora` the loop trains `wrap(model)`, a
`lora.LoraModel` whose params carry the factors under 'lora'; `inference_params` merges
them back into the kernels.

Report.  `report(params, labels)` counts total and trainable parameters per group (the
loop prints it and writes `<workdir>/params_report.json`); the CLI prints it for a config
without training anything:

  python -m ptlm_jax.main.peft_report --config=configs/bert.py:base --config.peft.method=lora
"""
from __future__ import annotations

import math
import re
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from ptlm_jax import errors
from ptlm_jax.peft import lora

LORA = lora.LORA
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

flatten, unflatten = lora.flatten, lora.unflatten  # 'layers_0/mlp/wi/kernel' paths


def partition(tree, mask) -> tuple[dict, dict]:
  """(leaves where mask is True, the others), two trees with the nesting of `tree`.

  >>> partition({'a': 1, 'b': {'c': 2}}, {'a': True, 'b': {'c': False}})
  ({'a': 1}, {'b': {'c': 2}})
  """
  flat, keep = flatten(tree), flatten(mask)
  return (unflatten({k: v for k, v in flat.items() if keep[k]}),
          unflatten({k: v for k, v in flat.items() if not keep[k]}))


def combine(*trees) -> dict:
  """The union of trees (the inverse of `partition`); a leaf in several: the last one wins."""
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
    if not sep or not pattern or not _ACTION.fullmatch(action) or not _is_rate(action):
      raise errors.ConfigError('peft.rules', part, "'regex=action' with action train, "
                                   "freeze or lr*X, rules separated by ';'")
    try:
      re.compile(pattern)
    except re.error as e:
      raise errors.ConfigError('peft.rules', pattern, f'a valid regex ({e})') from None
    rules.append((pattern, action))
  return rules


def _is_rate(action: str) -> bool:
  if not action.startswith('lr*'):
    return True
  try:
    return float(action[3:]) >= 0.0
  except ValueError:
    return False


def check_config(peft_config) -> None:
  """ConfigError for bad `peft.rules` or `peft.lora_targets` syntax (before anything runs)."""
  parse_rules(peft_config.rules)
  try:
    re.compile(peft_config.lora_targets)
  except re.error as e:
    raise errors.ConfigError('peft.lora_targets', peft_config.lora_targets,
                                 f'a valid regex ({e})') from None


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
# Methods in the loop.

def wrap(model, peft_config):
  """The model the loop trains: `lora.LoraModel` for peft.method=lora, else the model itself."""
  return lora.LoraModel(model, peft_config) if peft_config.method == 'lora' else model


def inference_params(params, peft_config) -> dict:
  """What the plain model applies: LoRA merged in; other methods' params as they are."""
  return lora.merged(params, peft_config)


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


# ---------------------------------------------------------------------------
# CLI: the report of a config without training anything.

def config_report(config) -> dict:
  """The parameter report of `config`'s model and peft settings (shapes only, no init)."""
  from ptlm_jax import models  # pylint: disable=g-import-not-at-top
  model = wrap(models.build_model(config.model), config.peft)
  boxed = jax.eval_shape(lambda rng: model.init(
      rng, **models.dummy_inputs(config.model, length=2))['params'], jax.random.key(0))
  params = nn.unbox(boxed)
  return report(params, param_labels(params, config.peft))
