"""pretrained.from_pretrained on a training workdir: errors that name the path."""
import pytest

from ptlm_jax import errors
from ptlm_jax.training import checkpoint, pretrained


def test_workdir_without_finished_checkpoint_is_a_named_error(tmp_path):
  (tmp_path / 'checkpoints').mkdir()
  with pytest.raises(errors.UserError, match='holds no finished checkpoint'):
    pretrained.from_pretrained(str(tmp_path))


def test_missing_step_lists_the_steps(tmp_path):
  (tmp_path / 'checkpoints' / '10').mkdir(parents=True)
  with pytest.raises(errors.UserError, match=r'has no step 5 \(it has \[10\]\)'):
    checkpoint.load_workdir_params(str(tmp_path), step=5)


def test_a_plain_directory_goes_to_the_hf_loader(tmp_path):
  with pytest.raises(errors.UserError, match='config.json'):
    pretrained.from_pretrained(str(tmp_path))
