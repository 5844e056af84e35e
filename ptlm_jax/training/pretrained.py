r"""Pretrained weights from anywhere: a training workdir, a ptlm_jax model dir or an HF dir.

  model, params, model_config = pretrained.from_pretrained('runs/gpt')        # training run
  model, params, model_config = pretrained.from_pretrained('/ckpt/bert-base-uncased')  # HF
  config = checkpoint.run_config('runs/gpt')   # the whole config of a training run (or None)

A training workdir holds orbax checkpoints (`checkpoints/<step>/{state,data,config}`, see
checkpoint.py); only `state/params` of the chosen step is read (orbax partial restore), so
the optimizer state never reaches memory.  A PEFT run's checkpoints hold only its
trainable and new params plus a pointer to its base (`checkpoints/<step>/peft`:
init.source and the step read from it); `from_pretrained` rebuilds base + adapters from
the two and merges LoRA, so the caller always gets plain params of the plain model
(prefixes and adapters are part of the model config).  Anything else goes to
`hf.convert.from_pretrained` (HF `config.json` + `model.safetensors`, or a model dir
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
  python -m ptlm_jax.main.hf --input=runs/gpt-lora --output=models/gpt-lora [--format=hf]
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np

from ptlm_jax import errors
from ptlm_jax.peft import lora, partitions as peft
from ptlm_jax.training import checkpoint

# Model fields that fix the shapes of pretrained params: taken from init.source.
ARCHITECTURE_FIELDS = ('vocab_size', 'd_model', 'num_layers', 'num_decoder_layers', 'num_heads',
                       'head_dim', 'd_ff', 'max_len', 'type_vocab_size', 'activation',
                       'tie_embeddings', 'relative_buckets', 'relative_max_distance',
                       'layer_norm_eps')
TOKENIZER_FIELDS = ('sp_vocab_size', 'sp_model_type', 'sp_train_chars')
HEAD = 'head'


def from_pretrained(path: str, step: int | None = None, **model_overrides):
  """(module, params, model_config) from a training workdir, a model dir or an HF dir.

  `model_overrides` set runtime fields of the model config (dtype, scan_layers, ...).
  A PEFT workdir comes back whole: its base (init.source) with its own params laid over,
  LoRA merged into the kernels.
  """
  from ptlm_jax import models  # pylint: disable=g-import-not-at-top
  from ptlm_jax.hf import convert as hf_import  # pylint: disable=g-import-not-at-top
  if not checkpoint.is_workdir(path):
    return hf_import.from_pretrained(path, **model_overrides)
  step = checkpoint.latest_step(path, step)
  config, params = checkpoint.load_workdir_params(path, step)
  pointer = checkpoint.peft_pointer(path, step)
  if pointer is not None:
    params = _rebuild(config, params, pointer, f'{os.path.abspath(path)}/checkpoints/{step}')
  params = lora.merged(params, config.peft)
  model_config, params = hf_import.apply_runtime_overrides(config.model, params, **model_overrides)
  return models.build_model(model_config), params, model_config


def _rebuild(config, saved, pointer: dict, where: str) -> dict:
  """Whole params of an adapter-only checkpoint: its saved params over its base's."""
  from ptlm_jax import models  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  base = _read_source(pointer['source'], pointer.get('source_step'), config.model.scan_layers,
                      f'{where}/peft (source)')
  abstract = nn.unbox(models.abstract_params(config.model))
  match = match_params(abstract, base)
  flat_saved = peft.flatten(saved)
  missing = sorted(p for p in peft.flatten(abstract)
                   if p not in flat_saved and p not in match.copied)
  if missing:
    raise errors.UserError(f'{where}: params {missing[:4]} are neither in the checkpoint '
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
  workdir = checkpoint.is_workdir(path)
  step = checkpoint.latest_step(path, step) if workdir else None
  try:
    _, params, model_config = from_pretrained(path, step, scan_layers=scan_layers)
  except errors.UserError as e:
    raise errors.UserError(f'{field}={path}: {e}') from None
  return Source(path, step, model_config, jax.device_get(params),
                checkpoint.run_config(path, step) if workdir else None)


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
  if not checkpoint.is_workdir(workdir) or not checkpoint.steps(os.path.abspath(os.path.expanduser(workdir))):
    return
  try:
    pointer = checkpoint.peft_pointer(workdir)
  except (OSError, ValueError):
    return  # an unreadable step: the checkpointer sets it aside and says so
  if pointer is None:
    return
  if _normalize(config.init.source) != pointer['source']:
    raise errors.ConfigError(
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
    raise errors.ConfigError('model.family', m.family,
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
      raise errors.UserError(
          f'init.source={source.path} was trained with the tokenizer {path}, which is missing '
          'here: set config.data.tokenizer_path to that tokenizer')
    config.data.tokenizer_path = path
    for field in TOKENIZER_FIELDS:
      config.data[field] = run.data[field]
    notes.append(f'data.tokenizer_path={path} from init.source')
  elif run is None:
    notes += _checkpoint_tokenizer(config, source)
  return notes


def _source_tokenizer_file(path: str) -> str | None:
  """The tokenizer an HF dir or a model dir carries, or None."""
  from ptlm_jax.data import hf_tokenizer  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    return None
  found = hf_tokenizer.find_file(path)
  project = os.path.join(path, 'tokenizer.model')
  return found or (project if os.path.exists(project) else None)


def _checkpoint_tokenizer(config, source: Source) -> list[str]:
  """An HF dir's (or model dir's) tokenizer as data.tokenizer_path, checked against the model.

  No tokenizer in the dir and none given, or one that does not fit the embedding (size,
  special ids), is a UserError naming both: fine-tuning with another vocabulary's ids
  trains, but learns nothing the checkpoint knew.
  """
  # pylint: disable=g-import-not-at-top
  from ptlm_jax.data import tokenizer as tokenizer_lib, vocab
  from ptlm_jax.hf import convert as hf_import
  notes = []
  directory = hf_import.resolve_dir(source.path)  # a hub name: its snapshot in the HF cache
  own = _source_tokenizer_file(directory)
  given = config.data.tokenizer_path
  if not given:
    if own is None:
      raise errors.UserError(
          f'init.source={source.path} holds no tokenizer (tokenizer.json, vocab.txt, vocab.json '
          '+ merges.txt, spiece.model or tokenizer.model) and data.tokenizer_path is empty: set '
          'data.tokenizer_path to the tokenizer its weights were trained with')
    config.data.tokenizer_path = own
    notes.append(f'data.tokenizer_path={own} from init.source')
  if not os.path.exists(os.path.expanduser(config.data.tokenizer_path)):
    return notes  # get_tokenizer names the missing file (tests may feed rows without one)
  tok = tokenizer_lib.load(config.data.tokenizer_path)
  check_tokenizer_fits(tok, config.model, directory,
                       tokenizer_lib.load(own) if own and given else None)
  if config.data.sp_vocab_size + vocab.NUM_SENTINELS > config.model.vocab_size:
    # data.sp_vocab_size sizes a tokenizer this project trains; none is trained here.
    config.data.sp_vocab_size = config.model.vocab_size - vocab.NUM_SENTINELS
  return notes


def _hf_special_ids(path: str) -> dict[str, int]:
  try:
    with open(os.path.join(path, 'config.json'), encoding='utf-8') as f:
      hf = json.load(f)
  except (OSError, ValueError):
    return {}
  out = {}
  for name in ('pad', 'eos', 'bos', 'sep', 'cls', 'mask'):
    value = hf.get(f'{name}_token_id') if isinstance(hf, dict) else None
    value = value[0] if isinstance(value, list) and value else value
    if isinstance(value, int):
      out[name] = value
  return out


def check_tokenizer_fits(tok, model_config, source_path: str, source_tok=None) -> None:
  """UserError unless `tok` can feed the model of init.source=`source_path`.

  Its ids must fit the embedding (and, for an HF dir, fill it: at most 128 padding rows),
  its special ids must be those of the checkpoint's config.json, a BERT needs [CLS] and
  [SEP], and a tokenizer given beside the checkpoint's own must agree with it.
  """
  info, rows = tok.vocab_info, model_config.vocab_size
  where = f'the tokenizer {tok.path} (data.tokenizer_path) and init.source={source_path}'
  if info.size > rows:
    raise errors.UserError(f'{where} do not fit: the tokenizer has {info.size} ids, the '
                           f'embedding {rows} rows')
  hf = _hf_special_ids(source_path)
  if hf and info.size < rows - 128:
    raise errors.UserError(f'{where} do not fit: the tokenizer has {info.size} ids, the '
                           f'embedding {rows} rows (another vocabulary)')
  specials = info.specials()
  for name, expected in hf.items():
    if name in specials and specials[name] != expected:
      raise errors.UserError(f'{where} do not fit: {name} is id {specials[name]} in the '
                             f'tokenizer, {expected} in the checkpoint\'s config.json')
  if model_config.family == 'bert' and (info.cls_id is None or info.sep_id is None):
    raise errors.UserError(f'{where} do not fit: a BERT needs [CLS] and [SEP] tokens')
  if source_tok is not None and (source_tok.vocab_info.size != info.size or
                                 source_tok.vocab_info.specials() != specials):
    raise errors.UserError(
        f'{where} do not fit: the checkpoint\'s own tokenizer {source_tok.path} has '
        f'{source_tok.vocab_info.size} ids and specials {source_tok.vocab_info.specials()}, this '
        f'one {info.size} and {specials}')


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
      raise errors.UserError(
          f'init.source={source.path}: param {path} has shape {tuple(np.shape(have))} there '
          f'and {tuple(leaf.shape)} here')
  unused = sorted(set(source_flat) - set(copied) - set(replaced))
  return Match(source, copied, fresh, replaced, unused)


# ---------------------------------------------------------------------------
# Merged export.

def export(input_path: str, output_path: str, fmt: str = 'model', step: int | None = None) -> str:
  """Writes a workdir's whole model (LoRA merged) as a ptlm_jax model dir or an HF dir."""
  from ptlm_jax.hf import convert as hf_import  # pylint: disable=g-import-not-at-top
  _, params, model_config = from_pretrained(input_path, step)
  if fmt == 'hf':
    if model_config.prefix_length or model_config.adapter_dim:
      raise errors.UserError(
          f'{input_path}: a model with prefixes or adapters has no HF architecture here; '
          'export it with --format=model')
    hf_import.save_hf(output_path, params, model_config)
  elif fmt == 'model':
    hf_import.save_model_dir(output_path, params, model_config)
  else:
    raise errors.UserError(f'--format={fmt!r}: expected model or hf')
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  copied = _copy_tokenizer(input_path, output_path, fmt)
  return (f'wrote {fmt} dir {output_path}: {model_config.family}, {count:,} params'
          + (f'; tokenizer {", ".join(copied)}' if copied else ''))


_HF_TOKENIZER_FILES = ('tokenizer.json', 'vocab.txt', 'vocab.json', 'merges.txt', 'spiece.model',
                       'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json')


def _copy_tokenizer(input_path: str, output_path: str, fmt: str) -> list[str]:
  """The run's tokenizer beside the exported weights, so the dir is whole for transformers
  (`AutoTokenizer.from_pretrained`, an HF tokenizer's files) and for `init.source` and
  generation here (this project's SentencePiece model as tokenizer.model, in either format)."""
  del fmt  # both formats carry it
  import shutil  # pylint: disable=g-import-not-at-top
  from ptlm_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  if not checkpoint.is_workdir(input_path):
    return []
  path = checkpoint.run_config(input_path).data.tokenizer_path
  if not path or not os.path.exists(path):
    return []
  if not tokenizer_lib.is_hf(path):  # this project's SentencePiece model: read here only
    shutil.copyfile(path, os.path.join(output_path, 'tokenizer.model'))
    return ['tokenizer.model']
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  copied = [name for name in _HF_TOKENIZER_FILES if os.path.exists(os.path.join(directory, name))]
  for name in copied:
    shutil.copyfile(os.path.join(directory, name), os.path.join(output_path, name))
  return copied
