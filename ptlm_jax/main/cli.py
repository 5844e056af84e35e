r"""Command-line plumbing shared by the entry points: flag and config-file errors, quiet logs.

Every mistake a user can make on the command line ends the program with one line on
stderr, `error: ...`, and exit status 2, before anything compiles:

  python -m ptlm_jax.main --config=configs/gpt.py:tiny --config.data.batch_size=3 ...
  error: --config.data.batch_size: the config has no field data.batch_size; did you mean
  train.batch_size?        (one line)

`parse_flags` is an `absl.app.run(..., flags_parser=...)` parser: it loads the config file
itself first (a missing file, an unknown variant, an override of a field that does not
exist) and turns absl's flag errors (a bad value, a missing required flag) into that line.
`quiet_logs()`, called by every entry point once its cheap checks are done, keeps a log
plain: TFDS's progress bars off when stderr is not a terminal (`quiet_progress_bars`: a
log written to a file or a pipe holds no cursor-movement codes), and third-party warnings
that a user cannot act on dropped everywhere (`THIRD_PARTY_NOISE`).  The project's own
log lines, progress lines (tokens/s, ETA) included, are untouched.
"""
from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import sys

from absl import flags

from ptlm_jax.errors import UserError, fail


def _flag_value(argv: list[str], name: str) -> str | None:
  """The value of --name=value or --name value in argv (the last one wins), else None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def load_config_file(spec: str):
  """`path[:arg]` -> the ConfigDict its get_config(arg) returns; UserError if it cannot."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    folder = os.path.dirname(path) or '.'
    near = sorted(f for f in os.listdir(folder) if f.endswith('.py')) if os.path.isdir(
        folder) else []
    hint = f'; {folder}/ has {", ".join(near)}' if near else ''
    raise UserError(f'--config={spec}: no such config file {path!r}{hint}')
  module_spec = importlib.util.spec_from_file_location('_ptlm_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise UserError(f'--config={spec}: {path} has no get_config() function')
  try:
    return module.get_config(arg) if arg else module.get_config()
  except UserError as e:
    if getattr(e, 'field', '') == 'variant':  # the published sizes are variants too
      from ptlm_jax import config_lib  # pylint: disable=g-import-not-at-top
      known = list(config_lib.VARIANTS) + list(getattr(module, 'REFERENCE', {}))
      raise UserError(f'--config={spec}: no variant {arg!r} in {path}: expected one of '
                      f'{", ".join(known)}') from e
    raise UserError(f'--config={spec}: {e}') from e


def _paths(config, prefix: str = '') -> list[str]:
  out = []
  for key, value in config.items():
    if hasattr(value, 'items'):
      out += _paths(value, f'{prefix}{key}.')
    else:
      out.append(f'{prefix}{key}')
  return out


def suggest(config, path: str) -> str:
  """Why `path` is not a field of `config`, with the closest existing names (difflib)."""
  fields = _paths(config)
  leaf = path.rsplit('.', 1)[-1]
  near = [f for f in fields if f.rsplit('.', 1)[-1] == leaf]  # the right name, wrong group
  if not near:
    group = path.rpartition('.')[0]
    siblings = {f.rsplit('.', 1)[-1]: f for f in fields if f.rpartition('.')[0] == group}
    near = [siblings[n] for n in difflib.get_close_matches(leaf, list(siblings), n=2, cutoff=0.6)]
    near += difflib.get_close_matches(path, fields, n=3, cutoff=0.8)
    by_leaf: dict[str, list[str]] = {}
    for f in fields:
      by_leaf.setdefault(f.rsplit('.', 1)[-1], []).append(f)
    for name in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.75):
      near += by_leaf[name]  # a misspelt name, in any group
  near = list(dict.fromkeys(near))
  groups = sorted(k for k, v in config.items() if hasattr(v, 'items'))
  hint = (f'did you mean {" or ".join(near[:3])}?' if near else
          f'the groups are {", ".join(groups)} (see ptlm_jax/config_lib.py)')
  return f'the config has no field {path}; {hint}'


def check_overrides(config, argv: list[str]) -> None:
  """UserError for the first --config.<path>=... whose path is not a field of `config`."""
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].split('=', 1)[0]
    node = config
    for part in path.split('.'):
      if not hasattr(node, 'items') or part not in node:
        raise UserError(f'--config.{path}: {suggest(config, path)}')
      node = node[part]
    if hasattr(node, 'items'):
      raise UserError(f'--config.{path} is a group, not a field: set one of its fields, '
                      f'e.g. --config.{path}.{next(iter(node.keys()))}=...')


def parse_flags(argv: list[str]) -> list[str]:
  """absl flags parser that reports every user error as one line (exit 2)."""
  try:
    spec = _flag_value(argv[1:], 'config')
    if spec:
      check_overrides(load_config_file(spec), argv[1:])
    rest = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS['config'].present:
      flags.FLAGS.config  # pylint: disable=pointless-statement  (loads it: errors show here)
    return rest
  except UserError as e:
    fail(str(e))
  except flags.Error as e:  # a bad value, an unknown or missing flag
    fail(str(e))


def quiet_progress_bars() -> None:
  """TFDS progress bars off unless stderr is a terminal (they move the cursor: ESC[A)."""
  if not sys.stderr.isatty():
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (heavy)
    tfds.disable_progress_bar()


# Third-party log lines that say nothing a user can act on: (package directory, start of
# the message).  Matched on the file that logged the line, so the same words from this
# project or from another library still show.
THIRD_PARTY_NOISE = (
    # TFDS, listing a dataset folder while that dataset is being prepared for the first time.
    ('tensorflow_datasets', 'Variant folder '),
    # orbax, restoring a checkpoint step: its optional _CHECKPOINT_METADATA file is absent.
    ('orbax', 'Metadata file does not exist'),
)


class _DropThirdPartyNoise(logging.Filter):
  """Drops the log records THIRD_PARTY_NOISE names; passes every other record."""

  def filter(self, record: logging.LogRecord) -> bool:
    path = record.pathname.replace(os.sep, '/')
    for package, start in THIRD_PARTY_NOISE:
      if f'/{package}/' in path and str(record.msg).startswith(start):
        return False
    return True


_NOISE_FILTER = _DropThirdPartyNoise()


def quiet_logs() -> None:
  """Plain logs: progress bars only on a terminal, no third-party noise (idempotent).

  The filter sits on absl's logger (TFDS and orbax log through absl) and on the root
  logger's handlers (libraries that use `logging` directly reach those).
  """
  quiet_progress_bars()
  for target in [logging.getLogger('absl')] + logging.getLogger().handlers:
    if _NOISE_FILTER not in target.filters:
      target.addFilter(_NOISE_FILTER)
