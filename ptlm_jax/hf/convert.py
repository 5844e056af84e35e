r"""Load and write HF checkpoints (config.json + safetensors) and ptlm_jax model dirs.

No transformers, no torch, no pickle: tensors are read with the safetensors numpy API and
mapped by `hf_mapping`.  Supported: BertModel, BertForMaskedLM (and BertForPreTraining,
whose NSP head is dropped), BertForSequenceClassification, GPT2LMHeadModel (GPT2Model),
T5ForConditionalGeneration v1.0 and v1.1.

  from ptlm_jax.hf import convert as hf_import
  model, params, model_config = hf_import.from_pretrained('/ckpt/bert-base-uncased')
  logits = model.apply({'params': params}, tokens=..., segment_ids=..., positions=...)

`from_pretrained` also takes a hub name already in the local HF cache
(~/.cache/huggingface/hub; nothing is downloaded) and ptlm_jax model dirs, and runtime
overrides: from_pretrained(path, dtype='bfloat16', scan_layers=True).

A ptlm_jax model dir is `config.json` ({"format": "ptlm_jax.model", "model": {...}}) plus
`params/`, an orbax StandardCheckpointer checkpoint of the (unboxed) params.  The CLI
converts either way; the direction follows from what --input holds:

  python -m ptlm_jax.main.hf --input=/ckpt/gpt2 --output=/models/gpt2
  python -m ptlm_jax.main.hf --input=/models/gpt2 --output=/ckpt/gpt2-again
"""
from __future__ import annotations

import glob
import json
import os

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ptlm_jax import config_lib, errors, models
from ptlm_jax.hf import mapping as hf_mapping
from ptlm_jax.models import stack

UserError = errors.UserError
MODEL_FORMAT = 'ptlm_jax.model'
# Fields a caller may change when loading: they leave the params' shapes alone.
RUNTIME_FIELDS = ('dtype', 'scan_layers', 'remat', 'attention_impl', 'dropout_rate',
                  'attention_dropout_rate')
_BACKBONE_PREFIX = {'bert': 'bert.', 'gpt': 'transformer.', 't5': ''}


# ---------------------------------------------------------------------------
# Tensors <-> params.

def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of an HF dir (single file or sharded index), as numpy arrays."""
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  single, index = (os.path.join(path, 'model.safetensors'),
                   os.path.join(path, 'model.safetensors.index.json'))
  if os.path.exists(single):
    files = [single]
  elif os.path.exists(index):
    with open(index) as f:
      files = sorted({os.path.join(path, v) for v in json.load(f)['weight_map'].values()})
  else:
    found = sorted(os.listdir(path))
    raise UserError(f'{path}: no model.safetensors (or index) found, only {found}; pickled '
                    '.bin checkpoints are never loaded: convert them to safetensors first')
  tensors = {}
  for file in files:
    try:
      tensors.update(load_file(file))
    except (SafetensorError, OSError, ValueError) as e:
      raise UserError(f'{file}: not a readable safetensors file ({e})') from None
  return tensors


def _unrolled(model_config) -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict(model_config.to_dict())
  m.scan_layers = False
  return m


def _lookup(tensors: dict, rule: hf_mapping.Rule, prefix: str):
  names = [rule.hf]
  for ours, old in (('.weight', '.gamma'), ('.bias', '.beta')):  # pre-2019 LayerNorm names
    if rule.hf.endswith(ours) and 'LayerNorm' in rule.hf:
      names.append(rule.hf[:-len(ours)] + old)
  prefixes = [prefix, ''] if rule.prefixed and prefix else ['']
  for p in prefixes:
    for name in names:
      if p + name in tensors:
        return p + name
  return None


def params_from_hf(tensors: dict, model_config, source: str = 'model.safetensors') -> dict:
  """numpy params of `model_config`'s module from HF tensors; names every bad tensor."""
  abstract = flax.traverse_util.flatten_dict(
      nn.unbox(models.abstract_params(_unrolled(model_config))))
  rules = [r for r in hf_mapping.rules_for(model_config) if r.path in abstract]
  missing_rules = set(abstract) - {r.path for r in rules}
  assert not missing_rules, f'no HF rule for {sorted(missing_rules)}'
  prefix = _BACKBONE_PREFIX[model_config.family]
  flat, used = {}, set()
  for rule in rules:
    shape = abstract[rule.path].shape
    name = _lookup(tensors, rule, prefix)
    if name is None:
      raise UserError(f"{source}: tensor '{prefix if rule.prefixed else ''}{rule.hf}' is missing "
                      f"(needed for param {'/'.join(rule.path)} of shape {shape})")
    expected = hf_mapping.hf_shape(rule, shape)
    if tuple(tensors[name].shape) != expected:
      raise UserError(f"{source}: tensor '{name}' has shape {tuple(tensors[name].shape)}, "
                      f"expected {expected} (param {'/'.join(rule.path)})")
    flat[rule.path] = hf_mapping.to_ours(rule, np.asarray(tensors[name]), shape)
    used.add(name)
  unused = sorted(n for n in set(tensors) - used if not n.endswith(hf_mapping.IGNORED_SUFFIXES))
  if unused:
    logging.warning('%s: %d tensors not used: %s', source, len(unused), unused[:8])
  params = flax.traverse_util.unflatten_dict(flat)
  return stack.stack_layers(params) if model_config.scan_layers else params


def params_to_hf(params: dict, model_config) -> dict[str, np.ndarray]:
  """HF tensors (names of `hf_mapping.architecture_of(model_config)`) for our params."""
  arch = hf_mapping.architecture_of(model_config)
  prefix = hf_mapping.ARCHITECTURES[arch][2]
  params = jax.device_get(nn.unbox(params))
  if model_config.scan_layers:
    params = stack.unstack_layers(params)
  flat = flax.traverse_util.flatten_dict(params)
  parts: dict[str, list] = {}
  for rule in hf_mapping.rules_for(model_config):
    if rule.path in flat:
      name = (prefix if rule.prefixed else '') + rule.hf
      parts.setdefault(name, [None] * rule.part[1])[rule.part[0]] = hf_mapping.to_hf(
          rule, flat[rule.path])
  return {name: np.concatenate(p, axis=-1) if len(p) > 1 else p[0] for name, p in parts.items()}


# ---------------------------------------------------------------------------
# Directories.

def load_hf(path: str) -> tuple[ml_collections.ConfigDict, dict]:
  """(model config, numpy params) of an HF directory."""
  config_path = os.path.join(path, 'config.json')
  if not os.path.exists(config_path):
    raise UserError(f'{path}: no config.json (expected an HF checkpoint directory)')
  try:
    with open(config_path) as f:
      hf_config = json.load(f)
  except ValueError as e:
    raise UserError(f'{config_path}: not valid JSON ({e})') from None
  hf_mapping.architecture_from_hf(hf_config)  # fail before reading gigabytes
  tensors = read_safetensors(path)
  model_config = hf_mapping.model_config_from_hf(hf_config, tuple(tensors))
  return model_config, params_from_hf(tensors, model_config, f'{path}/model.safetensors')


def save_hf(path: str, params: dict, model_config) -> None:
  """Writes config.json + model.safetensors that HF `from_pretrained` loads."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  hf_config = hf_mapping.hf_config_from_model(model_config)
  os.makedirs(path, exist_ok=True)
  save_file(params_to_hf(params, model_config), os.path.join(path, 'model.safetensors'),
            metadata={'format': 'pt'})
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)


def save_model_dir(path: str, params: dict, model_config) -> None:
  """A ptlm_jax model dir: config.json (the model config) + params/ (orbax)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(path)
  if os.path.exists(os.path.join(path, 'params')):
    raise UserError(f'{path}/params already exists: choose an empty --output directory')
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump({'format': MODEL_FORMAT, 'model': model_config.to_dict()}, f, indent=2)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(path, 'params'), jax.tree.map(np.asarray, nn.unbox(params)))
  checkpointer.wait_until_finished()


def load_model_dir(path: str) -> tuple[ml_collections.ConfigDict, dict]:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(path)
  with open(os.path.join(path, 'config.json')) as f:
    stored = json.load(f)
  model_config = config_lib.base_config(stored['model']['family'], 'tiny').model
  unknown = set(stored['model']) - set(model_config)
  if unknown:
    raise UserError(f'{path}/config.json: unknown model fields {sorted(unknown)}')
  model_config.update(stored['model'])
  config_lib.validate_model(model_config)
  abstract = nn.unbox(models.abstract_params(model_config))
  params = ocp.StandardCheckpointer().restore(os.path.join(path, 'params'), abstract)
  return model_config, params


def _is_model_dir(path: str) -> bool:
  try:
    with open(os.path.join(path, 'config.json')) as f:
      return json.load(f).get('format') == MODEL_FORMAT
  except (OSError, ValueError):
    return False


def _resolve(path: str) -> str:
  """A directory, or a hub name found in the local HF cache (never downloads)."""
  if os.path.isdir(path):
    return path
  cache = os.environ.get('HF_HUB_CACHE') or os.path.join(
      os.environ.get('HF_HOME', os.path.expanduser('~/.cache/huggingface')), 'hub')
  snapshots = sorted(glob.glob(os.path.join(cache, 'models--' + path.replace('/', '--'),
                                            'snapshots', '*', 'config.json')))
  if snapshots:
    return os.path.dirname(snapshots[-1])
  raise UserError(f'{path!r} is not a directory and not in the local HF cache ({cache}); '
                  'expected an HF checkpoint dir (config.json + model.safetensors) or a '
                  'ptlm_jax model dir; nothing is downloaded')


def resolve_dir(path: str) -> str:
  """The directory of `path`: itself, or a hub name's snapshot in the local HF cache."""
  return _resolve(path)


def from_pretrained(path: str, **overrides):
  """(module, params, model config) from an HF dir, a cached hub name or a ptlm_jax dir.

  `overrides` may set runtime fields of the model config (RUNTIME_FIELDS), e.g.
  dtype='bfloat16' or scan_layers=True.  Params are unboxed jax arrays.
  """
  path = _resolve(path)
  model_config, params = (load_model_dir(path) if _is_model_dir(path) else load_hf(path))
  model_config, params = apply_runtime_overrides(model_config, params, **overrides)
  params = jax.tree.map(jnp.asarray, params)
  return models.build_model(model_config), params, model_config


def apply_runtime_overrides(model_config, params, **overrides):
  """Sets RUNTIME_FIELDS of a loaded model config; (un)stacks layers if scan_layers changes."""
  bad = sorted(set(overrides) - set(RUNTIME_FIELDS))
  if bad:
    raise UserError(f'from_pretrained: cannot override {bad}: expected fields of {RUNTIME_FIELDS}')
  was_scanned = model_config.scan_layers
  model_config.update(overrides)
  config_lib.validate_model(model_config)
  if was_scanned != model_config.scan_layers:
    params = (stack.stack_layers if model_config.scan_layers else stack.unstack_layers)(params)
  return model_config, params


def convert(input_path: str, output_path: str) -> str:
  """Converts HF -> ptlm_jax model dir or back; returns a one-line summary."""
  _, params, model_config = from_pretrained(input_path)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  if _is_model_dir(_resolve(input_path)):
    save_hf(output_path, params, model_config)
    kind = f'HF {hf_mapping.architecture_of(model_config)}'
  else:
    save_model_dir(output_path, params, model_config)
    kind = 'ptlm_jax model dir'
  return (f'wrote {kind} to {output_path}: {model_config.family}, head={model_config.head}, '
          f'{count:,} params')
