r"""Small stand-ins for the data pipeline, objective and model, to test the loop alone.

They follow INTERFACES.md: `TinyLM` has the gpt call signature and creates every
parameter with `nn.with_logical_partitioning`; `NoisyNextToken` is an objective
(`raw_length`, `(batch, rng) -> (inputs, targets, weights)`) that also draws random
numbers, so layout-independence of the per-row keys is tested; `SyntheticRows` is a
packed-row iterator with `get_state()` / `set_state()` that reads only its process's
rows of each global batch.

Run as a script, it trains in a workdir (the subprocess tests use this):

  python tests/stand_ins.py WORKDIR '{"train.steps": 8}' [--sleep 0.2] [--modes mesh,pmap]

Legend: B batch rows, L length, D d_model, H heads, K head_dim, F d_ff, V vocab.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ptlm_jax import errors
from ptlm_jax import config_lib  # pylint: disable=g-import-not-at-top

# The loop tests compile the same small programs in many runs and processes; a
# persistent cache keeps the test time down (it changes no result: same program, same binary).
jax.config.update('jax_compilation_cache_dir',
                  os.path.join(tempfile.gettempdir(), 'ptlm_jax_test_xla_cache'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

POISON_ID = 3  # a batch holding this id gets NaN weights (NaN-guard tests)
FIRST_ID = 7


def tiny_config(overrides: dict | None = None):
  """A gpt config shrunk to stand-in size; overrides are {'group.field': value}."""
  c = config_lib.base_config('gpt', 'tiny')
  m = c.model
  m.vocab_size, m.d_model, m.num_heads, m.head_dim, m.d_ff = 256, 32, 2, 16, 64
  m.num_layers, m.max_len, m.dropout_rate, m.attention_dropout_rate = 1, 64, 0.0, 0.0
  c.data.seq_len, c.data.sp_vocab_size = 16, 100
  c.optim.lr, c.optim.warmup_steps = 1e-2, 2
  t = c.train
  t.steps, t.batch_size, t.log_every, t.eval_every, t.eval_steps, t.checkpoint_every = 4, 16, 1, 2, 2, 2
  for key, value in (overrides or {}).items():
    group, field = key.split('.')
    c[group][field] = value
  return c


# ---------------------------------------------------------------------------
# Model.

def _param(module, name, init, names, shape):
  return module.param(name, nn.with_logical_partitioning(init, names), shape)


class LayerNorm(nn.Module):
  features: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    scale = _param(self, 'scale', nn.initializers.ones, ('embed',), (self.features,))
    bias = _param(self, 'bias', nn.initializers.zeros, ('embed',), (self.features,))
    x = x.astype(jnp.float32)
    x = (x - x.mean(-1, keepdims=True)) * jax.lax.rsqrt(x.var(-1, keepdims=True) + 1e-5)
    return (x * scale + bias).astype(self.dtype)


class Dense(nn.Module):
  features: int
  names: tuple[str, str]
  dtype: Any

  @nn.compact
  def __call__(self, x):
    kernel = _param(self, 'kernel', nn.initializers.normal(0.02), self.names,
                    (x.shape[-1], self.features))
    bias = _param(self, 'bias', nn.initializers.zeros, self.names[1:], (self.features,))
    return x @ kernel.astype(self.dtype) + bias.astype(self.dtype)


class TinyLM(nn.Module):
  """One pre-LN transformer block with tied embeddings; causal within segments."""
  vocab_size: int
  d_model: int
  num_heads: int
  head_dim: int
  d_ff: int
  max_len: int
  dropout_rate: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, tokens, segment_ids, positions, prefix_mask=None, decode=False,
               deterministic=True):
    del prefix_mask, decode
    normal = nn.initializers.normal(0.02)
    dtype = jnp.dtype(self.dtype)
    embed_VxD = _param(self, 'embedding', normal, ('vocab', 'embed'), (self.vocab_size, self.d_model))
    pos_LxD = _param(self, 'position', normal, ('position', 'embed'), (self.max_len, self.d_model))
    x_BxLxD = (embed_VxD[tokens] + pos_LxD[positions]).astype(dtype)
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, ('batch', 'length', 'embed'))

    # Attention, causal within each packed document.
    h_BxLxD = LayerNorm(self.d_model, dtype, name='ln_attn')(x_BxLxD)
    qkv_3xDxHxK = _param(self, 'qkv', normal, (None, 'embed', 'heads', 'kv'),
                         (3, self.d_model, self.num_heads, self.head_dim))
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (jnp.einsum('bld,dhk->blhk', h_BxLxD, w.astype(dtype))
                                       for w in qkv_3xDxHxK)
    length = tokens.shape[1]
    causal_LxL = jnp.tril(jnp.ones((length, length), bool))
    same_BxLxL = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, :, None] > 0)
    mask_Bx1xLxL = (causal_LxL[None] & same_BxLxL)[:, None]
    logits_BxHxLxL = jnp.einsum('blhk,bmhk->bhlm', q_BxLxHxK, k_BxLxHxK) / np.sqrt(self.head_dim)
    logits_BxHxLxL = jnp.where(mask_Bx1xLxL, logits_BxHxLxL.astype(jnp.float32), -1e9)
    probs_BxHxLxL = jax.nn.softmax(logits_BxHxLxL).astype(dtype)
    o_BxLxHxK = jnp.einsum('bhlm,bmhk->blhk', probs_BxHxLxL, v_BxLxHxK)
    out_HxKxD = _param(self, 'attn_out', normal, ('heads', 'kv', 'embed'),
                       (self.num_heads, self.head_dim, self.d_model))
    attn_BxLxD = jnp.einsum('blhk,hkd->bld', o_BxLxHxK, out_HxKxD.astype(dtype))
    x_BxLxD = x_BxLxD + nn.Dropout(self.dropout_rate)(attn_BxLxD, deterministic=deterministic)

    # MLP.
    h_BxLxD = LayerNorm(self.d_model, dtype, name='ln_mlp')(x_BxLxD)
    h_BxLxF = nn.gelu(Dense(self.d_ff, ('embed', 'mlp'), dtype, name='mlp_in')(h_BxLxD))
    h_BxLxF = nn.with_logical_constraint(h_BxLxF, ('batch', 'length', 'mlp'))
    out_BxLxD = Dense(self.d_model, ('mlp', 'embed'), dtype, name='mlp_out')(h_BxLxF)
    x_BxLxD = x_BxLxD + nn.Dropout(self.dropout_rate)(out_BxLxD, deterministic=deterministic)
    x_BxLxD = LayerNorm(self.d_model, dtype, name='final_norm')(x_BxLxD)
    return jnp.einsum('bld,vd->blv', x_BxLxD, embed_VxD.astype(dtype)).astype(jnp.float32)


def build_model(model_config) -> TinyLM:
  m = model_config
  return TinyLM(m.vocab_size, m.d_model, m.num_heads, m.head_dim, m.d_ff, m.max_len,
                m.dropout_rate, m.dtype)


# ---------------------------------------------------------------------------
# Objective.

class NoisyNextToken:
  """Next-token prediction within documents; `noise` of the inputs replaced at random."""

  def __init__(self, seq_len: int, vocab_size: int, noise: float = 0.1):
    self.raw_length, self.vocab_size, self.noise = seq_len, vocab_size, noise

  def __call__(self, batch, rng):
    tokens_BxL, segments_BxL = batch['tokens'], batch['segment_ids']
    targets_BxL = jnp.concatenate([tokens_BxL[:, 1:], jnp.zeros_like(tokens_BxL[:, :1])], axis=1)
    next_segment_BxL = jnp.concatenate([segments_BxL[:, 1:], jnp.zeros_like(segments_BxL[:, :1])], 1)
    weights_BxL = ((next_segment_BxL == segments_BxL) & (segments_BxL > 0)).astype(jnp.float32)
    poisoned_Bx1 = jnp.any(tokens_BxL == POISON_ID, axis=1, keepdims=True)
    weights_BxL = jnp.where(poisoned_Bx1, jnp.nan, weights_BxL)
    noise_rng, id_rng = jax.random.split(rng)
    noisy_BxL = jax.random.bernoulli(noise_rng, self.noise, tokens_BxL.shape) & (segments_BxL > 0)
    random_BxL = jax.random.randint(id_rng, tokens_BxL.shape, FIRST_ID, self.vocab_size)
    inputs = dict(tokens=jnp.where(noisy_BxL, random_BxL, tokens_BxL), segment_ids=segments_BxL,
                  positions=batch['positions'])
    return inputs, targets_BxL, weights_BxL


# ---------------------------------------------------------------------------
# Data.

class SyntheticRows:
  """Packed rows of counting documents (next id = id + 1), deterministic in (seed, index)."""

  def __init__(self, batch_size: int, seq_len: int, vocab_size: int, *, seed: int = 0,
               process_index: int = 0, process_count: int = 1, num_batches: int | None = None,
               poison_at: tuple[int, ...] = (), sleep: float = 0.0):
    self.batch_size, self.seq_len, self.vocab_size = batch_size, seq_len, vocab_size
    self.seed, self.num_batches, self.poison_at, self.sleep = seed, num_batches, poison_at, sleep
    rows = batch_size // process_count
    self.rows = slice(process_index * rows, (process_index + 1) * rows)
    self.index = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self.num_batches is not None and self.index >= self.num_batches:
      raise StopIteration
    if self.sleep:
      time.sleep(self.sleep)
    batch = self.global_batch(self.index)
    self.index += 1
    return {k: v[self.rows] for k, v in batch.items()}

  def global_batch(self, index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, index])
    shape = (self.batch_size, self.seq_len)
    tokens, segments, positions = (np.zeros(shape, np.int32) for _ in range(3))
    span = self.vocab_size - FIRST_ID
    for row in range(self.batch_size):
      at, doc = 0, 1
      while at < self.seq_len - 2:
        n = min(int(rng.integers(3, self.seq_len)), self.seq_len - at)
        start = int(rng.integers(0, span))
        tokens[row, at:at + n - 1] = FIRST_ID + (start + np.arange(n - 1)) % span
        tokens[row, at + n - 1] = 1  # EOS
        segments[row, at:at + n], positions[row, at:at + n] = doc, np.arange(n)
        at, doc = at + n, doc + 1
    if index in self.poison_at:
      tokens[0, 0] = POISON_ID
    return dict(tokens=tokens, segment_ids=segments, positions=positions)

  def get_state(self) -> dict:
    return {'index': self.index}

  def set_state(self, state: dict) -> None:
    self.index = int(state['index'])


def components_fn(poison_at=(), sleep=0.0):
  """A `components_fn` for train.run built from the stand-ins."""
  from ptlm_jax.training import train  # pylint: disable=g-import-not-at-top

  def build(config):
    c, shard = config, dict(process_index=jax.process_index(), process_count=jax.process_count())
    model = build_model(c.model)
    objective = NoisyNextToken(c.data.seq_len, c.model.vocab_size)
    train_iter = SyntheticRows(c.train.batch_size, c.data.seq_len, c.model.vocab_size,
                               seed=c.data.shuffle_seed, poison_at=poison_at, sleep=sleep, **shard)
    eval_batches = lambda: SyntheticRows(c.train.batch_size, c.data.seq_len, c.model.vocab_size,
                                         seed=10_000 + c.data.shuffle_seed, num_batches=3, **shard)
    return train.Components(model, objective, train_iter, eval_batches)

  return build


def read_metrics(workdir: str, prefix: str = 'train/') -> dict[int, dict[str, float]]:
  """step -> {name: value} from <workdir>/metrics.jsonl (the last line of a step wins)."""
  out: dict[int, dict[str, float]] = {}
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    for line in f:
      record = json.loads(line)
      values = {k[len(prefix):]: v for k, v in record.items() if k.startswith(prefix)}
      if values:
        out.setdefault(record['step'], {}).update(values)
  return out


def train(workdir, overrides=None, **kwargs) -> dict[int, dict[str, float]]:
  """Runs the loop with the stand-ins in-process; returns the train scalars by step."""
  from ptlm_jax.training import train as train_lib  # pylint: disable=g-import-not-at-top
  train_lib.run(tiny_config(overrides), str(workdir), components_fn(**kwargs))
  return read_metrics(str(workdir))


def main(argv: list[str]) -> int:
  from ptlm_jax.training import train  # pylint: disable=g-import-not-at-top
  workdir, overrides = argv[1], json.loads(argv[2])
  sleep = float(argv[argv.index('--sleep') + 1]) if '--sleep' in argv else 0.0
  modes = argv[argv.index('--modes') + 1].split(',') if '--modes' in argv else [None]
  try:
    for i, mode in enumerate(modes):  # later modes train in WORKDIR-<mode>
      run_overrides = {**overrides, 'parallel.mode': mode} if mode else overrides
      train.run(tiny_config(run_overrides), workdir if i == 0 else f'{workdir}-{mode}',
                components_fn(sleep=sleep))
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
