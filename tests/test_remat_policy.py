"""What each `model.remat` policy keeps for the backward: 'dots' never the attention scores.

The leaves of `jax.vjp`'s backward function are the arrays it reads (the residuals); the
[B, H, T, T] scores (and probabilities) are the ones that grow with the square of the length.
"""
import jax
import numpy as np
import pytest

import models_testing
from ptlm_jax.models import stack

B, T = 2, 16


def _residual_shapes(family, **overrides):
  model, _, params = models_testing.model_and_params(family, **overrides)
  rows = np.arange(1, B * T + 1, dtype=np.int32).reshape(B, T) % 100 + 7
  ids = np.ones((B, T), np.int32)
  pos = models_testing.arange_positions(B, T)
  if family == 't5':
    inputs = dict(encoder_tokens=rows, encoder_segment_ids=ids, encoder_positions=pos,
                  decoder_tokens=rows, decoder_segment_ids=ids, decoder_positions=pos)
  else:
    inputs = dict(tokens=rows, segment_ids=ids, positions=pos)
  loss = lambda p: model.apply({'params': p}, **inputs).astype(np.float32).sum()
  backward = jax.eval_shape(lambda p: jax.vjp(loss, p)[1], params)
  return [tuple(x.shape) for x in jax.tree.leaves(backward)]


def _scores(shapes, heads=2):
  # Per row and head ([N,] B, H, T, T); T5's relative bias is once per stack ([1, H, T, T]).
  return [s for s in shapes if len(s) >= 4 and s[-4:] == (B, heads, T, T)]


@pytest.mark.parametrize('family', ['gpt', 'bert', 't5'])
@pytest.mark.parametrize('scan', [False, True])
def test_dots_keeps_projections_but_not_scores(family, scan):
  shapes = _residual_shapes(family, remat='dots', scan_layers=scan)
  assert not _scores(shapes), _scores(shapes)
  # It is not 'full': the projections' outputs ([B, T, H, K] queries) are kept.
  assert any(len(s) >= 4 and s[-3:-1] == (T, 2) for s in shapes)


def test_no_remat_keeps_the_scores_that_dots_drops(monkeypatch):
  assert _scores(_residual_shapes('gpt', remat='none'))
  # jax's checkpoint_dots, the old 'dots', keeps them as well: the check above can fail.
  monkeypatch.setitem(stack.REMAT_POLICIES, 'dots', jax.checkpoint_policies.checkpoint_dots)
  assert _scores(_residual_shapes('gpt', remat='dots'))
