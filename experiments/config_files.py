"""Config files by name, as the command line gives them, and dotted overrides.

  config = config_files.load('configs/gpt.py:tiny')        # = --config=configs/gpt.py:tiny
  config_files.override(config, {'optim.lr': 3e-4, 'train.steps': 500})

Experiments describe their runs as (config file:arg, overrides), so that every run is
also one `python -m ptlm_jax.main` command line (experiments/sweep.py writes it), and
`override` applies the same values in-process.  Paths are relative to the repository
root (where launch.sh lives) unless absolute.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping

from ptlm_jax import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def split_spec(spec: str) -> tuple[str, str | None]:
  """'configs/gpt.py:tiny' -> (absolute path, 'tiny'); no ':' -> (path, None)."""
  path, _, arg = spec.partition(':')
  path = path if os.path.isabs(path) else os.path.join(ROOT, path)
  return path, (arg if arg else None)


def load(spec: str):
  """The ConfigDict `get_config(arg)` of a config file; UserError if the file is missing."""
  path, arg = split_spec(spec)
  if not os.path.isfile(path):
    raise errors.UserError(f'config file {path} does not exist (from {spec!r})')
  module_spec = importlib.util.spec_from_file_location(
      f'_config_{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def _coerce(old: Any, value: Any, key: str) -> Any:
  """`value` in the type of the field it replaces (strings from a command line too)."""
  if isinstance(old, bool):
    if isinstance(value, str):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise errors.ConfigError(key, value, 'true or false')
      return value.lower() in ('true', '1')
    return bool(value)
  try:
    if isinstance(old, int):
      number = float(value)
      if number != int(number):
        raise ValueError
      return int(number)
    if isinstance(old, float):
      return float(value)
  except (TypeError, ValueError):
    raise errors.ConfigError(key, value, f'a {type(old).__name__}') from None
  return str(value) if isinstance(old, str) else value


def override(config, overrides: Mapping[str, Any]):
  """Sets 'group.field' keys in place (types as the fields'); ConfigError for unknown ones."""
  for key, value in overrides.items():
    group, _, field = key.partition('.')
    if not field or group not in config or field not in config[group]:
      raise errors.ConfigError(key, value, 'an existing <group>.<field> of the config')
    config[group][field] = _coerce(config[group][field], value, key)
  return config
