"""The trained tokenizer is the same on every machine, whatever its number of CPUs.

SentencePiece's unigram EM sums per-thread partial counts, so its pieces depended on
`num_threads`, which was the machine's CPU count: a clone on another machine trained
another tokenizer, and every number downstream moved (issue 14, item 10).
"""
import itertools
import os

import pytest

import data_testlib as lib
from ptlm_jax.data import sources, tokenizer


@pytest.fixture(scope='module')
def texts():
  return list(itertools.islice(sources.texts(lib.small_config('news'), 'train'), 400))


def test_training_does_not_depend_on_the_cpu_count(texts, monkeypatch):
  protos = set()
  for cpus in (1, 2, 3):
    monkeypatch.setattr(os, 'cpu_count', lambda cpus=cpus: cpus)
    proto, _ = tokenizer.train(texts, lib.TEST_VOCAB, max_chars=1_500_000)
    protos.add(proto)
  assert len(protos) == 1
