"""The errors a user can fix, and how entry points show them: one line, no traceback."""
from __future__ import annotations

import sys
from typing import Any, Callable


class UserError(Exception):
  """An error the user can fix (bad config, missing file, no network).

  Entry points print its one-line message and exit non-zero, without a traceback.
  """


class ConfigError(UserError, ValueError):
  """A user error in a config: one line naming the field, the value and what is allowed."""

  def __init__(self, field: str, value: Any, allowed: str):
    self.field, self.value, self.allowed = field, value, allowed
    super().__init__(f'config.{field}={value!r} is invalid: expected {allowed}')


def fail(message: str) -> None:
  """Prints `error: message` as one line on stderr and exits with status 2."""
  print('error: ' + ' '.join(str(message).split()), file=sys.stderr, flush=True)
  sys.exit(2)


def one_line_errors(run: Callable[[], None], quiet: str = 'warning') -> Callable[[list[str]], None]:
  """The absl `main(argv)` of an entry point: runs `run()` and shows a UserError as one line.

  Positional arguments are a usage error; unless --verbosity is given, absl logging is set to
  `quiet` (orbax and TFDS log every file they touch at INFO).  Exit status 2 on a UserError.
  """
  def main(argv):
    from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(quiet)
    try:
      run()
    except UserError as e:
      fail(str(e))
  return main
