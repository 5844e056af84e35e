"""Mixed precision: bfloat16 matmuls that accumulate in float32, and training that tracks f32.

- the compiled bf16 train step of every family has no dot with a bf16 result, and every
  dot_general it lowers to takes bf16 x bf16 and returns f32 (forward and backward:
  `layers.matmul` writes the backward out so its matmuls also take bf16 inputs);
- `layers.matmul` equals a float32 einsum of the bf16-rounded inputs, gradients included;
- a tiny model's bf16 training loss stays within a stated band of the f32 run.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import train_step as benchmark_train
from ptlm_jax.models import layers

TINY = dict(d_model=32, num_layers=2, num_decoder_layers=2, num_heads=2, head_dim=16, d_ff=64,
            vocab_size=384)


def tiny_config(family, dtype, seq_len=32, batch=8, **model):
  c = benchmark_train.preset_config(family, 'small', **{**TINY, 'dtype': dtype, **model})
  c.data.update(seq_len=seq_len, sp_vocab_size=c.model.vocab_size - 100)
  c.objective.update(max_predictions=6, targets_length=0)
  c.train.batch_size = batch
  return c


# StableHLO: `stablehlo.dot_general %a, %b ... : (tensor<..xbf16>, tensor<..xbf16>) -> tensor<..xf32>`
_STABLEHLO_DOT = re.compile(r'stablehlo\.dot_general.*:\s*\((tensor<[^>]*>),\s*(tensor<[^>]*>)\)'
                            r'\s*->\s*(tensor<[^>]*>)')
# Compiled HLO: `%dot.3 = bf16[8,32]{1,0} dot(...)` (also inside fusions), or a convolution.
_HLO_DOT = re.compile(r'=\s*(\w+)\[[^\]]*\](?:\{[^}]*\})?\s+(dot|convolution)\(')


def _element_type(tensor_type: str) -> str:
  return tensor_type[:-1].split('x')[-1]


@pytest.mark.parametrize('family, model', [
    ('bert', {}), ('gpt', dict(remat='dots', scan_layers=True)),
    ('t5', dict(activation='gated-gelu', tie_embeddings=False))])
def test_bf16_train_step_accumulates_every_matmul_in_f32(family, model, monkeypatch):
  config = tiny_config(family, 'bfloat16', **model)
  # The accelerator form (bf16 operands), lowered here and not run: XLA:CPU cannot run
  # every bf16 x bf16 -> f32 dot (layers.F32_OPERAND_BACKENDS).
  monkeypatch.setattr(layers, 'F32_OPERAND_BACKENDS', ())
  lowered, _ = benchmark_train._lower_step(config)  # pylint: disable=protected-access
  dots = [tuple(_element_type(t) for t in m.groups())
          for m in _STABLEHLO_DOT.finditer(lowered.as_text())]
  # Per layer: q, k, v, out, 2 attention, 2-3 MLP projections, each with 2 backward matmuls.
  assert len(dots) >= 3 * 8, len(dots)
  assert set(dots) == {('bf16', 'bf16', 'f32')}, sorted(set(dots))
  # The CPU form, compiled: the same values multiplied as f32, never a bf16 result.
  monkeypatch.undo()
  lowered, _ = benchmark_train._lower_step(config)  # pylint: disable=protected-access
  dots = {tuple(_element_type(t) for t in m.groups())
          for m in _STABLEHLO_DOT.finditer(lowered.as_text())}
  assert dots == {('f32', 'f32', 'f32')}, sorted(dots)
  compiled = [m.group(1) for m in _HLO_DOT.finditer(lowered.compile().as_text())]
  assert compiled and 'bf16' not in compiled, sorted(set(compiled))


@pytest.mark.parametrize('f32_operands', [True, False])
def test_matmul_is_an_f32_einsum_of_the_rounded_inputs_with_its_gradients(f32_operands,
                                                                          monkeypatch):
  if not f32_operands:  # the custom_vjp path of the accelerators, run here on f32 operands
    monkeypatch.setattr(layers, 'F32_OPERAND_BACKENDS', ())
    monkeypatch.setattr(layers, 'einsum_f32', lambda spec, a, b: jnp.einsum(
        spec, a.astype(jnp.float32), b.astype(jnp.float32)))
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.normal(size=(3, 5, 4, 8)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(3, 7, 4, 8)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(3, 4, 5, 7)), jnp.float32)
  spec = 'bthk,bshk->bhts'
  rounded = lambda x: x.astype(jnp.bfloat16).astype(jnp.float32)

  def ours(a, b):
    return jnp.sum(layers.matmul(spec, a, b, jnp.bfloat16, jnp.float32) * g)

  def reference(a, b):  # float32 everywhere on bf16-rounded inputs
    return jnp.sum(jnp.einsum(spec, rounded(a), rounded(b), precision='highest') * g)

  np.testing.assert_allclose(ours(a, b), reference(a, b), rtol=1e-5)
  (da, db), (ra, rb) = jax.grad(ours, (0, 1))(a, b), jax.grad(reference, (0, 1))(a, b)
  # The backward rounds the cotangent or the gradient to bf16 (2^-8 relative).
  scale = lambda x: np.abs(np.asarray(x)).max()
  np.testing.assert_allclose(da, ra, atol=2 ** -7 * scale(ra))
  np.testing.assert_allclose(db, rb, atol=2 ** -7 * scale(rb))
  assert da.dtype == db.dtype == jnp.float32
  with pytest.raises(ValueError, match='summed within one operand'):
    layers.matmul('ij,jk->k', a[0, 0], b[0, 0].T, jnp.bfloat16)


def _losses(config, steps):
  bench = benchmark_train.TrainBench(config)
  out = []
  with bench.par.context():
    for _ in range(steps):
      bench.state, metrics = bench.step(bench.state, bench.batch, bench.rng)
      out.append(metrics)
  return np.array([float(m['loss'] / m['weight']) for m in jax.device_get(out)])


@pytest.mark.parametrize('family', ['bert', 'gpt', 't5'])
def test_bf16_training_tracks_f32(family):
  # 200 AdamW steps at lr 3e-3 on one fixed batch (new masks / spans every step): the loss
  # falls by more than half.  bf16 rounds each matmul input to 8 significant bits (2^-9
  # relative); measured here (300 steps, batch 8) the windowed bf16 loss stayed within
  # 0.7% (GPT), 1.1% (BERT), 2.1% (T5) of the f32 one, so a 5% band on 40-step means and
  # 0.1 nats over the last window catch a real divergence (a bf16 accumulation, softmax
  # or loss), not rounding.
  steps, window = 200, 40
  curves = {}
  for dtype in ('float32', 'bfloat16'):
    config = tiny_config(family, dtype, batch=4)
    config.optim.lr = 3e-3
    config.train.steps = steps
    curves[dtype] = _losses(config, steps)
  f32, bf16 = curves['float32'], curves['bfloat16']
  assert np.isfinite(bf16).all()
  assert f32[-window:].mean() < 0.5 * f32[:5].mean(), f32[::window]
  f32_w, bf16_w = (x.reshape(-1, window).mean(1) for x in (f32, bf16))
  np.testing.assert_array_less(np.abs(bf16_w - f32_w), 0.05 * f32_w)
  assert abs(bf16[-window:].mean() - f32[-window:].mean()) < 0.1
