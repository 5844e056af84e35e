"""The cost estimator: counts from the model code, and the handout's GPT-3 figures."""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from ptlm_jax import config_lib, errors, estimate, flops, models
from ptlm_jax.training import optim, parallel, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(path: str):
  sys.path.insert(0, ROOT)
  import importlib  # pylint: disable=g-import-not-at-top
  module_name, variant = path.split(':')
  module = importlib.import_module(module_name.replace('/', '.').removesuffix('.py'))
  return module.get_config(variant)


@pytest.mark.parametrize('family', ['bert', 'gpt', 't5'])
def test_params_and_flops_equal_the_model_codes_own_counts(family):
  config = config_lib.base_config(family, 'small')
  e = estimate.estimate(config, 'h100', 8, 1e9, 0.4, 1.1, 0.429)
  assert e.params_total == models.param_count(config.model)
  # Hand count for the GPT small step (batch 32 x 128, vocab 8192, 4 layers of width 256):
  if family == 'gpt':
    n = 4 * (4 * 256 * 256 + 4 * 256 + 2 * 256 * 1024 + 1024 + 256 + 2 * 2 * 256) + 2 * 256
    tokens = 32 * 128
    expected = 6 * n * tokens + 12 * 4 * 256 * 128 * tokens + 6 * 256 * 8192 * tokens
    assert e.flops_per_step == pytest.approx(expected, rel=1e-9)
    assert e.flops_per_token == pytest.approx(expected / tokens, rel=1e-9)


def test_reference_sizes_have_the_published_parameter_counts():
  counts = {v: estimate.estimate(_load(v), 'tpu-v4', 1, 1e9, 0.4, 1.1, 0.429).params_total
            for v in ('configs/bert.py:large', 'configs/gpt.py:xl', 'configs/t5.py:11b')}
  assert 330e6 < counts['configs/bert.py:large'] < 345e6     # BERT-large "340M"
  assert 1.5e9 < counts['configs/gpt.py:xl'] < 1.6e9         # GPT-2 XL "1.5B"
  assert 11.0e9 < counts['configs/t5.py:11b'] < 11.5e9       # T5 "11B"


def test_gpt3_reproduces_the_handouts_energy_and_co2():
  # Patterson et al. 2021: 10,000 V100 at 24.6 TFLOP/s sustained, 330 W, PUE 1.1, 0.429 kg/kWh.
  e = estimate.estimate(_load('configs/gpt.py:gpt3'), 'v100', 10_000, 300e9, 24.6 / 125, 1.1, 0.429)
  assert 170e9 < e.params_total < 176e9
  assert e.energy_kwh / 1000 == pytest.approx(1287, rel=0.05)   # handout: 1,287 MWh
  assert e.co2_kg / 1000 == pytest.approx(552, rel=0.05)        # handout: 552 t
  assert e.cost_usd == pytest.approx(4.6e6, rel=0.1)            # handout: $4.6M
  assert 13 < e.days < 17                                       # Patterson: 14.8 days


def test_fine_tuning_question():
  # Fine-tuning at 10 MWh on the same grid: 4.29 t CO2 (10,000 kWh x 0.429 kg/kWh), i.e.
  # 99.2% less than GPT-3's pretraining as the estimator computes it (handout: 1,287 MWh).
  assert estimate.co2_kg_for_energy(10_000) == pytest.approx(4290)
  assert estimate.co2_kg_for_energy(10_000, grid_kg_per_kwh=0.2) == pytest.approx(2000)
  gpt3 = estimate.estimate(_load('configs/gpt.py:gpt3'), 'v100', 10_000, 300e9, 24.6 / 125,
                           1.1, 0.429)
  assert 1 - 10_000 / gpt3.energy_kwh == pytest.approx(0.9922, abs=5e-4)


def test_bad_input_is_a_named_error():
  config = config_lib.base_config('gpt', 'tiny')
  with pytest.raises(errors.ConfigError, match='config.accelerator'):
    estimate.estimate(config, 'tpu-v9', 1, 1e9, 0.4, 1.1, 0.429)
  with pytest.raises(errors.ConfigError, match=r'config.mfu=1.5'):
    estimate.estimate(config, 'h100', 1, 1e9, 1.5, 1.1, 0.429)


def test_cli_prints_the_table():
  result = subprocess.run([sys.executable, '-m', 'ptlm_jax.main.estimate', '--config=configs/gpt.py:tiny',
                           '--accelerator=a100', '--num_devices=2', '--tokens=1e8'],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert 'parameters       1,576,448 total' in result.stdout and 'CO2' in result.stdout


# ---------------------------------------------------------------------------
# PEFT and the mesh (issue 14, item 4).

def test_lora_trains_only_its_factors():
  # BERT-base, LoRA r = 8 on query and value: 12 layers x 2 kernels x r x (768 + 768).
  config = config_lib.base_config('bert', 'base')
  config.parallel.mode = 'pmap'  # every device holds everything: whole leaves below
  config.peft.method = 'lora'
  plain = config_lib.base_config('bert', 'base')
  plain.parallel.mode = 'pmap'
  full = estimate.estimate(plain, 'h100', 8, 1e9, 0.4, 1.1, 0.429)
  e = estimate.estimate(config, 'h100', 8, 1e9, 0.4, 1.1, 0.429)
  lora = 12 * 2 * 8 * (768 + 768)  # 294,912
  assert e.params_trainable == lora
  assert e.params_total == full.params_total + lora
  assert e.memory_bytes['gradients'] == 4 * lora           # float32 gradients, trained only
  assert e.memory_bytes['optimizer'] == 8 * lora           # Adam's two moments
  assert e.memory_bytes['params'] == 4 * (full.params_total + lora)


def test_frozen_embeddings_have_no_gradients_or_moments():
  config = config_lib.base_config('gpt', 'tiny')
  config.peft.freeze_embeddings = True
  e = estimate.estimate(config, 'h100', 1, 1e9, 0.4, 1.1, 0.429)
  m = config.model
  embeddings = m.vocab_size * m.d_model + m.max_len * m.d_model   # tied token table + positions
  assert e.params_trainable == e.params_total - embeddings
  assert e.memory_bytes['optimizer'] == 8 * e.params_trainable


def _trainer_bytes_per_device(config):
  """Bytes of device 0's shards of params and optimizer state, from the trainer's own
  shardings (parallel.MeshParallel.prepare on the real model), nothing allocated."""
  boxed = models.abstract_params(config.model)
  params = nn.unbox(boxed)
  tx = optim.make_optimizer(config)
  abstract = jax.eval_shape(lambda p: train.TrainState(
      step=jax.numpy.zeros((), jax.numpy.int32), params=p, opt_state=tx.init(p)), params)
  par = parallel.make(config)
  with par.context():
    par.prepare(abstract, nn.get_partition_spec(boxed))

  def nbytes(tree, shardings):
    leaves = zip(jax.tree.leaves(tree), jax.tree.leaves(shardings))
    return sum(int(np.prod(sh.shard_shape(x.shape))) * x.dtype.itemsize for x, sh in leaves
               if x.ndim)  # scalars: counts
  return (nbytes(abstract.params, par.state_shardings.params),
          nbytes(abstract.opt_state, par.state_shardings.opt_state))


@pytest.mark.parametrize('family, optimizer, fsdp, tensor', [
    ('gpt', 'adamw', 4, 2), ('bert', 'adamw', 2, 4), ('t5', 'adafactor', 2, 2)])
def test_memory_per_device_is_what_the_mesh_puts_on_a_device(family, optimizer, fsdp, tensor):
  config = config_lib.base_config(family, 'tiny')
  config.optim.optimizer = optimizer
  config.parallel.update(mode='mesh', mesh_data=8 // (fsdp * tensor), mesh_fsdp=fsdp,
                         mesh_tensor=tensor)
  params, opt_state = _trainer_bytes_per_device(config)
  e = estimate.estimate(config, 'h100', 8, 1e9, 0.4, 1.1, 0.429)
  assert e.memory_bytes['params'] == params
  assert e.memory_bytes['gradients'] == params           # float32, sharded like the params
  assert e.memory_bytes['optimizer'] == opt_state
  pmap = config_lib.base_config(family, 'tiny')
  pmap.optim.optimizer = optimizer
  replicated = estimate.estimate(pmap, 'h100', 8, 1e9, 0.4, 1.1, 0.429).memory_bytes
  assert replicated['params'] == 4 * models.param_count(config.model)
  assert params < replicated['params'] / 2


def test_activations_follow_rows_per_device_and_tensor_parallelism():
  # GPT tiny, batch 32 x 128, mesh 4 x 1 x 2 on 8 devices: 8 rows per device (data x fsdp
  # = 4 share the batch), t = 2.  Korthikanti eq. 2 per layer: s*b*h*(10 + 24/t + 5*a*s/(h*t)),
  # in 16-bit units, doubled for float32 compute; plus the fused head's chunk of float32
  # logits, probabilities, their gradient and the label compare (4 arrays of
  # min(b * s, train.loss_chunk_tokens = 1024) = 1024 positions) with the vocabulary split
  # over tensor: 4 * 4 * 1024 * V / t.
  config = config_lib.base_config('gpt', 'tiny')
  config.parallel.update(mode='mesh', mesh_data=4, mesh_fsdp=1, mesh_tensor=2)
  s, b, h, a, t, v = 128, 8, 128, 2, 2, 8192
  layer = s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
  expected = 2 * 2 * layer + 4 * 4 * 1024 * v / t
  e = estimate.estimate(config, 'h100', 8, 1e9, 0.4, 1.1, 0.429)
  assert e.memory_bytes['activations'] == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------
# FLOPs of task heads (issue 14, item 5): the head that runs, not a vocabulary projection.

# BERT tiny by hand: d 128, 2 layers, d_ff 512, biases everywhere.  A layer: q, k, v, o
# 4*(128*128 + 128); MLP 2*128*512 + 512 + 128; two LayerNorms 2*2*128.  Plus the
# embedding LayerNorm 2*128.  Pooler 128*128 + 128; head 128*C + C.
_BERT_LAYER = 4 * (128 * 128 + 128) + 2 * 128 * 512 + 512 + 128 + 2 * 2 * 128
_BERT_N = 2 * _BERT_LAYER + 2 * 128
_ATTN = 12 * 2 * 128 * 128 * 32 * 128          # 12 x layers x H*K x L x B*L


@pytest.mark.parametrize('head, classes, head_flops', [
    ('sequence_classification', 2, 6 * (128 * 2 + 2 + 128 * 128 + 128) * 32),   # once a row
    ('token_classification', 5, 6 * (128 * 5 + 5) * 32 * 128),                 # every token
    ('question_answering', 2, 6 * (128 * 2 + 2) * 32 * 128),                    # start, end
])
def test_bert_task_head_flops(head, classes, head_flops):
  config = config_lib.base_config('bert', 'tiny')
  config.model.head, config.model.num_classes = head, classes
  counts = flops.count_params(models.abstract_params(config.model))
  step = flops.flops_per_step(config.model, counts, 32, 128, output_length=1)
  assert step == {'model': float(6 * _BERT_N * 32 * 128 + _ATTN), 'head': float(head_flops)}
  e = estimate.estimate(config, 'h100', 8, 1e9, 0.4, 1.1, 0.429)
  assert e.flops_per_step == step['model'] + step['head']


def test_t5_classifier_runs_the_encoder_alone():
  # T5 tiny encoder by hand: d 128, d_ff 320 (gated: 3 matrices), no biases; a layer
  # 4*128*128 + 3*128*320 + 2*128 (RMS norms); final norm 128; relative bias 32 x 2.
  n = 2 * (4 * 128 * 128 + 3 * 128 * 320 + 2 * 128) + 128 + 32 * 2
  config = config_lib.base_config('t5', 'tiny')
  config.model.head = 'sequence_classification'
  counts = flops.count_params(models.abstract_params(config.model))
  step = flops.flops_per_step(config.model, counts, 32, 128, output_length=1)
  assert step == {'model': float(6 * n * 32 * 128 + _ATTN), 'head': float(6 * (128 * 2 + 2) * 32)}


# ---------------------------------------------------------------------------
# The fit check: the estimate against XLA's bytes for the compiled real step.

@pytest.mark.parametrize('family, overrides', [
    ('gpt', {}),
    ('bert', {'model.dtype': 'bfloat16', 'model.scan_layers': True, 'model.remat': 'dots'}),
])
def test_estimate_is_within_25_percent_of_the_compiled_step(family, overrides):
  config = config_lib.base_config(family, 'tiny')
  # A small vocabulary: the fused head's chunk (sized per step or per device) stays minor.
  config.model.vocab_size, config.data.sp_vocab_size = 1024, 900
  config.parallel.update(mode='mesh', mesh_data=4, mesh_fsdp=2)
  for field, value in overrides.items():
    group, name = field.split('.')
    config[group][name] = value
  e = estimate.estimate(config, 'h100', 8, 1e9, 0.4, 1.1, 0.429)
  fit = estimate.fit_check(config, 8, e)
  assert fit['total_bytes'] > 0
  assert 0.75 < fit['estimate_over_compiled'] < 1.25, fit


def test_fit_check_needs_the_devices():
  config = config_lib.base_config('gpt', 'tiny')
  e = estimate.estimate(config, 'h100', 64, 1e9, 0.4, 1.1, 0.429)
  with pytest.raises(errors.UserError, match='--num_devices=64: this process has 8 devices'):
    estimate.fit_check(config, 64, e)


def test_cli_compile_fakes_the_devices_it_needs():
  # A fresh process without XLA_FLAGS: the entry point asks for 4 CPU devices itself.
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  result = subprocess.run([sys.executable, '-m', 'ptlm_jax.main.estimate',
                           '--config=configs/gpt.py:tiny', '--num_devices=4', '--compile',
                           '--config.parallel.mode=mesh', '--config.model.num_layers=1',
                           '--config.model.vocab_size=1024', '--config.data.sp_vocab_size=900',
                           '--json'], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  fit = json.loads(result.stdout.strip().splitlines()[-1])['compiled']
  assert fit['num_devices'] == 4 and fit['argument_bytes'] > 0
  assert 0.5 < fit['estimate_over_compiled'] < 2.0
