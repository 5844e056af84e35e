r"""LoRA step time and memory: W + s a.b merged every step (before) vs x W + s (x a) b (now).

  python -m benchmarks.lora_step                    # BERT-base and GPT-2 124M shapes, CPU
  python -m benchmarks.lora_step --batch=1 --seq=128 --steps=3 --models=gpt2

The step is a LoRA fine-tuning step as the loop runs it: the LM loss (BERT: every
position, as an MLM without masking; GPT-2: next token), gradients of the factors only
(the base frozen), Adam on the factors.  `before` is the former `LoraModel.apply`: merge
W + (alpha / r) a.b into every adapted kernel, then run the plain model.  `now` is
`lora.LoraModel` (the low-rank branch beside each adapted projection).  Both are compiled
once; the timed steps alternate between the two (so load on the machine hits both alike)
and the median is reported, with XLA's temporary-buffer bytes of each compiled step
(`memory_analysis`) and the process's peak RSS.  Float32, rank 8, q and v adapted (HF
peft's default), dropout 0.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ptlm_jax import config_lib, models
from ptlm_jax.peft import lora

SHAPES = {
    'bert-base': ('bert', dict(vocab_size=30522, d_model=768, num_layers=12, num_heads=12,
                               head_dim=64, d_ff=3072, max_len=512)),
    'gpt2-124m': ('gpt', dict(vocab_size=50257, d_model=768, num_layers=12, num_heads=12,
                              head_dim=64, d_ff=3072, max_len=1024)),
}


class MergedEveryStep(lora.LoraModel):
  """The former LoraModel: W + s a.b built in every apply."""

  def apply(self, variables, *args, **kwargs):
    params = lora.merged(variables['params'], self.peft_config)
    return self.module.apply({**variables, 'params': params}, *args, **kwargs)


def _step_fn(model, tokens_BxL):
  segments_BxL = jnp.ones_like(tokens_BxL)
  positions_BxL = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)
  optimizer = optax.adam(1e-4)

  def loss_fn(factors, base_params):
    logits_BxLxV = model.apply({'params': {**base_params, lora.LORA: factors}}, tokens=tokens_BxL,
                               segment_ids=segments_BxL, positions=positions_BxL,
                               deterministic=True)
    targets_BxL = jnp.roll(tokens_BxL, -1, axis=1)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, targets_BxL).mean()

  def step(base_params, factors, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(factors, base_params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(factors, updates), opt_state, loss

  return step, optimizer


def bench(name: str, batch: int, seq: int, steps: int) -> dict:
  family, shape = SHAPES[name]
  c = config_lib.base_config(family, 'base')
  c.model.update(dropout_rate=0.0, attention_dropout_rate=0.0, dtype='float32', **shape)
  c.peft.update(method='lora', lora_rank=8, lora_alpha=16.0, lora_targets='(query|value)/kernel$')
  module = models.build_model(c.model)
  inputs = models.dummy_inputs(c.model, 1, 8)
  base = jax.jit(lambda k: nn.unbox(module.init(k, **inputs, deterministic=True))['params'])(
      jax.random.key(0))
  factors = nn.unbox(lora.init_factors(models.abstract_params(c.model), c.peft,
                                       jax.random.key(1)))
  factors = jax.tree.map(lambda x: x + 0.01, factors)  # b != 0: the branch is not trivially 0
  tokens = jnp.asarray(np.random.default_rng(0).integers(7, 1000, (batch, seq)), jnp.int32)
  compiled, states, memory = {}, {}, {}
  for label, cls in (('before', MergedEveryStep), ('now', lora.LoraModel)):
    step, optimizer = _step_fn(cls(module, c.peft), tokens)
    opt_state = optimizer.init(factors)
    start = time.perf_counter()
    compiled[label] = jax.jit(step).lower(base, factors, opt_state).compile()
    analysis = compiled[label].memory_analysis()
    memory[label] = dict(compile_s=round(time.perf_counter() - start, 1),
                         temp_mb=round(analysis.temp_size_in_bytes / 2**20, 1) if analysis else None)
    states[label] = (base, factors, opt_state)
    jax.block_until_ready(compiled[label](*states[label]))  # warm-up step
  times = {'before': [], 'now': []}
  for _ in range(steps):
    for label in ('before', 'now'):
      start = time.perf_counter()
      out = compiled[label](*states[label])
      jax.block_until_ready(out)
      times[label].append(time.perf_counter() - start)
  result = {'model': name, 'batch': batch, 'seq': seq, 'steps': steps}
  for label in ('before', 'now'):
    result[label] = dict(step_ms=round(1000 * statistics.median(times[label]), 1), **memory[label])
  result['speedup'] = round(result['before']['step_ms'] / result['now']['step_ms'], 3)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--models', default='bert-base,gpt2-124m')
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--seq', type=int, default=128)
  parser.add_argument('--steps', type=int, default=5)
  args = parser.parse_args()
  for name in args.models.split(','):
    print(json.dumps(bench(name, args.batch, args.seq, args.steps)), flush=True)


if __name__ == '__main__':
  main()
