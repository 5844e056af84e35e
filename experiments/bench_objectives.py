r"""What each pretraining objective costs per batch on the default device.

  python experiments/bench_objectives.py [--batch 256] [--check_cpu]

Builds each objective from the family's base config at its usual row length, feeds
it synthetic packed rows (documents of ~200 ordinary ids, EOS-terminated) already on
the device, and prints a markdown table: compile seconds and the median of 20 timed
calls.  --check_cpu also runs a small batch on the CPU backend and checks that the
outputs are bit-identical (the objectives are pure functions of batch and rng).
"""
import argparse
import time

import jax
import numpy as np

from ptlm_jax import config_lib, objectives
from ptlm_jax.data import vocab

PIECES = 32000
SETTINGS = [  # (label, family, seq_len, objective overrides)
    ('mlm fixed, predict positions', 'bert', 512, dict(max_predictions=80)),
    ('mlm fixed, whole words', 'bert', 512, dict(max_predictions=80, whole_word=True)),
    ('mlm bernoulli, all positions', 'bert', 512, dict(mask_count_mode='bernoulli')),
    ('causal_lm', 'gpt', 1024, dict(name='causal_lm')),
    ('prefix_lm (decoder)', 'gpt', 1024, dict(name='prefix_lm')),
    ('span_corruption', 't5', 512, dict(name='span_corruption')),
    ('prefix_lm (encoder-decoder)', 't5', 512, dict(name='prefix_lm')),
    # X (3, 0.5) would need 127 sentinels at 512; the rest of the paper's mixture:
    ('ul2 (6 denoisers)', 't5', 512,
     dict(name='ul2', ul2_mixture='R:3:0.15,R:8:0.15,S,X:8:0.5,X:64:0.15,X:64:0.5')),
]


def packed_rows(batch, length, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(vocab.FIRST_ORDINARY_ID, PIECES, (batch, length)).astype(np.int32)
  ends = rng.random((batch, length)) < 1 / 200
  ends[:, -1] = True
  tokens[ends] = vocab.EOS_ID
  starts = np.concatenate([np.ones((batch, 1), bool), ends[:, :-1]], axis=1)
  segments = np.cumsum(starts, axis=1).astype(np.int32)
  idx = np.arange(length)
  positions = idx - np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
  return {'tokens': tokens, 'segment_ids': segments, 'positions': positions.astype(np.int32)}


def build(family, seq_len, overrides, vocab_info):
  config = config_lib.base_config(family, 'base')
  config.data.seq_len = seq_len
  for k, v in overrides.items():
    config.objective[k] = v
  config_lib.validate(config)
  return objectives.get_objective(config, vocab_info)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--check_cpu', action='store_true')
  args = parser.parse_args()
  vocab_info = vocab.VocabInfo(
      PIECES, word_start=np.random.default_rng(1).random(PIECES + vocab.NUM_SENTINELS) < 0.6)
  device = jax.devices()[0]
  print(f'device: {device.device_kind}, jax {jax.__version__}, batch {args.batch}\n')
  print('| objective | row in | targets | compile s | ms / batch | same on CPU |')
  print('|---|---|---|---|---|---|')
  for label, family, seq_len, overrides in SETTINGS:
    objective = build(family, seq_len, overrides, vocab_info)
    batch = jax.device_put(packed_rows(args.batch, objective.raw_length), device)
    rng = jax.random.key(0)
    start = time.perf_counter()
    fn = jax.jit(objective).lower(batch, rng).compile()
    compile_s = time.perf_counter() - start
    for _ in range(3):
      jax.block_until_ready(fn(batch, rng))
    times = []
    for i in range(20):
      start = time.perf_counter()
      jax.block_until_ready(fn(batch, jax.random.key(i)))
      times.append(time.perf_counter() - start)
    same = ''
    if args.check_cpu:
      small = packed_rows(8, objective.raw_length, seed=2)
      here = jax.jit(objective)(jax.device_put(small, device), rng)
      cpu = jax.devices('cpu')[0]
      with jax.default_device(cpu):
        there = jax.jit(objective)(jax.device_put(small, cpu), jax.device_put(rng, cpu))
      same = str(all(np.array_equal(a, b) for a, b in
                     zip(jax.tree.leaves(here), jax.tree.leaves(there))))
    print(f'| {label} | {objective.raw_length} | {objective.targets_length} | '
          f'{compile_s:.1f} | {1e3 * np.median(times):.2f} | {same} |', flush=True)


if __name__ == '__main__':
  main()
