"""Pretrained weights from anywhere: a training workdir, a ptlm_jax model dir or an HF dir.

  model, params, model_config = pretrained.from_pretrained('runs/gpt')        # training run
  model, params, model_config = pretrained.from_pretrained('/ckpt/bert-base-uncased')  # HF
  config = pretrained.run_config('runs/gpt')   # the whole config of a training run (or None)

A training workdir holds orbax checkpoints (`checkpoints/<step>/{state,data,config}`, see
checkpoint.py); only `state/params` of the chosen step is read (orbax partial restore), so
the optimizer state never reaches memory.  Anything else goes to
`models.hf_import.from_pretrained` (HF `config.json` + `model.safetensors`, or a model dir
written by its converter).
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from ptlm_jax import config_lib

CHECKPOINTS = 'checkpoints'


def is_workdir(path: str) -> bool:
  return os.path.isdir(os.path.join(os.path.expanduser(path), CHECKPOINTS))


def _steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, CHECKPOINTS)
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _step_dir(workdir: str, step: int | None) -> str:
  workdir = os.path.abspath(os.path.expanduser(workdir))
  steps = _steps(workdir)
  if not steps:
    raise config_lib.UserError(f'{workdir}/{CHECKPOINTS} holds no finished checkpoint yet')
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise config_lib.UserError(f'{workdir}/{CHECKPOINTS} has no step {step} (it has {steps})')
  return os.path.join(workdir, CHECKPOINTS, str(step))


def run_config(path: str, step: int | None = None) -> ml_collections.ConfigDict | None:
  """The full config a training workdir was trained with, or None for other directories."""
  if not is_workdir(path):
    return None
  config_path = os.path.join(_step_dir(path, step), 'config', 'metadata')
  if not os.path.exists(config_path):  # orbax's JsonCheckpointHandler file name
    raise config_lib.UserError(f'{config_path} is missing: not a complete ptlm_jax checkpoint')
  with open(config_path, encoding='utf-8') as f:
    return ml_collections.ConfigDict(json.load(f))


def load_workdir_params(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, Any]:
  """(run config, params) of a training workdir's latest (or given) step, on the host's devices."""
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
  """
  from ptlm_jax import models  # pylint: disable=g-import-not-at-top
  from ptlm_jax.models import hf_import  # pylint: disable=g-import-not-at-top
  if not is_workdir(path):
    return hf_import.from_pretrained(path, **model_overrides)
  config, params = load_workdir_params(path, step)
  model_config, params = hf_import.apply_runtime_overrides(config.model, params, **model_overrides)
  return models.build_model(model_config), params, model_config
