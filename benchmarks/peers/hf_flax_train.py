#!/usr/bin/env python
"""Peer: HF transformers' Flax models, trained with optax on one device (its own venv).

bert = FlaxBertForMaskedLM, gpt = FlaxGPT2LMHeadModel, t5 = FlaxT5ForConditionalGeneration,
random init from a config (dropout 0), one fixed synthetic batch (common.make_batch), a
jitted value_and_grad + optax.adamw step with donated state; the median step time over
--steps steps after --warmup (the first includes compilation).  --dtype=bfloat16 builds
the models with `dtype=jnp.bfloat16` (HF's mixed precision: bf16 compute, f32 params and
optimizer).  One JSON line per family (and per --peak / --gen), each with the CPU's bf16
flags and the jnp matmul GFLOP/s at --peak-size^3 (f32, bf16 -> bf16, bf16 -> f32).

  ~/.cache/ptlm-peers/venv/bin/python benchmarks/peers/hf_flax_train.py --config small --dtype bfloat16
"""
import os
import sys
import time
import warnings
from importlib import metadata

warnings.filterwarnings('ignore')
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position

import flax  # pylint: disable=wrong-import-position,g-import-not-at-top
import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import optax  # pylint: disable=wrong-import-position
import transformers  # pylint: disable=wrong-import-position
from flax.traverse_util import flatten_dict  # pylint: disable=wrong-import-position
from transformers import BertConfig, FlaxBertForMaskedLM  # pylint: disable=wrong-import-position
from transformers import FlaxGPT2LMHeadModel, GPT2Config  # pylint: disable=wrong-import-position
from transformers import FlaxT5ForConditionalGeneration, T5Config  # pylint: disable=wrong-import-position

PEER = 'hf-flax'


def versions() -> dict:
  return dict(jax=jax.__version__, jaxlib=metadata.version('jaxlib'), flax=flax.__version__,
              optax=optax.__version__, transformers=transformers.__version__,
              numpy=np.__version__, backend=jax.default_backend(), **common.host_info())


def gpt2_config(c) -> GPT2Config:
  return GPT2Config(vocab_size=c['vocab'], n_embd=c['d_model'], n_layer=c['layers'],
                    n_head=c['heads'], n_inner=c['ffn'], n_positions=common.MAX_POSITIONS,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=common.EOS_ID,
                    eos_token_id=common.EOS_ID, pad_token_id=common.PAD_ID)


def build_model(family: str, c: dict, seed: int, dtype):
  kw = dict(seed=seed, dtype=dtype)
  if family == 'bert':
    conf = BertConfig(vocab_size=c['vocab'], hidden_size=c['d_model'],
                      num_hidden_layers=c['layers'], num_attention_heads=c['heads'],
                      intermediate_size=c['ffn'], max_position_embeddings=common.MAX_POSITIONS,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return FlaxBertForMaskedLM(conf, **kw)
  if family == 'gpt':
    return FlaxGPT2LMHeadModel(gpt2_config(c), **kw)
  conf = T5Config(vocab_size=c['vocab'], d_model=c['d_model'], d_kv=c['d_model'] // c['heads'],
                  d_ff=c['ffn'], num_layers=c['layers'], num_decoder_layers=c['layers'],
                  num_heads=c['heads'], dropout_rate=0.0, decoder_start_token_id=common.PAD_ID,
                  pad_token_id=common.PAD_ID, eos_token_id=common.EOS_ID)
  return FlaxT5ForConditionalGeneration(conf, **kw)


def make_loss(family: str, model):
  ce = lambda logits, labels: optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)  # the loss in float32 whatever the compute dtype

  def loss_fn(params, b):
    if family == 'bert':  # MLM: cross-entropy on the masked positions only
      logits = model(b['input_ids'], params=params, train=False).logits
      return (ce(logits, b['labels']) * b['weights']).sum() / b['weights'].sum()
    if family == 'gpt':  # next token
      logits = model(b['input_ids'], params=params, train=False).logits
      return ce(logits[:, :-1], b['input_ids'][:, 1:]).mean()
    logits = model(input_ids=b['input_ids'], decoder_input_ids=b['decoder_input_ids'],
                   params=params, train=False).logits
    return ce(logits, b['labels']).mean()
  return loss_fn


def bench_family(family: str, a) -> dict:
  c = a.cfg
  model = build_model(family, c, a.seed, jnp.dtype(a.dtype))
  params = model.params  # float32 whatever --dtype
  counts = common.count_params((k, int(np.prod(v.shape)))
                               for k, v in flatten_dict(params, sep='.').items())
  tx = optax.adamw(a.lr, weight_decay=0.01)
  opt_state = tx.init(params)
  loss_fn = make_loss(family, model)

  def train_step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(train_step, donate_argnums=(0, 1))
  batch = {k: jnp.asarray(v) for k, v in common.make_batch(family, c, a.seed).items()}
  losses, times, first = [], [], None
  for i in range(c['warmup'] + c['steps']):
    if i == c['warmup']:
      before = common.cpu_times()
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, batch)
    losses.append(float(jax.block_until_ready(loss)))
    if i == 0:
      first = time.perf_counter() - start
    if i >= c['warmup']:
      times.append(time.perf_counter() - start)
  load = common.contention(before, common.cpu_times())
  assert np.isfinite(losses[-1]), losses
  return common.summarize(family, c, counts, times, a.peak_gflops, peer=PEER, kind='train',
                          dtype=a.dtype, first_step_s=first, loss_first=losses[0],
                          loss_last=losses[-1], **load)


def bench_generate(a) -> dict:
  c = a.cfg
  model = FlaxGPT2LMHeadModel(gpt2_config(c), seed=a.seed, dtype=jnp.dtype(a.dtype))
  prompt = jnp.asarray(common.prompt_batch(a.gen_batch, a.prompt_len, c['vocab'], a.seed))
  total = a.prompt_len + a.new_tokens

  @jax.jit
  def gen(params, ids):  # greedy; min_length makes every row generate all new tokens
    return model.generate(ids, params=params, max_length=total, min_length=total,
                          do_sample=False, pad_token_id=common.PAD_ID,
                          eos_token_id=common.EOS_ID).sequences

  start = time.perf_counter()
  seqs = jax.block_until_ready(gen(model.params, prompt))
  first = time.perf_counter() - start
  assert seqs.shape == (a.gen_batch, total), seqs.shape
  return common.time_generation(lambda: jax.block_until_ready(gen(model.params, prompt)), PEER,
                                c['name'], a, first)


def main():
  a = common.parse_args(__doc__.splitlines()[0])
  info = versions()
  if a.peak_size:
    info['matmul_gflops'] = dict(common.jax_matmul_gflops(a.peak_size), n=a.peak_size)
  if a.peak:
    best = {k: v for k, v in info.get('matmul_gflops', {}).items() if isinstance(v, float)}
    common.emit(dict(peer=PEER, kind='peak', best_gflops=best, **info), a.out)
  if a.peak_gflops is None and isinstance(info.get('matmul_gflops', {}).get('float32'), float):
    a.peak_gflops = info['matmul_gflops']['float32']
  for family in a.family_list:
    common.emit(dict(bench_family(family, a), **info), a.out)
  if a.gen:
    common.emit(dict(bench_generate(a), **info), a.out)


if __name__ == '__main__':
  main()
