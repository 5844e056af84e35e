"""Config loading, overrides, locking and validation errors."""
import subprocess
import sys
import os

import pytest

from ptlm_jax import config_lib, errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('family', config_lib.FAMILIES)
@pytest.mark.parametrize('variant', config_lib.VARIANTS)
def test_every_variant_validates(family, variant):
  config = config_lib.base_config(family, variant)
  config_lib.validate(config, num_devices=8)
  assert config.objective.name == {'bert': 'mlm', 'gpt': 'causal_lm', 't5': 'span_corruption'}[family]
  assert config.model.vocab_size % 128 == 0


def test_padded_vocab_size_rounds_up_to_128():
  # 32000 pieces + 100 sentinels = 32100 -> 32128, exactly T5's embedding size.
  assert config_lib.padded_vocab_size(32000) == 32128
  assert config_lib.padded_vocab_size(8000) == 8192
  assert config_lib.padded_vocab_size(28) == 128


@pytest.mark.parametrize('field, value, words', [
    ('optim.lr', -1e-3, 'a number > 0'),
    ('data.seq_len', 0, 'a number > 0'),
    ('objective.mask_rate', 1.5, 'open interval (0, 1)'),
    ('objective.mask_rate', 0.0, 'open interval (0, 1)'),
    ('model.family', 'rnn', "one of ('bert', 'gpt', 't5')"),
    ('objective.name', 'span_corruption', "one of ('causal_lm', 'prefix_lm')"),
    ('train.batch_size', 30, 'devices x microbatches'),
    ('data.length_buckets', 4, 'it applies to fine-tuning (task.name)'),  # a pretraining config
    ('data.length_buckets', 1000, '0 (off) or 1..data.seq_len'),
])
def test_validation_names_field_value_and_allowed(field, value, words):
  config = config_lib.base_config('gpt', 'tiny')
  group, name = field.split('.')
  config[group][name] = value
  with pytest.raises(errors.ConfigError) as err:
    config_lib.validate(config, num_devices=8)
  message = str(err.value)
  assert f'config.{field}=' in message and repr(value) in message and words in message
  assert '\n' not in message


def test_locked_config_rejects_unknown_field():
  config = config_lib.base_config('bert', 'tiny')
  config.lock()
  with pytest.raises(AttributeError):
    config.optim.learning_rate = 1e-4  # the field is optim.lr


def _main(*args):
  return subprocess.run([sys.executable, '-m', 'ptlm_jax.main', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_cli_bad_value_is_one_line_without_traceback(tmp_path):
  result = _main('--config=configs/gpt.py:tiny', f'--workdir={tmp_path}', '--config.optim.lr=-1')
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert 'config.optim.lr=-1' in result.stderr and 'a number > 0' in result.stderr


def test_cli_unknown_field_is_an_error(tmp_path):
  result = _main('--config=configs/gpt.py:tiny', f'--workdir={tmp_path}', '--config.optim.learning_rate=1')
  assert result.returncode != 0
  assert 'learning_rate' in result.stderr


def test_helpfull_documents_config_and_workdir():
  result = _main('--helpfull')
  assert '--config' in result.stdout and '--workdir' in result.stdout
