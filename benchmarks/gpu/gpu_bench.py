r"""GPU training throughput and MFU of GPT-2 124M, BERT-base and T5-base (issue 9).

  python benchmarks/gpu/gpu_bench.py --model=gpt2-124m --out=$OUT/gpu_bench.jsonl
  bash benchmarks/gpu/run.sh                  # all three, each in its own process, timed out

Each model trains with this project's own step (`train.make_train_step`, via
`benchmarks.train_step.TrainBench`) in bfloat16 compute (float32 params and AdamW
state), `parallel.mode=mesh` over every local device, `model.scan_layers=True` (short
compilation), dropout 0 (so attention takes `jax.nn.dot_product_attention`; with
`model.attention_impl=auto` that is cuDNN flash attention on a GPU for bf16 and
head_dim 64), the fused vocabulary projection + loss in chunks of
`train.loss_chunk_tokens` target tokens, on synthetic packed rows:

  gpt2-124m  GPT-2 small: 12 x 768, 12 heads, ffn 3072, seq 1024, vocab 50257 padded to
             50304 (a multiple of 128, as nanoGPT), causal LM
  bert-base  12 x 768, 12 heads, ffn 3072, seq 512, vocab 30522 padded to 30592, MLM with
             77 predictions per row (15 %), logits at those positions only
  t5-base    T5 v1.0 base: 12 + 12 x 768, 12 heads, ffn 3072 (ReLU), tied, vocab 32128,
             span corruption with 512 encoder inputs and 114 targets

The batch fills the card: a starting batch from the device's memory (`bytes_limit`)
and a per-token activation estimate, then the compiled step's own memory analysis
halves it until arguments + temporaries fit in 90 % of the memory (and an
out-of-memory error at run time halves it once more).  After `--warmup` steps,
`--steps` steps are timed one by one (each waited for); the JSON line (stdout, and
appended to `--out`) gives the median step time, tokens/s and MFU against the card's
dense bf16 peak (flops.py: H100 / H200 SXM 989 TFLOP/s; FLOPs per step also in
flops.py), and `attention` = 'cudnn' when the compiled step contains cuDNN's fused
attention custom call (`__cudnn$fmha...`), else 'xla'.

`--tiny` shrinks every model (2 layers, d_model 32, rows of 32): the CPU test of this
script.  Imports: jax, flax, optax, orbax-checkpoint, numpy, absl, ml_collections only.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app, flags  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
MODELS = {
    'gpt2-124m': dict(family='gpt', seq_len=1024, model=dict(
        vocab_size=50304, d_model=768, num_layers=12, num_heads=12, head_dim=64, d_ff=3072,
        max_len=1024)),
    'bert-base': dict(family='bert', seq_len=512, max_predictions=77, model=dict(
        vocab_size=30592, d_model=768, num_layers=12, num_heads=12, head_dim=64, d_ff=3072,
        max_len=512)),
    't5-base': dict(family='t5', seq_len=512, targets_length=114, model=dict(
        vocab_size=32128, d_model=768, num_layers=12, num_decoder_layers=12, num_heads=12,
        head_dim=64, d_ff=3072, activation='relu', tie_embeddings=True)),
}
TINY = dict(d_model=32, num_layers=2, num_decoder_layers=2, num_heads=2, head_dim=16, d_ff=64,
            vocab_size=512)
# Activation bytes per token per layer per d_model unit, bf16 with cuDNN attention and no
# remat: ~34 (Korthikanti et al. 2022) plus float32 norm/softmax statistics; generous.
ACTIVATION_BYTES = 48
MAX_TOKENS = 131072  # past this per step, MFU no longer grows; compile and step time do

flags.DEFINE_enum('model', 'gpt2-124m', sorted(MODELS), 'Which model.')
flags.DEFINE_integer('batch', 0, 'Rows per step (0: fill the card, see the docstring).')
flags.DEFINE_integer('steps', 5, 'Timed steps.')
flags.DEFINE_integer('warmup', 2, 'Untimed steps first (the step is compiled before them).')
flags.DEFINE_integer('loss_chunk_tokens', 16384, 'train.loss_chunk_tokens.')
flags.DEFINE_enum('dtype', 'bfloat16', ['bfloat16', 'float32'], 'model.dtype (compute).')
flags.DEFINE_bool('tiny', False, 'Shrink every model (a CPU check of this script).')
flags.DEFINE_string('out', '', 'Append the JSON line to this file too.')


def make_config(name: str, batch: int):
  from ptlm_jax import config_lib  # pylint: disable=g-import-not-at-top
  spec = MODELS[name]
  c = config_lib.base_config(spec['family'], 'base')
  c.model.update(spec['model'])
  c.model.update(dtype=FLAGS.dtype, param_dtype='float32', scan_layers=True, remat='none',
                 dropout_rate=0.0, attention_dropout_rate=0.0, attention_impl='auto')
  seq_len = spec['seq_len']
  if FLAGS.tiny:
    c.model.update({k: v for k, v in TINY.items() if k in c.model})
    c.model.max_len = min(c.model.max_len, 64)
    seq_len = 32
  c.data.seq_len = seq_len
  c.data.sp_vocab_size = c.model.vocab_size - config_lib.NUM_SENTINELS
  if spec['family'] == 'bert':
    c.objective.max_predictions = math.ceil(0.15 * seq_len)
  if spec['family'] == 't5':
    c.objective.targets_length = 0 if FLAGS.tiny else spec['targets_length']
  c.optim.update(optimizer='adamw', lr=1e-4, weight_decay=0.01, warmup_steps=0,
                 decay='constant', grad_clip_norm=1.0, microbatches=1)
  c.parallel.update(mode='mesh', mesh_data=-1, mesh_fsdp=1, mesh_tensor=1, num_devices=0)
  c.train.update(batch_size=batch, loss_chunk_tokens=FLAGS.loss_chunk_tokens,
                 steps=FLAGS.warmup + FLAGS.steps)
  return c


def start_batch(name: str, memory_bytes: int, devices: int) -> int:
  """Rows per step from the memory estimate: a power of two times the device count."""
  spec = MODELS[name]
  m = spec['model']
  tokens_per_row = spec['seq_len'] * m['num_layers'] + (
      1.5 * spec.get('targets_length', 0) * m.get('num_decoder_layers', 0))
  per_row = tokens_per_row * m['d_model'] * ACTIVATION_BYTES
  rows = min(0.5 * memory_bytes * devices / per_row, MAX_TOKENS / spec['seq_len'])
  return max(devices, 2 ** int(math.log2(max(rows, 1))))


def _is_oom(error: Exception) -> bool:
  return 'RESOURCE_EXHAUSTED' in str(error) or 'out of memory' in str(error).lower()


def measure(name: str) -> dict:
  # pylint: disable=g-import-not-at-top
  import jax
  from benchmarks import train_step as benchmark_train
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  memory = int(stats.get('bytes_limit', 0))
  devices = jax.device_count()
  batch = FLAGS.batch or (8 * devices if FLAGS.tiny or not memory else
                          start_batch(name, memory, devices))
  notes = []
  while True:
    started = time.perf_counter()
    bench = benchmark_train.TrainBench(make_config(name, batch))
    analysis = bench.step.memory_analysis()
    needed = None
    if analysis is not None:
      needed = int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                   - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes)
    if memory and needed and needed > 0.9 * memory and batch > devices:
      notes.append(f'batch {batch}: needs {needed / 2**30:.1f} GiB of {memory / 2**30:.1f}')
      batch //= 2
      continue
    try:
      first = bench.run(1)[0]
      bench.run(max(FLAGS.warmup - 1, 0))
      times = bench.run(FLAGS.steps)
    except Exception as e:  # pylint: disable=broad-except
      if _is_oom(e) and batch > devices and not any('OOM' in n for n in notes):
        notes.append(f'batch {batch}: OOM at run time')
        batch //= 2
        continue
      raise
    break
  hlo = bench.step.as_text()
  attention = 'cudnn' if '__cudnn$fmha' in hlo else 'xla'
  record = benchmark_train.record(bench, times, first, preset=name, model=name,
                                  attention=attention, wall_s=round(time.perf_counter() - started, 1),
                                  memory_needed_gib=round(needed / 2**30, 2) if needed else None,
                                  memory_limit_gib=round(memory / 2**30, 2) if memory else None,
                                  batch_notes=notes, tiny=FLAGS.tiny,
                                  loss_chunk_tokens=FLAGS.loss_chunk_tokens)
  record['kind'] = 'gpu_train'
  return record


def main(argv):
  del argv
  try:
    record = measure(FLAGS.model)
  except Exception as e:  # pylint: disable=broad-except  (one line per model, always)
    record = dict(kind='gpu_error', model=FLAGS.model, error=f'{type(e).__name__}: {e}'[:2000],
                  traceback=traceback.format_exc()[-3000:])
  line = json.dumps(record, sort_keys=True)
  print(line, flush=True)
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, 'a', encoding='utf-8') as f:
      f.write(line + '\n')
  if record['kind'] == 'gpu_error':
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
