"""What the peer benchmarks share: presets, synthetic batches, FLOPs, the machine's record.

`hf_flax_train.py` and `torch_train.py` (HF transformers' Flax and PyTorch models) import
this, so the work they time is the same: the shapes, one fixed synthetic batch per family
(numpy, fixed seed), the FLOP formula, and per JSON line the machine's bf16 features and
measured matmul peaks.  numpy only; the project's own benchmark (`benchmarks/train_step.py`)
copies PRESETS and the batch conventions.

Legend: B batch, S input length (T5: encoder), T T5 target length, V vocab.
"""
import argparse
import json
import os
import platform
import re
import resource
import statistics
import time

import numpy as np

# T5: `seq` is the encoder (input) length, `tgt_len` the decoder (target) length.
PRESETS = {
    'small': dict(vocab=8192, d_model=256, layers=4, heads=4, ffn=1024, seq=128, tgt_len=32,
                  batch=32, steps=10, warmup=2),
    'base-ish': dict(vocab=8192, d_model=512, layers=6, heads=8, ffn=2048, seq=256, tgt_len=64,
                     batch=8, steps=6, warmup=2),
}
FAMILIES = ('bert', 'gpt', 't5')
DTYPES = ('float32', 'bfloat16')
MAX_POSITIONS = 512  # BERT / GPT-2 position tables
MASK_ID, PAD_ID, EOS_ID = 4, 0, 1
FIRST_REGULAR_ID = 5  # synthetic tokens are drawn from [5, vocab - 100)
N_SENTINELS = 100  # T5: the last 100 ids are sentinels
# /proc/cpuinfo flags that decide whether bf16 matmuls are fast on a CPU.
BF16_FLAGS = ('amx_bf16', 'amx_tile', 'avx512_bf16', 'avx512f', 'avx2')


def parse_args(description: str, extra=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=description)
  p.add_argument('--config', default='small', choices=sorted(PRESETS))
  p.add_argument('--families', default='bert,gpt,t5', help="comma list of bert,gpt,t5 ('' = none)")
  for k in ('vocab', 'd_model', 'layers', 'heads', 'ffn', 'seq', 'tgt_len', 'batch', 'steps',
            'warmup'):
    p.add_argument('--' + k.replace('_', '-'), type=int, default=None, help='overrides the preset')
  p.add_argument('--dtype', default='float32', choices=DTYPES,
                 help='compute dtype (params and optimizer stay float32)')
  p.add_argument('--lr', type=float, default=1e-4)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--peak', action='store_true', help='also emit a kind=peak line (best of sizes)')
  p.add_argument('--peak-size', type=int, default=2048,
                 help='n of the n^3 matmuls whose GFLOP/s every line records (0: none)')
  p.add_argument('--peak-gflops', type=float, default=None,
                 help='MFU denominator (default: the float32 peak measured in this run)')
  p.add_argument('--gen', action='store_true', help='also time GPT-2 greedy generation')
  p.add_argument('--gen-batch', type=int, default=8)
  p.add_argument('--prompt-len', type=int, default=16)
  p.add_argument('--new-tokens', type=int, default=128)
  p.add_argument('--gen-runs', type=int, default=5)
  p.add_argument('--out', default=None, help='also append the JSON lines to this file')
  if extra:
    extra(p)
  a = p.parse_args()
  cfg = dict(PRESETS[a.config])
  for k in cfg:
    if getattr(a, k, None) is not None:
      cfg[k] = getattr(a, k)
  cfg['name'] = a.config
  a.cfg = cfg
  a.family_list = [f for f in a.families.split(',') if f]
  unknown = sorted(set(a.family_list) - set(FAMILIES))
  if unknown:
    p.error(f'--families: unknown {unknown}, expected some of {FAMILIES}')
  return a


def make_batch(family: str, cfg: dict, seed: int = 0) -> dict:
  """One synthetic int32 batch (numpy), the same for every peer given (family, cfg, seed)."""
  rng = np.random.RandomState(seed)
  b, s, t, v = cfg['batch'], cfg['seq'], cfg['tgt_len'], cfg['vocab']
  hi = v - N_SENTINELS
  if family == 'bert':  # 15% of positions (and position 0 of each row) become [MASK]
    tokens = rng.randint(FIRST_REGULAR_ID, hi, size=(b, s)).astype(np.int32)
    masked = rng.rand(b, s) < 0.15
    masked[:, 0] = True
    return dict(input_ids=np.where(masked, MASK_ID, tokens).astype(np.int32), labels=tokens,
                weights=masked.astype(np.float32))
  if family == 'gpt':
    return dict(input_ids=rng.randint(FIRST_REGULAR_ID, hi, size=(b, s)).astype(np.int32))
  # T5: span corruption's shapes (values do not change the compute); targets end in EOS.
  inputs = rng.randint(FIRST_REGULAR_ID, hi, size=(b, s)).astype(np.int32)
  labels = rng.randint(FIRST_REGULAR_ID, v, size=(b, t)).astype(np.int32)
  labels[:, -1] = EOS_ID
  decoder_inputs = np.concatenate([np.full((b, 1), PAD_ID, np.int32), labels[:, :-1]], axis=1)
  return dict(input_ids=inputs, decoder_input_ids=decoder_inputs, labels=labels)


def prompt_batch(batch: int, prompt_len: int, vocab: int, seed: int = 0) -> np.ndarray:
  rng = np.random.RandomState(seed + 1)
  return rng.randint(FIRST_REGULAR_ID, vocab - N_SENTINELS, size=(batch, prompt_len)).astype(np.int32)


# Embedding tables and vocabulary-sized output weights (tied or lookups: not in the FLOPs).
EMBEDDING_RE = re.compile(
    r'(word_embeddings|position_embeddings|token_type_embeddings|(^|\.)wte\.|(^|\.)wpe\.'
    r'|^shared\.|embed_tokens|lm_head|predictions\.bias|predictions\.decoder)')
# T5's decoder cross-attention K/V projections: they run over the encoder's tokens.
CROSS_KV_RE = re.compile(r'EncDecAttention\.(k|v)\.')


def count_params(named_sizes) -> dict:
  """(dotted name, numel) pairs -> totals; embeddings / LM head apart, T5 decoder apart."""
  total = enc = dec = emb = cross_kv = 0
  for name, n in named_sizes:
    total += n
    if EMBEDDING_RE.search(name):
      emb += n
    elif name.startswith('decoder.'):
      dec += n
      cross_kv += n if CROSS_KV_RE.search(name) else 0
    else:
      enc += n
  return dict(params_total=total, params_embedding=emb, params_non_embedding=enc + dec,
              params_non_embedding_dec=dec, params_cross_kv=cross_kv)


def flops_per_step(family: str, cfg: dict, counts: dict) -> dict:
  """Model FLOPs per step (forward + backward = 3 x forward), PaLM's MFU convention.

  dense = 6 N_nonemb tokens; attention = 12 layers d_model context tokens (causal counted
  in full).  T5: dense = 6 ((N_enc + N_xkv) B S + (N_dec - N_xkv) B T), N_xkv the decoder's
  cross-attention K/V (they see the encoder's tokens); attention = 12 L d (S B S + T B T +
  S B T).  The vocabulary projection (6 d V output tokens) is `head`, apart.
  """
  b, s, t, d, n_layers, v = (cfg[k] for k in ('batch', 'seq', 'tgt_len', 'd_model', 'layers', 'vocab'))
  n, n_dec, xkv = (counts[k] for k in ('params_non_embedding', 'params_non_embedding_dec',
                                       'params_cross_kv'))
  if family == 't5':
    dense = 6 * ((n - n_dec + xkv) * b * s + (n_dec - xkv) * b * t)
    attn = 12 * n_layers * d * (s * b * s + t * b * t + s * b * t)
    head = 6 * d * v * b * t
  else:
    dense = 6 * n * b * s
    attn = 12 * n_layers * d * s * b * s
    head = 6 * d * v * b * s
  return dict(model_flops_per_step=dense + attn, head_flops_per_step=head)


def summarize(family: str, cfg: dict, counts: dict, step_times, peak_gflops, **extra) -> dict:
  med = statistics.median(step_times)
  fl = flops_per_step(family, cfg, counts)
  b, s, t = cfg['batch'], cfg['seq'], cfg['tgt_len']
  rec = dict(family=family, config=cfg['name'], batch=b, seq=s,
             tgt_len=t if family == 't5' else None, **counts, **fl,
             step_ms_median=med * 1e3, step_ms_min=min(step_times) * 1e3,
             step_ms_max=max(step_times) * 1e3, timed_steps=len(step_times),
             tokens_per_s=b * s / med, target_tokens_per_s=b * t / med if family == 't5' else None,
             peak_gflops=peak_gflops)
  if peak_gflops:
    rec['mfu'] = fl['model_flops_per_step'] / med / (peak_gflops * 1e9)
    rec['mfu_incl_head'] = ((fl['model_flops_per_step'] + fl['head_flops_per_step']) / med
                            / (peak_gflops * 1e9))
  rec.update(extra)
  return rec


def cpu_features() -> dict:
  """The CPU's model and its bf16-relevant /proc/cpuinfo flags (a bf16 figure from a CPU
  without amx_bf16 / avx512_bf16 says nothing about one that has them)."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          model = value.strip()
        elif key.strip() == 'flags':
          flags = set(value.split())
          break
  except OSError:
    pass
  return dict(cpu_model=model, cpu_bf16_flags={k: k in flags for k in BF16_FLAGS})


def time_matmul(fn, n: int, reps: int = 2) -> float:
  """GFLOP/s of the best of `reps` calls of fn() (an n^3 matmul), after one warm-up call."""
  fn()
  best = float('inf')
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return round(2 * n ** 3 / best / 1e9, 1)


def jax_matmul_gflops(n: int) -> dict:
  """jnp n^3 matmul GFLOP/s: float32, bf16 x bf16 -> bf16 (what Dense(dtype=bf16) runs)
  and bf16 x bf16 -> f32 (preferred_element_type).  Shared by ours and the HF Flax peer."""
  import jax  # pylint: disable=g-import-not-at-top  (the torch peer never calls this)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
  plain = jax.jit(jnp.matmul)
  wide = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  out = {}
  for name, fn, x, y in (('float32', plain, a, b), ('bf16_to_bf16', plain, a16, b16),
                         ('bf16_to_f32', wide, a16, b16)):
    try:
      out[name] = time_matmul(lambda fn=fn, x=x, y=y: fn(x, y).block_until_ready(), n)
    except Exception as e:  # pylint: disable=broad-except  (XLA:CPU lacks some dtype pairs)
      out[name] = f'failed: {type(e).__name__}'
  return out


def cpu_times():
  """(wall s, busy s of every CPU, stolen s, this process's CPU s) from /proc/stat."""
  hz = os.sysconf('SC_CLK_TCK')
  try:
    with open('/proc/stat', encoding='utf-8') as f:
      v = [int(x) for x in f.readline().split()[1:]]
  except OSError:
    v = [0] * 8
  ru = resource.getrusage(resource.RUSAGE_SELF)
  busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
  return time.perf_counter(), busy / hz, (v[7] if len(v) > 7 else 0) / hz, ru.ru_utime + ru.ru_stime


def contention(before, after) -> dict:
  """CPU used by other processes and stolen by the hypervisor while timing, as fractions
  of all CPUs: read a throughput next to these on a shared machine."""
  cap = (after[0] - before[0]) * (os.cpu_count() or 1)
  own = after[3] - before[3]
  return dict(foreign_cpu_frac=round(max(0.0, (after[1] - before[1]) - own) / cap, 4),
              steal_frac=round((after[2] - before[2]) / cap, 4), own_cpu_frac=round(own / cap, 4))


def time_generation(run, peer: str, config_name: str, a, first_call_s: float) -> dict:
  """The generation record of a peer: `run()` (one batch, blocking) timed `a.gen_runs` times."""
  times, before = [], cpu_times()
  for _ in range(a.gen_runs):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  med = statistics.median(times)
  return dict(contention(before, cpu_times()), peer=peer, kind='generate',
              family='gpt', config=config_name, dtype=a.dtype, gen_batch=a.gen_batch,
              prompt_len=a.prompt_len, new_tokens=a.new_tokens, first_call_s=first_call_s,
              gen_s_median=med, gen_s_min=min(times), runs=len(times),
              new_tokens_per_s=a.gen_batch * a.new_tokens / med,
              ms_per_token_step=med / a.new_tokens * 1e3)


def emit(rec: dict, out: str | None = None) -> None:
  line = json.dumps(rec, sort_keys=True)
  print(line, flush=True)
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'a', encoding='utf-8') as f:
      f.write(line + '\n')


def host_info() -> dict:
  return dict(host_cpus=os.cpu_count(), python=platform.python_version(),
              machine=platform.machine(), **cpu_features())
