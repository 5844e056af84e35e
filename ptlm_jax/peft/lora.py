"""LoRA (Hu et al. 2021) as plain-dict functions, and a wrapper that merges inside `apply`.

The factors live in their own tree, kept under the key 'lora' beside the model's params.
For a kernel W with input axes I and output axes O (a query's D x H x K: I = (D,),
O = (H, K); the attention output's H x K x D: I = (H, K)), `<path of W>/a` is I x r and
`<path of W>/b` is r x O, and the model computes with W + (alpha / r) a.b.  `a` starts
Kaiming-uniform, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as HF peft's
`kaiming_uniform_(a=sqrt(5))`; `b` starts at zero, so training starts exactly from the
base model.  Scanned kernels keep their leading layer axis on both factors.

The model never changes.  `LoraModel.apply` computes y = x W + (alpha / r) (x a) b in every
adapted projection at run time (the branch is added to the output of each adapted
`layers.DenseGeneral` through a flax method interceptor; the factors ride in the params
tree beside their kernel, so `nn.scan` hands each layer its own slice), so every family
works and a step never builds W + a.b: at BERT-base / GPT-2 shapes with rank 8 the branch
costs 2 r (I + O) FLOPs per token and adapted matrix instead of an I x O merge, and the
frozen W's gradient is never formed.  The merged form is for export and inference
(`merged`); the two agree to float rounding (tests/test_peft_lora.py).

  model = lora.LoraModel(models.build_model(config.model), config.peft)
  variables = model.init(rng, **inputs)        # {'params': {..., 'lora': {...}}}
  plain = lora.merged(params, config.peft)     # W + (alpha / r) a.b, no 'lora' key
  back = lora.unmerge(plain, params['lora'], lora.scale(config.peft))  # W again (to rounding)

Which kernels: `peft.lora_targets`, a regex searched in the param paths; the default
'(query|value)/kernel$' is HF peft's q and v (T5: self- and cross-attention).

Legend: N layers (scanned), I flattened input axes, O flattened output axes, R rank.
"""
from __future__ import annotations

import math
import re

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from ptlm_jax import errors

LORA = 'lora'  # the key of the factors' tree in the params


def flatten(tree) -> dict:
  """{'a': {'b': x}} -> {'a/b': x}: parameter paths as PEFT rules and checkpoints name them."""
  return flax.traverse_util.flatten_dict(tree, sep='/')


def unflatten(flat: dict) -> dict:
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def scale(peft_config) -> float:
  """alpha / r."""
  return float(peft_config.lora_alpha) / float(peft_config.lora_rank)


def _axes(path: str, leaf) -> tuple[int, int]:
  """(leading layer axes, input axes) of a kernel, from its logical axis names.

  A kernel whose last axis is 'embed' maps everything before it to d_model (the attention
  output H x K -> D, an MLP's F -> D); any other kernel maps its first axis (D -> H x K,
  D -> F).  Unboxed leaves: a layer axis when the path is scanned, one input axis.
  """
  names = leaf.names if isinstance(leaf, nn.LogicallyPartitioned) else None
  value = leaf.value if names is not None else leaf
  lead = (1 if names[0] == 'layers' else 0) if names else int('/layers/' in f'/{path}/')
  rest = value.ndim - lead
  if rest < 2:
    raise errors.ConfigError('peft.lora_targets', path,
                                 'patterns matching kernels (>= 2 axes besides the layer axis)')
  return lead, (rest - 1 if names and names[-1] == 'embed' else 1)


def init_factors(params, peft_config, rng) -> dict:
  """The factor tree for the kernels of `params` that `peft.lora_targets` matches.

  Boxed kernels (nn.LogicallyPartitioned) give boxed factors: a keeps the input axes'
  names, b the output axes', the rank axis is unnamed (replicated).  Only shapes and
  dtypes of `params` are read, so abstract params work.  ConfigError when nothing matches.
  """
  pattern, rank = peft_config.lora_targets, peft_config.lora_rank
  targets = {p: leaf for p, leaf in flatten(params).items() if re.search(pattern, p)}
  if not targets:
    raise errors.ConfigError('peft.lora_targets', pattern,
                                 'a regex matching some kernels, e.g. (query|value)/kernel$')
  factors = {}
  for i, (path, leaf) in enumerate(sorted(targets.items())):
    lead, inputs = _axes(path, leaf)
    names = leaf.names if isinstance(leaf, nn.LogicallyPartitioned) else None
    value = leaf.value if names is not None else leaf
    shape, split = value.shape, lead + inputs
    bound = 1.0 / math.sqrt(math.prod(shape[lead:split]))
    a = jax.random.uniform(jax.random.fold_in(rng, i), shape[:split] + (rank,), value.dtype,
                           -bound, bound)
    b = jnp.zeros(shape[:lead] + (rank,) + shape[split:], value.dtype)
    if names is not None:
      a = nn.LogicallyPartitioned(a, names[:split] + (None,))
      b = nn.LogicallyPartitioned(b, names[:lead] + (None,) + names[split:])
    factors[f'{path}/a'], factors[f'{path}/b'] = a, b
  return unflatten(factors)


def pairs(factors) -> dict[str, dict]:
  """{'<kernel path>': {'a': ..., 'b': ...}} of a factor tree."""
  out: dict[str, dict] = {}
  for path, value in flatten(factors).items():
    kernel, _, name = path.rpartition('/')
    out.setdefault(kernel, {})[name] = value
  return out


def delta(a, b, kernel_shape) -> jax.Array:
  """a.b in the kernel's shape, in float32 (scanned factors multiply layer by layer)."""
  lead = a.ndim + b.ndim - 2 - len(kernel_shape)
  layers = a.shape[:lead]
  a_NxIxR = a.reshape(layers + (-1, a.shape[-1])).astype(jnp.float32)
  b_NxRxO = b.reshape(layers + (b.shape[lead], -1)).astype(jnp.float32)
  return jnp.matmul(a_NxIxR, b_NxRxO).reshape(kernel_shape)


def _add(params, factors, factor: float) -> dict:
  flat = flatten(params)
  for path, pair in pairs(factors).items():
    if path not in flat:
      raise KeyError(f'LoRA factors for {path}, which the params do not have')
    w = flat[path]
    flat[path] = (w.astype(jnp.float32) + factor * delta(pair['a'], pair['b'], w.shape)
                  ).astype(w.dtype)
  return unflatten(flat)


def merge(params, factors, lora_scale: float) -> dict:
  """params with W + lora_scale * a.b at every pair (a float32 sum, cast back to W's dtype)."""
  return _add(params, factors, lora_scale)


def unmerge(params, factors, lora_scale: float) -> dict:
  """The inverse of `merge`: W - lora_scale * a.b (exact up to float rounding)."""
  return _add(params, factors, -lora_scale)


def merged(params, peft_config) -> dict:
  """Plain model params from params holding a 'lora' tree (unchanged without one)."""
  if LORA not in params:
    return params
  base = {k: v for k, v in params.items() if k != LORA}
  return merge(base, params[LORA], scale(peft_config))


_A, _B = 'lora_a', 'lora_b'  # the factors' names beside a kernel while `apply` runs


def _with_factors_beside_kernels(params, factors) -> dict:
  """params with `<module>/lora_a|lora_b` next to each adapted `<module>/kernel`."""
  flat = flatten(params)
  for path, pair in pairs(factors).items():
    if path not in flat:
      raise KeyError(f'LoRA factors for {path}, which the params do not have')
    module = path.rpartition('/')[0]
    flat[f'{module}/{_A}'], flat[f'{module}/{_B}'] = pair['a'], pair['b']
  return unflatten(flat)


def _branch_adder(lora_scale: float, seen: set):
  """A method interceptor: y + s (x a) b after each DenseGeneral holding factors."""
  from ptlm_jax.models import layers  # pylint: disable=g-import-not-at-top

  def add_branch(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    module = context.module
    if (context.method_name != '__call__' or not isinstance(module, layers.DenseGeneral)
        or not module.has_variable('params', _A)):
      return y
    seen.add(module.path)
    x, a, b = args[0], module.get_variable('params', _A), module.get_variable('params', _B)
    axis = tuple(i % x.ndim for i in module.axis)
    x_a = jax.lax.dot_general(x.astype(module.dtype), a.astype(module.dtype),
                              ((axis, tuple(range(len(axis)))), ((), ())))
    x_ab = jnp.tensordot(x_a, b.astype(module.dtype), axes=1)
    return y + (lora_scale * x_ab).astype(y.dtype)

  return add_branch


class LoraModel:
  """A Flax module with LoRA factors beside its params: x W + s (x a) b at run time.

  `init` returns the module's variables plus params['lora'] (boxed like the module's
  params, so mesh shardings follow); `apply` puts the factors beside their kernels and adds
  the low-rank branch to each adapted projection (module docstring), so gradients reach
  the factors without a merged kernel.  Everything else (`config`, methods such as
  'encode') is the wrapped module's.
  """

  def __init__(self, module: nn.Module, peft_config):
    self.module, self.peft_config = module, peft_config

  def __getattr__(self, name):
    if name in ('module', 'peft_config'):  # not set yet (e.g. while unpickling)
      raise AttributeError(name)
    return getattr(self.module, name)

  def init(self, rngs, *args, **kwargs):
    rng = rngs['params'] if isinstance(rngs, dict) else rngs
    variables = self.module.init(rngs, *args, **kwargs)
    if LORA in variables['params']:
      raise ValueError(f"the model already has a top-level param named '{LORA}'")
    factors = init_factors(variables['params'], self.peft_config, jax.random.fold_in(rng, 0x10A))
    return {**variables, 'params': {**variables['params'], LORA: factors}}

  def apply(self, variables, *args, **kwargs):
    params = variables['params']
    if LORA not in params:
      return self.module.apply(variables, *args, **kwargs)
    base = {k: v for k, v in params.items() if k != LORA}
    seen = set()
    with nn.intercept_methods(_branch_adder(scale(self.peft_config), seen)):
      out = self.module.apply({**variables, 'params': _with_factors_beside_kernels(
          base, params[LORA])}, *args, **kwargs)
    if not seen:  # a target outside every DenseGeneral would silently do nothing
      raise ValueError('LoRA factors were given, but no adapted projection ran')
    return out
