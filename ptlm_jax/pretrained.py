r"""Pretrained weights from anywhere: a training workdir, a ptlm_jax model dir or an HF dir.

  model, params, model_config = pretrained.from_pretrained('runs/gpt')        # training run
  model, params, model_config = pretrained.from_pretrained('/ckpt/bert-base-uncased')  # HF
  config = pretrained.run_config('runs/gpt')   # the whole config of a training run (or None)

A training workdir holds orbax checkpoints (`checkpoints/<step>/{state,data,config}`, see
checkpoint.py); only `state/params` of the chosen step is read (orbax partial restore), so
the optimizer state never reaches memory.  A PEFT run's checkpoints hold only its
trainable and new params plus a pointer to its base (`checkpoints/<step>/peft`:
init.source and the step read from it); `from_pretrained` rebuilds base + adapters from
the two and merges LoRA, so the caller always gets plain params of the plain model
(prefixes and adapters are part of the model config).  Anything else goes to
`models.hf_import.from_pretrained` (HF `config.json` + `model.safetensors`, or a model dir
written by its converter).

Initialisation (`config.init.source`, used by train.py on a fresh start):
  source = pretrained.load_source(config)           # host params of the source
  notes = pretrained.inherit_fields(config, source) # its architecture and tokenizer
  match = pretrained.match_params(abstract_params, source)
`inherit_fields` sets the model's shape fields (d_model, layers, vocab, ...) to the
source's, so `--config.init.source=DIR` alone is enough, and for a workdir source with
`data.tokenizer_path` unset, the source's tokenizer (its `data.tokenizer_path`, or the
file its corpus settings cached it under) with its `sp_*` fields: continued pretraining
on another corpus keeps the token ids.  `match_params` copies every param that matches
by path and shape (a family model's params drop into a task head's `backbone/...` and
back); params the source lacks (task heads, LoRA, prefixes, adapters) stay freshly
initialised; a task head (`head/...`) whose shape differs (another number of classes)
is replaced; any other shape difference is a UserError naming the param.

Merged export: a trained workdir (LoRA merged) as a model dir or HF dir:
  python -m ptlm_jax.pretrained --input=runs/gpt-lora --output=models/gpt-lora [--format=hf]
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ptlm_jax import config_lib, lora, peft

CHECKPOINTS = 'checkpoints'
PEFT_ITEM = 'peft'  # the checkpoint item with the base pointer of adapter-only checkpoints
# Model fields that fix the shapes of pretrained params: taken from init.source.
ARCHITECTURE_FIELDS = ('vocab_size', 'd_model', 'num_layers', 'num_decoder_layers', 'num_heads',
                       'head_dim', 'd_ff', 'max_len', 'type_vocab_size', 'activation',
                       'tie_embeddings', 'relative_buckets', 'relative_max_distance',
                       'layer_norm_eps')
TOKENIZER_FIELDS = ('sp_vocab_size', 'sp_model_type', 'sp_train_chars')
HEAD = 'head'


def is_workdir(path: str) -> bool:
  return os.path.isdir(os.path.join(os.path.expanduser(path), CHECKPOINTS))


def _steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, CHECKPOINTS)
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def latest_step(workdir: str, step: int | None = None) -> int:
  """`step` if the workdir has it, else its latest step; UserError when there is none."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  steps = _steps(workdir)
  if not steps:
    raise config_lib.UserError(f'{workdir}/{CHECKPOINTS} holds no finished checkpoint yet')
  if step is None:
    return steps[-1]
  if step not in steps:
    raise config_lib.UserError(f'{workdir}/{CHECKPOINTS} has no step {step} (it has {steps})')
  return step


def _step_dir(workdir: str, step: int | None) -> str:
  workdir = os.path.abspath(os.path.expanduser(workdir))
  return os.path.join(workdir, CHECKPOINTS, str(latest_step(workdir, step)))


def _with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A saved config over the current defaults (fields added since then get their default)."""
  family = saved.get('model', {}).get('family', 'gpt')
  merged = config_lib.base_config(family, 'tiny').to_dict()
  for group, fields in saved.items():
    if isinstance(fields, dict) and isinstance(merged.get(group), dict):
      merged[group].update(fields)
    else:
      merged[group] = fields
  return ml_collections.ConfigDict(merged)


def run_config(path: str, step: int | None = None) -> ml_collections.ConfigDict | None:
  """The full config a training workdir was trained with, or None for other directories."""
  if not is_workdir(path):
    return None
  config_path = os.path.join(_step_dir(path, step), 'config', 'metadata')
  if not os.path.exists(config_path):  # orbax's JsonCheckpointHandler file name
    raise config_lib.UserError(f'{config_path} is missing: not a complete ptlm_jax checkpoint')
  with open(config_path, encoding='utf-8') as f:
    return _with_defaults(json.load(f))


def peft_pointer(workdir: str, step: int | None = None) -> dict | None:
  """The base pointer of an adapter-only checkpoint ({'source', 'source_step'}), else None."""
  path = os.path.join(_step_dir(workdir, step), PEFT_ITEM, 'metadata')
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def load_workdir_params(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, Any]:
  """(run config, params) of a training workdir's latest (or given) step, on the host's devices.

  The params are what the checkpoint holds: for an adapter-only checkpoint, only the
  trainable and new ones (see `from_pretrained` for the whole model).
  """
  config = run_config(workdir, step)
  state_dir = os.path.join(_step_dir(workdir, step), 'state')
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  try:
    tree = checkpointer.metadata(state_dir).item_metadata.tree
  except Exception as e:  # pylint: disable=broad-except
    raise config_lib.UserError(f'{state_dir} cannot be read ({type(e).__name__}: '
                               f'{str(e).splitlines()[0][:200]})') from None
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = {'params': jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree['params'])}
  restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), abstract)
  restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
      item=abstract, restore_args=restore_args, partial_restore=True))
  return config, restored['params']


def from_pretrained(path: str, step: int | None = None, **model_overrides):
  """(module, params, model_config) from a training workdir, a model dir or an HF dir.

  `model_overrides` set runtime fields of the model config (dtype, scan_layers, ...).
  A PEFT workdir comes back whole: its base (init.source) with its own params laid over,
  LoRA merged into the kernels.
  """
  from ptlm_jax import models  # pylint: disable=g-import-not-at-top
  from ptlm_jax.models import hf_import  # pylint: disable=g-import-not-at-top
  if not is_workdir(path):
    return hf_import.from_pretrained(path, **model_overrides)
  step = latest_step(path, step)
  config, params = load_workdir_params(path, step)
  pointer = peft_pointer(path, step)
  if pointer is not None:
    params = _rebuild(config, params, pointer, f'{os.path.abspath(path)}/{CHECKPOINTS}/{step}')
  params = lora.merged(params, config.peft)
  model_config, params = hf_import.apply_runtime_overrides(config.model, params, **model_overrides)
  return models.build_model(model_config), params, model_config


def _rebuild(config, saved, pointer: dict, where: str) -> dict:
  """Whole params of an adapter-only checkpoint: its saved params over its base's."""
  from ptlm_jax import models  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  base = _read_source(pointer['source'], pointer.get('source_step'), config.model.scan_layers,
                      f'{where}/{PEFT_ITEM} (source)')
  abstract = nn.unbox(models.abstract_params(config.model))
  match = match_params(abstract, base)
  flat_saved = peft.flatten(saved)
  missing = sorted(p for p in peft.flatten(abstract)
                   if p not in flat_saved and p not in match.copied)
  if missing:
    raise config_lib.UserError(f'{where}: params {missing[:4]} are neither in the checkpoint '
                               f"nor in its base {pointer['source']}")
  return peft.combine(peft.unflatten(match.copied), saved)


# ---------------------------------------------------------------------------
# init.source.

@dataclasses.dataclass
class Source:
  """Weights to start from: where they came from, their model config and host params."""
  path: str                                  # absolute path
  step: int | None                           # the workdir step read (None: model / HF dir)
  model_config: ml_collections.ConfigDict
  params: dict                               # plain numpy params (LoRA merged)
  run_config: ml_collections.ConfigDict | None = None  # a workdir's whole config

  def pointer(self) -> dict:
    """What an adapter-only checkpoint records to find this base again."""
    return {'source': self.path, 'source_step': self.step}


def _normalize(path: str) -> str:
  """An absolute path, or the name as given (maybe a hub name in the local HF cache)."""
  expanded = os.path.expanduser(path)
  return os.path.abspath(expanded) if os.path.exists(expanded) else path


def _read_source(path: str, step: int | None, scan_layers: bool, field: str) -> Source:
  path = _normalize(path)
  workdir = is_workdir(path)
  step = latest_step(path, step) if workdir else None
  try:
    _, params, model_config = from_pretrained(path, step, scan_layers=scan_layers)
  except config_lib.UserError as e:
    raise config_lib.UserError(f'{field}={path}: {e}') from None
  return Source(path, step, model_config, jax.device_get(params),
                run_config(path, step) if workdir else None)


def load_source(config) -> Source | None:
  """The weights `config.init.source` names (None when it is empty), read to host memory."""
  if not config.init.source:
    return None
  return _read_source(config.init.source, config.init.step or None, config.model.scan_layers,
                      'config.init.source')


def pin_resumed_source(config, workdir: str) -> None:
  """On resume of an adapter-only run, read the base its checkpoint points to.

  Sets `init.step` to the step the checkpoint was trained on (the source workdir may have
  gone on training since); a different `init.source` is a ConfigError.
  """
  if not is_workdir(workdir) or not _steps(os.path.abspath(os.path.expanduser(workdir))):
    return
  try:
    pointer = peft_pointer(workdir)
  except (OSError, ValueError):
    return  # an unreadable step: the checkpointer sets it aside and says so
  if pointer is None:
    return
  if _normalize(config.init.source) != pointer['source']:
    raise config_lib.ConfigError(
        'init.source', config.init.source,
        f"{pointer['source']!r}, the base of the adapter-only checkpoints in {workdir}")
  if pointer.get('source_step') is not None:
    config.init.step = pointer['source_step']


def inherit_fields(config, source: Source) -> list[str]:
  """Sets the architecture (and, for a workdir source, tokenizer) fields to the source's.

  Returns one line per field changed.  A different family is a ConfigError.
  """
  m, src = config.model, source.model_config
  if src.family != m.family:
    raise config_lib.ConfigError('model.family', m.family,
                                 f'{src.family!r}, the family of init.source={source.path}')
  notes = []
  for field in ARCHITECTURE_FIELDS:
    if field in src and src[field] != m[field]:
      notes.append(f'model.{field}={src[field]!r} (was {m[field]!r}) from init.source')
      m[field] = src[field]
  run = source.run_config
  if run is not None and not config.data.tokenizer_path:
    from ptlm_jax.data import tokenizer  # pylint: disable=g-import-not-at-top
    path = run.data.tokenizer_path or str(tokenizer.cache_path(run))
    if not os.path.exists(path):
      raise config_lib.UserError(
          f'init.source={source.path} was trained with the tokenizer {path}, which is missing '
          'here: set config.data.tokenizer_path to that tokenizer')
    config.data.tokenizer_path = path
    for field in TOKENIZER_FIELDS:
      config.data[field] = run.data[field]
    notes.append(f'data.tokenizer_path={path} from init.source')
  elif run is None and not config.data.tokenizer_path:
    notes.append(f'note: init.source={source.path} is not a training workdir, so its tokenizer '
                 'is unknown here: set data.tokenizer_path to one that matches its vocabulary')
  return notes


@dataclasses.dataclass
class Match:
  """How a source's params map onto a model's ('/'-joined paths of the model's params)."""
  source: Source
  copied: dict[str, np.ndarray]   # model path -> source array, same shape
  fresh: list[str]                # not in the source: keep their fresh initialisation
  replaced: list[str]             # task-head params whose shape differs: fresh as well
  unused: list[str]               # source params the model has no place for

  def summary(self) -> dict:
    return {'source': self.source.path, 'step': self.source.step, 'copied': len(self.copied),
            'fresh': self.fresh, 'replaced': self.replaced, 'unused': len(self.unused)}

  def describe(self) -> str:
    step = f' (step {self.source.step})' if self.source.step is not None else ''
    groups = sorted({p.split('/')[0] for p in self.unused})
    return (f'init.source={self.source.path}{step}: copied {len(self.copied)} tensors, '
            f'{len(self.fresh)} new ones initialised fresh'
            + (f', replaced {self.replaced} (shape differs)' if self.replaced else '')
            + (f'; {len(self.unused)} source tensors unused ({", ".join(groups)})'
               if self.unused else ''))


def _source_tree(source_params: dict, model_params: dict) -> dict:
  """The source params in the model's layout: a family model <-> a task head's backbone."""
  if 'backbone' in model_params and 'backbone' not in source_params:
    return {'backbone': source_params}
  if 'backbone' in source_params and 'backbone' not in model_params:
    return source_params['backbone']
  return source_params


def match_params(model_params, source: Source) -> Match:
  """Which of `model_params` (arrays or shapes) the source fills; see the module docstring."""
  source_flat = peft.flatten(_source_tree(source.params, model_params))
  copied, fresh, replaced = {}, [], []
  for path, leaf in peft.flatten(model_params).items():
    have = source_flat.get(path)
    if have is None or path.split('/')[0] == peft.LORA:
      fresh.append(path)
    elif tuple(np.shape(have)) == tuple(leaf.shape):
      copied[path] = np.asarray(have)
    elif path.split('/')[0] == HEAD:
      replaced.append(path)
    else:
      raise config_lib.UserError(
          f'init.source={source.path}: param {path} has shape {tuple(np.shape(have))} there '
          f'and {tuple(leaf.shape)} here')
  unused = sorted(set(source_flat) - set(copied) - set(replaced))
  return Match(source, copied, fresh, replaced, unused)


# ---------------------------------------------------------------------------
# Merged export.

def export(input_path: str, output_path: str, fmt: str = 'model', step: int | None = None) -> str:
  """Writes a workdir's whole model (LoRA merged) as a ptlm_jax model dir or an HF dir."""
  from ptlm_jax.models import hf_import  # pylint: disable=g-import-not-at-top
  _, params, model_config = from_pretrained(input_path, step)
  if fmt == 'hf':
    if model_config.prefix_length or model_config.adapter_dim:
      raise config_lib.UserError(
          f'{input_path}: a model with prefixes or adapters has no HF architecture here; '
          'export it with --format=model')
    hf_import.save_hf(output_path, params, model_config)
  elif fmt == 'model':
    hf_import.save_model_dir(output_path, params, model_config)
  else:
    raise config_lib.UserError(f'--format={fmt!r}: expected model or hf')
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  return f'wrote {fmt} dir {output_path}: {model_config.family}, {count:,} params'


def main(argv) -> None:
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  if not f['verbosity'].present:  # orbax logs every file at INFO
    logging.set_verbosity(logging.WARNING)
  try:
    print(export(f.input, f.output, f.format, f.step or None))
  except config_lib.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('input', None, 'A training workdir (PEFT runs are rebuilt and merged).')
  flags.DEFINE_string('output', None, 'Directory to write.')
  flags.DEFINE_enum('format', 'model', ['model', 'hf'], 'ptlm_jax model dir or HF dir.')
  flags.DEFINE_integer('step', 0, 'Checkpoint step (0 = latest).')
  flags.mark_flags_as_required(['input', 'output'])
  app.run(main)
