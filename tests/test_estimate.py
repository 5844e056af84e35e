"""The cost estimator: counts from the model code, and the handout's GPT-3 figures."""
import os
import subprocess
import sys

import pytest

from ptlm_jax import config_lib, errors, estimate, models

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
  # Fine-tuning at 10 MWh on the same grid: 4.29 t CO2, i.e. 99.2% less than 1,287 MWh.
  assert estimate.co2_kg_for_energy(10_000) == pytest.approx(4290)
  assert 1 - 10 / 1287 == pytest.approx(0.9922, abs=1e-4)


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
