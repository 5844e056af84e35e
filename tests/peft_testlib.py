"""Shared setup of the tests/test_peft*.py files: real families on synthetic packed rows.

`family_config(family, ...)` is a whole run config (2 layers, d_model 32, 16-token rows);
`components_fn()` builds the real model and objective of the config's family and feeds
them the stand-ins' counting documents, so the training loop runs every family without a
tokenizer or a corpus.
"""
import jax
import numpy as np

import stand_ins
from ptlm_jax import config_lib, models, objectives
from ptlm_jax.data import vocab
from ptlm_jax.training import train

VOCAB = 256


def family_config(family: str, overrides: dict | None = None, **model_fields):
  c = config_lib.base_config(family, 'tiny')
  c.model.update(vocab_size=VOCAB, d_model=32, num_heads=2, head_dim=16, d_ff=64, num_layers=2,
                 num_decoder_layers=2, max_len=64, relative_buckets=8, relative_max_distance=16,
                 dropout_rate=0.0, attention_dropout_rate=0.0)
  c.model.update(model_fields)
  c.data.seq_len, c.data.sp_vocab_size = 16, VOCAB - vocab.NUM_SENTINELS
  c.data.tokenizer_path = 'synthetic-rows'  # never read: the rows are made up
  c.objective.max_predictions = 4
  c.optim.update(lr=1e-2, warmup_steps=0, decay='constant', optimizer='adamw')
  c.parallel.update(mode='pmap', num_devices=1)
  c.train.update(steps=2, batch_size=8, log_every=1, eval_every=100, eval_steps=0,
                 checkpoint_every=100, keep_best_by='')
  for key, value in (overrides or {}).items():
    group, field = key.split('.')
    c[group][field] = value
  return c


def components_fn(num_batches: int | None = None):
  """Real model and objective, synthetic rows (the same rows every step with num_batches=1)."""

  def build(config):
    c = config
    objective = objectives.get_objective(c, vocab.VocabInfo(VOCAB - vocab.NUM_SENTINELS))
    rows = lambda seed: stand_ins.SyntheticRows(
        c.train.batch_size, objective.raw_length, VOCAB, seed=seed, num_batches=num_batches)
    train_iter = _Repeat(rows(c.data.shuffle_seed)) if num_batches else rows(c.data.shuffle_seed)
    return train.Components(models.build_model(c.model), objective, train_iter,
                            lambda: rows(10_000))

  return build


class _Repeat:
  """The first `num_batches` batches of an iterator, over and over (to overfit them)."""

  def __init__(self, rows):
    self.rows = rows

  def __next__(self):
    batch = self.rows.global_batch(self.rows.index % self.rows.num_batches)
    self.rows.index += 1
    return batch

  def get_state(self):
    return self.rows.get_state()

  def set_state(self, state):
    self.rows.set_state(state)


def random_params(model_config, seed: int = 0, std: float = 0.05) -> dict:
  """Params of the model's shapes without compiling its init: norm scales 1, biases 0,
  every other leaf normal(std)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  abstract = nn.unbox(models.abstract_params(model_config))

  def fill(path, leaf):
    name = str(getattr(path[-1], 'key', path[-1]))
    if name == 'scale':
      return np.ones(leaf.shape, np.float32)
    if name == 'bias':
      return np.zeros(leaf.shape, np.float32)
    return (std * rng.standard_normal(leaf.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def restore_state(workdir, step: int) -> dict:
  """The raw `state` item of a checkpoint (whatever params it holds), as numpy."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.StandardCheckpointer().restore(f'{workdir}/checkpoints/{step}/state')


def flat(tree) -> dict:
  """'a/b/0/c' -> numpy leaf, for any nesting of dicts, lists and tuples."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree)):
    keys = [str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k)))) for k in path]
    out['/'.join(keys)] = np.asarray(leaf)
  return out


def assert_trees_equal(a, b):
  fa, fb = flat(a), flat(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
