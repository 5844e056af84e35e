#!/usr/bin/env python
"""Peer: HF transformers' PyTorch models, eager (or --compile), CPU, torch.optim.AdamW.

The same work as hf_flax_train.py (common.py: presets, batches, FLOPs): bert =
BertForMaskedLM, gpt = GPT2LMHeadModel, t5 = T5ForConditionalGeneration, random init,
train mode with every dropout 0, HF's default attention, torch.set_num_threads(--threads).
--dtype=bfloat16 runs forward and loss under `torch.autocast('cpu', torch.bfloat16)`
(PyTorch's mixed precision: bf16 matmuls, f32 params, optimizer and loss).  One JSON line
per family (and per --peak / --gen), each with the CPU's bf16 flags and the torch matmul
GFLOP/s at --peak-size^3 (float32, bf16).

  ~/.cache/ptlm-peers/venv/bin/python benchmarks/peers/torch_train.py --config small --dtype bfloat16
"""
import contextlib
import os
import sys
import time
import warnings

warnings.filterwarnings('ignore')
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position

import numpy as np  # pylint: disable=wrong-import-position
import torch  # pylint: disable=wrong-import-position
import torch.nn.functional as F  # pylint: disable=wrong-import-position
import transformers  # pylint: disable=wrong-import-position
from transformers import BertConfig, BertForMaskedLM  # pylint: disable=wrong-import-position
from transformers import GPT2Config, GPT2LMHeadModel  # pylint: disable=wrong-import-position
from transformers import T5Config, T5ForConditionalGeneration  # pylint: disable=wrong-import-position

PEER = 'hf-torch'


def versions() -> dict:
  return dict(torch=torch.__version__, transformers=transformers.__version__,
              numpy=np.__version__, torch_threads=torch.get_num_threads(), **common.host_info())


def matmul_gflops(n: int) -> dict:
  """torch n^3 matmul GFLOP/s in float32 and bf16 (torch accumulates bf16 in f32 and
  returns bf16: there is no separate bf16 -> f32 product on the CPU)."""
  g = torch.Generator().manual_seed(0)
  a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
  out = {}
  for name, (x, y) in (('float32', (a, b)), ('bf16', (a.bfloat16(), b.bfloat16()))):
    out[name] = common.time_matmul(lambda x=x, y=y: x @ y, n)
  return out


def gpt2_config(c) -> GPT2Config:
  return GPT2Config(vocab_size=c['vocab'], n_embd=c['d_model'], n_layer=c['layers'],
                    n_head=c['heads'], n_inner=c['ffn'], n_positions=common.MAX_POSITIONS,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=common.EOS_ID,
                    eos_token_id=common.EOS_ID, pad_token_id=common.PAD_ID)


def build_model(family: str, c: dict):
  if family == 'bert':
    conf = BertConfig(vocab_size=c['vocab'], hidden_size=c['d_model'],
                      num_hidden_layers=c['layers'], num_attention_heads=c['heads'],
                      intermediate_size=c['ffn'], max_position_embeddings=common.MAX_POSITIONS,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForMaskedLM(conf)
  if family == 'gpt':
    return GPT2LMHeadModel(gpt2_config(c))
  conf = T5Config(vocab_size=c['vocab'], d_model=c['d_model'], d_kv=c['d_model'] // c['heads'],
                  d_ff=c['ffn'], num_layers=c['layers'], num_decoder_layers=c['layers'],
                  num_heads=c['heads'], dropout_rate=0.0, decoder_start_token_id=common.PAD_ID,
                  pad_token_id=common.PAD_ID, eos_token_id=common.EOS_ID)
  return T5ForConditionalGeneration(conf)


def loss_fn(family: str, model, b, dtype: str):
  cast = (torch.autocast('cpu', torch.bfloat16) if dtype == 'bfloat16'
          else contextlib.nullcontext())
  with cast:
    if family == 't5':
      logits = model(input_ids=b['input_ids'], decoder_input_ids=b['decoder_input_ids']).logits
    else:
      logits = model(input_ids=b['input_ids']).logits
  logits = logits.float()  # the loss in float32, as the Flax peer and ptlm_jax
  if family == 'bert':  # MLM: cross-entropy on the masked positions only
    ce = F.cross_entropy(logits.flatten(0, 1), b['labels'].flatten(), reduction='none')
    w = b['weights'].flatten()
    return (ce * w).sum() / w.sum()
  if family == 'gpt':  # next token
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), b['input_ids'][:, 1:].flatten())
  return F.cross_entropy(logits.flatten(0, 1), b['labels'].flatten())


def bench_family(family: str, a) -> dict:
  c = a.cfg
  torch.manual_seed(a.seed)
  model = build_model(family, c)
  model.train()  # every dropout rate is 0, so train mode is deterministic
  counts = common.count_params((n, p.numel()) for n, p in model.named_parameters())
  opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
  batch = {k: torch.from_numpy(v).long() if v.dtype == np.int32 else torch.from_numpy(v)
           for k, v in common.make_batch(family, c, a.seed).items()}

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(family, model, batch, a.dtype)
    loss.backward()
    opt.step()
    return loss.item()

  if a.compile:
    step = torch.compile(step)
  losses, times, first = [], [], None
  for i in range(c['warmup'] + c['steps']):
    if i == c['warmup']:
      before = common.cpu_times()
    start = time.perf_counter()
    losses.append(step())
    if i == 0:
      first = time.perf_counter() - start
    if i >= c['warmup']:
      times.append(time.perf_counter() - start)
  load = common.contention(before, common.cpu_times())
  assert np.isfinite(losses[-1]), losses
  return common.summarize(family, c, counts, times, a.peak_gflops,
                          peer=PEER + ('-compile' if a.compile else ''), kind='train',
                          dtype=a.dtype, first_step_s=first, loss_first=losses[0],
                          loss_last=losses[-1], **load,
                          attn_implementation=model.config._attn_implementation)  # pylint: disable=protected-access


@torch.inference_mode()
def bench_generate(a) -> dict:
  c = a.cfg
  torch.manual_seed(a.seed)
  model = GPT2LMHeadModel(gpt2_config(c)).eval()
  prompt = common.prompt_batch(a.gen_batch, a.prompt_len, c['vocab'], a.seed)
  prompt = torch.from_numpy(prompt).long()
  mask = torch.ones_like(prompt)
  cast = (torch.autocast('cpu', torch.bfloat16) if a.dtype == 'bfloat16'
          else contextlib.nullcontext())

  def gen():  # greedy; min_new_tokens makes every row generate all new tokens
    with cast:
      return model.generate(prompt, attention_mask=mask, max_new_tokens=a.new_tokens,
                            min_new_tokens=a.new_tokens, do_sample=False,
                            pad_token_id=common.PAD_ID, eos_token_id=common.EOS_ID)

  start = time.perf_counter()
  seqs = gen()
  first = time.perf_counter() - start
  assert tuple(seqs.shape) == (a.gen_batch, a.prompt_len + a.new_tokens), seqs.shape
  return common.time_generation(gen, PEER, c['name'], a, first)


def main():
  def extra(p):
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    p.add_argument('--compile', action='store_true', help='torch.compile the train step')
  a = common.parse_args(__doc__.splitlines()[0], extra)
  torch.set_num_threads(a.threads)
  info = versions()
  if a.peak_size:
    info['matmul_gflops'] = dict(matmul_gflops(a.peak_size), n=a.peak_size)
  if a.peak:
    best = {k: v for k, v in info.get('matmul_gflops', {}).items() if isinstance(v, float)}
    common.emit(dict(peer=PEER, kind='peak', best_gflops=best, **info), a.out)
  if a.peak_gflops is None and a.peak_size:
    a.peak_gflops = info['matmul_gflops']['float32']
  for family in a.family_list:
    common.emit(dict(bench_family(family, a), **info), a.out)
  if a.gen:
    common.emit(dict(bench_generate(a), **info), a.out)


if __name__ == '__main__':
  main()
