r"""Benchmarks, one JSON line per measurement; `--mode` picks what is timed.

  python -m benchmarks.speed --family=bert --preset=small          # one training step, timed
  python -m benchmarks.speed --family=bert,gpt,t5 --preset=small,base-ish --compare_hf=3
  python -m benchmarks.speed --mode=generate [--compare_hf=3]     # greedy decode tokens/s
  python -m benchmarks.speed --mode=compile --family=gpt --layers=2,24
  python -m benchmarks.speed --family=gpt --preset=base-ish --d_model=768 --heads=12 \
      --compare_hf=3 --peers=flax,torch                               # any shape, side by side
  python -m benchmarks.speed --mode=cost --family=bert,gpt,t5 --preset=base-ish

train (default): the family's pretraining step (objective, model, loss, gradient, AdamW)
at a preset of the peers' harness (benchmarks/peers: small = vocab 8192, d_model 256,
4 layers (T5 4 + 4), 4 heads, ffn 1024, seq 128 (T5 targets 32), batch 32; base-ish =
d_model 512, 6 layers, 8 heads, ffn 2048, seq 256 (T5 targets 64), batch 8), float32
(`--dtype=bfloat16` for the mixed-precision figure), see benchmark_train.py.  The line
has family, preset, params, step_ms (median of the timed steps after warm-up),
tokens_per_s (input tokens: B x L, T5 B x S), mfu / mfu_excl_head (flops.py; needs a
peak: `--peak_gflops`, or `--peak` measures the peers' f32 matmul peak), compile_s,
first_step_s, device_kind, jax, the CPU contention while timing (foreign_cpu_frac,
steal_frac), the CPU's bf16 flags (cpu_bf16_flags: amx_bf16, avx512_bf16, ...) and jnp's
matmul GFLOP/s at --peak_size^3 (matmul_gflops: float32, bf16 -> bf16, bf16 -> f32; a bf16
figure from a CPU without a fast bf16 path reads as such), with the peers' field names.

generate: the GPT small shape (vocab 8192, d_model 256, 4 layers, 4 heads, ffn 1024, 512
positions, float32, random weights), batch 8, 16-token random prompts, exactly 128 new
tokens by greedy decoding (EOS banned until then, like the peer's min_length).  The
first call compiles; `new_tokens_per_s` = batch * new tokens / the median wall time of
the next 5 calls, `ms_per_token_step` = that median / new tokens.

Shape overrides (train, cost, and --compare_hf, which passes them to the peers as their
`--d-model` etc.): --vocab --d_model --layers --heads --ffn --seq --tgt_len --batch replace
the preset's values (head_dim = d_model / heads); the line's `shape` lists what ran.

cost: nothing timed, so it holds on a shared machine: one JSON line per family with XLA's
`flops` and `bytes_accessed` of the compiled train step and its `kernels` (instructions of
the entry and loop bodies that run as kernels; benchmark_train.step_cost).

compile: the train step's trace + lower and XLA compile seconds with
`model.scan_layers=True` at each `--layers` depth (best of `--repeats`), and the ratio to
the first depth.

--compare_hf=N runs N rounds; in each, every measurement of ours and of each peer in
`--peers` runs in a fresh process, one after the other (never two at once), ours first,
so that all see the same machine load; then it prints the median over rounds of the
per-round throughput ratios.  Training peers: HF Flax (`hf_flax_train.py`, which also
measures the f32 matmul peak used for every MFU of the round), HF PyTorch eager and
compiled (`torch_train.py [--compile]`); generation: HF Flax.  Every variant runs in
--dtype: bfloat16 is HF Flax's `dtype=bfloat16` and `torch.autocast('cpu', bfloat16)`.
The harness is `benchmarks/peers/` (README there); its own venv (HF transformers 4.57's
Flax models need jax 0.9: `bash benchmarks/peers/setup.sh`) is --peer_python.
`--raw_dir` also appends every line to <raw_dir>/<variant>.jsonl.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
MODES = ('train', 'generate', 'compile', 'cost')
flags.DEFINE_enum('mode', 'train', MODES, 'What to time.')
flags.DEFINE_list('family', ['bert', 'gpt', 't5'], 'train / compile: bert, gpt, t5 (a list).')
flags.DEFINE_list('preset', ['small'], 'train: small, base-ish (a list); compile: one.')
flags.DEFINE_integer('steps', None, 'train: timed steps (default: the preset\'s, as the peers).')
flags.DEFINE_integer('warmup', None, 'train: untimed steps first (default: the preset\'s).')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'train: model.dtype (compute).')
flags.DEFINE_float('peak_gflops', 0.0, 'train: peak GFLOP/s for MFU (0: the device table; a '
                   'CPU has none).')
flags.DEFINE_bool('peak', False, 'train: measure the peak as the peers do (best f32 matmul).')
flags.DEFINE_list('layers', None, 'compile: layer counts (T5: per stack; default 2,24); '
                  'train / cost: one count, overriding the preset\'s.')
flags.DEFINE_integer('vocab', None, 'train / cost: vocabulary size (overrides the preset).')
flags.DEFINE_integer('d_model', None, 'train / cost: d_model (overrides the preset).')
flags.DEFINE_integer('heads', None, 'train / cost: attention heads (overrides the preset).')
flags.DEFINE_integer('ffn', None, 'train / cost: MLP width d_ff (overrides the preset).')
flags.DEFINE_integer('seq', None, 'train / cost: row length (T5: encoder length).')
flags.DEFINE_integer('tgt_len', None, 'train / cost: T5 decoder length (overrides the preset).')
flags.DEFINE_integer('repeats', 2, 'compile: compilations per depth (the best is reported).')
flags.DEFINE_integer('batch', None, 'generate: prompts decoded together (default 8); '
                     'train / cost: batch rows, overriding the preset\'s.')
flags.DEFINE_integer('prompt_len', 16, 'generate: prompt tokens per row.')
flags.DEFINE_integer('new_tokens', 128, 'generate: new tokens per row.')
flags.DEFINE_integer('runs', 5, 'generate: timed calls after the compiling one.')
flags.DEFINE_integer('compare_hf', 0, 'Rounds of (ours, each peer) in fresh processes '
                     '(0 = ours only, in this process).')
flags.DEFINE_list('peers', ['flax', 'torch', 'torch-compile'],
                  'train --compare_hf: peers to run (generate: HF Flax only).')
flags.DEFINE_string('peer_python', os.path.expanduser('~/.cache/ptlm-peers/venv/bin/python'),
                    'Python of the peer-benchmark venv (HF transformers + jax 0.9 + torch).')
# The peers' harness (benchmarks/peers; its venv: benchmarks/peers/setup.sh).
PEERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'peers')
flags.DEFINE_string('peer_script', os.path.join(PEERS_DIR, 'hf_flax_train.py'),
                    'The HF Flax peer; torch_train.py is taken from the same folder.')
flags.DEFINE_string('out', '', 'Also append every JSON line to this file.')
flags.DEFINE_string('raw_dir', '', '--compare_hf: also append lines to <raw_dir>/<variant>.jsonl '
                    '(the peers\' aggregate.py layout).')
flags.DEFINE_integer('peer_timeout', 900, 'Seconds before a benchmark process is given up.')
flags.DEFINE_integer('peak_size', 2048, 'train: n of the n^3 matmuls whose GFLOP/s per dtype '
                     'each line records (0: none); passed to the peers too.')

# The peer harness's `small` preset (benchmarks/peers/common.py).
SMALL_GPT = dict(vocab_size=8192, d_model=256, num_layers=4, num_heads=4, head_dim=64,
                 d_ff=1024, max_len=512)
# Targets of issue 9 (median ratio of tokens/s): HF Flax (BERT: 1.5), best HF PyTorch.
TARGET_VS_FLAX = {'bert': 1.5, 'gpt': 1.3, 't5': 1.3}
TARGET_VS_TORCH = 1.2
TARGET_DECODE_VS_FLAX = 2.0


def _emit(record: dict, variant: str = '') -> None:
  line = json.dumps(record, sort_keys=True)
  print(line, flush=True)
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, 'a', encoding='utf-8') as f:
      f.write(line + '\n')
  if FLAGS.raw_dir and variant:
    os.makedirs(FLAGS.raw_dir, exist_ok=True)
    with open(os.path.join(FLAGS.raw_dir, f'{variant}.jsonl'), 'a', encoding='utf-8') as f:
      f.write(line + '\n')


def _versions() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return dict(jax=jax.__version__, backend=jax.default_backend(),
              device_kind=device.device_kind, host_cpus=os.cpu_count())


# ---------------------------------------------------------------------------
# Decoding.

def bench_generate(batch: int, prompt_len: int, new_tokens: int, runs: int) -> dict:
  """Greedy decoding throughput of this project's loop on the GPT small shape."""
  # pylint: disable=g-import-not-at-top  (jax starts on first use)
  import flax.linen as nn
  import jax
  import numpy as np
  from benchmarks import train_step as benchmark_train
  from ptlm_jax import config_lib, models
  from ptlm_jax.decoding import generate

  m = config_lib.base_config('gpt', 'small').model
  m.update(SMALL_GPT, dropout_rate=0.0, attention_dropout_rate=0.0, dtype='float32')
  model = models.build_model(m)
  init = jax.jit(lambda rng: model.init(rng, **models.dummy_inputs(m, 1, 8))['params'])
  params = jax.block_until_ready(nn.unbox(init(jax.random.key(0))))
  # The peer's prompts: common.prompt_batch (ids in [5, vocab - 100), RandomState(seed + 1)).
  prompt = np.random.RandomState(1).randint(5, m.vocab_size - 100, (batch, prompt_len))
  prompt, lengths = jax.numpy.asarray(prompt, jax.numpy.int32), np.full((batch,), prompt_len)
  options = generate.Options(max_new_tokens=new_tokens, min_new_tokens=new_tokens)

  def call():
    out = generate.generate(model, params, prompt, lengths, options)
    return jax.block_until_ready(out.tokens_BxG)

  start = time.perf_counter()
  tokens = call()
  first = time.perf_counter() - start
  assert tokens.shape == (batch, new_tokens), tokens.shape
  times, before = [], benchmark_train.cpu_times()
  for _ in range(runs):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  load = benchmark_train.contention(before, benchmark_train.cpu_times())
  median = statistics.median(times)
  return dict(peer='ptlm_jax', kind='generate', family='gpt', config='small', gen_batch=batch,
              prompt_len=prompt_len, new_tokens=new_tokens, first_call_s=round(first, 3),
              gen_s_median=round(median, 4), gen_s_min=round(min(times), 4), runs=runs,
              new_tokens_per_s=round(batch * new_tokens / median, 1),
              ms_per_token_step=round(median / new_tokens * 1e3, 3), **load, **_versions())


# ---------------------------------------------------------------------------
# Shape overrides, for us and the peers.

def shape_overrides() -> dict[str, int]:
  """The preset fields the flags override (benchmark_train.SHAPE_KEYS), set ones only."""
  shape = {}
  for key in ('vocab', 'd_model', 'layers', 'heads', 'ffn', 'seq', 'tgt_len', 'batch'):
    value = getattr(FLAGS, key, None)
    if value is None:
      continue
    if key == 'layers':
      if len(value) != 1:
        raise app.UsageError(f'--layers={",".join(value)}: train and cost take one count')
      value = value[0]
    value = int(value)
    if value <= 0:
      raise app.UsageError(f'--{key}={value}: expected a positive integer')
    shape[key] = value
  return shape


def our_shape_args(shape: dict[str, int]) -> list[str]:
  """`shape` as this benchmark's flags (--d_model=512 ...)."""
  return [f'--{k}={v}' for k, v in shape.items()]


def peer_shape_args(shape: dict[str, int]) -> list[str]:
  """`shape` as the peers' harness flags (--d-model 512 ...; benchmarks/peers/common.py)."""
  return [a for k, v in shape.items() for a in (f'--{k.replace("_", "-")}', str(v))]


# ---------------------------------------------------------------------------
# Fresh-process comparisons with the peers' harness.

def _records(output: str, kind: str) -> list[dict]:
  """The JSON lines of a process's stdout whose kind is `kind`."""
  found = []
  for line in output.splitlines():
    if line.startswith('{'):
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if record.get('kind') == kind:
        found.append(record)
  return found


def _run(cmd: list[str]) -> tuple[str, str]:
  """(stdout, '') of a finished process, or ('', why it failed)."""
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FLAGS.peer_timeout,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))
  except subprocess.TimeoutExpired:
    return '', f'timed out after {FLAGS.peer_timeout} s'
  if proc.returncode != 0:
    return '', f'exit {proc.returncode}: {proc.stderr.strip()[-300:]}'
  return proc.stdout, ''


def _check_peers() -> None:
  for path in (FLAGS.peer_python, FLAGS.peer_script):
    if not os.path.exists(path):
      raise app.UsageError(f'{path} not found: set --peer_python / --peer_script '
                           '(bash benchmarks/peers/setup.sh makes the venv)')


def _ratio(ours: float | None, theirs: float | None) -> float | None:
  return round(ours / theirs, 3) if ours and theirs else None


def _median(values) -> float | None:
  values = [v for v in values if v is not None]
  return round(statistics.median(values), 3) if values else None


def compare_train(rounds: int, families: list[str], presets: list[str]) -> None:
  """Rounds of (ours, each peer) per preset and family; prints the median ratios."""
  _check_peers()
  peer_dir = os.path.dirname(os.path.abspath(FLAGS.peer_script))
  scripts = {'flax': [FLAGS.peer_script, '--peak'],
             'torch': [os.path.join(peer_dir, 'torch_train.py')],
             'torch-compile': [os.path.join(peer_dir, 'torch_train.py'), '--compile']}
  unknown = sorted(set(FLAGS.peers) - set(scripts))
  if unknown:
    raise app.UsageError(f'--peers={unknown}: expected some of {sorted(scripts)}')
  tokens = {}  # (preset, family, variant) -> [tokens/s per round]
  shape = shape_overrides()
  for r in range(rounds):
    for preset in presets:
      for family in families:
        ours = [sys.executable, '-m', 'benchmarks.speed', '--mode=train', f'--family={family}',
                f'--preset={preset}', f'--dtype={FLAGS.dtype}', f'--peak_size={FLAGS.peak_size}']
        ours += [f'--{k}={getattr(FLAGS, k)}' for k in ('steps', 'warmup')
                 if getattr(FLAGS, k) is not None] + our_shape_args(shape)
        # --steps / --warmup, when given, apply to every variant (the harness has the same flags).
        counts = [a for k in ('steps', 'warmup') if getattr(FLAGS, k) is not None
                  for a in (f'--{k}', str(getattr(FLAGS, k)))]
        runs = [('ptlm_jax', ours)] + [
            (v, [FLAGS.peer_python] + scripts[v] + ['--config', preset, '--families', family,
                                                    '--dtype', FLAGS.dtype,
                                                    '--peak-size', str(FLAGS.peak_size)]
             + counts + peer_shape_args(shape)) for v in FLAGS.peers]
        group, peak = [], None
        for variant, cmd in runs:
          stdout, error = _run(cmd)
          found = _records(stdout, 'train')
          peaks = _records(stdout, 'peak')
          if peaks:
            peak = peaks[0]['best_gflops']['float32']
            _emit(dict(peaks[0], round=r), variant)
          if error or not found:
            _emit(dict(kind='error', variant=variant, family=family, preset=preset, round=r,
                       error=error or 'no train record'))
            continue
          group.append((variant, dict(found[0], round=r, variant=variant)))
        for variant, rec in group:
          if peak and rec.get('peer') == 'ptlm_jax':  # one MFU denominator per round
            step_s = rec['step_ms_median'] / 1e3
            rec.update(peak_gflops=peak,
                       mfu=round((rec['model_flops_per_step'] + rec['head_flops_per_step'])
                                 / step_s / (peak * 1e9), 4),
                       mfu_excl_head=round(rec['model_flops_per_step'] / step_s / (peak * 1e9),
                                           4))
          _emit(rec, variant)
          tokens.setdefault((preset, family, variant), []).append(
              (r, rec['batch'] * rec['seq'] / (rec['step_ms_median'] / 1e3)))
  for preset in presets:
    for family in families:
      per_round = {v: dict(tokens.get((preset, family, v), [])) for v in ['ptlm_jax'] + FLAGS.peers}
      vs_flax, vs_torch = [], []
      for r in range(rounds):
        ours = per_round['ptlm_jax'].get(r)
        vs_flax.append(_ratio(ours, per_round.get('flax', {}).get(r)))
        torch = [per_round[v].get(r) for v in ('torch', 'torch-compile') if v in per_round]
        torch = [t for t in torch if t]
        vs_torch.append(_ratio(ours, max(torch)) if torch else None)
      flax_ratio, torch_ratio = _median(vs_flax), _median(vs_torch)
      _emit(dict(
          kind='train_comparison', family=family, preset=preset, shape=shape, rounds=rounds,
          dtype=FLAGS.dtype,
          tokens_per_s_median={v: _median(per_round[v].values()) for v in per_round},
          ratios_vs_hf_flax=vs_flax, ratios_vs_best_hf_torch=vs_torch,
          median_ratio_vs_hf_flax=flax_ratio, median_ratio_vs_best_hf_torch=torch_ratio,
          target_vs_hf_flax=TARGET_VS_FLAX[family], target_vs_best_hf_torch=TARGET_VS_TORCH,
          met=bool(flax_ratio and flax_ratio >= TARGET_VS_FLAX[family] and torch_ratio
                   and torch_ratio >= TARGET_VS_TORCH)))


def compare_generate(rounds: int, batch: int, prompt_len: int, new_tokens: int,
                     runs: int) -> None:
  """Alternates fresh processes of this benchmark and the HF Flax peer; prints the ratios."""
  _check_peers()
  ours_cmd = [sys.executable, '-m', 'benchmarks.speed', '--mode=generate', f'--batch={batch}',
              f'--prompt_len={prompt_len}', f'--new_tokens={new_tokens}', f'--runs={runs}']
  # --families '' : no training measurements, generation only (--steps 0 would leave the
  # harness's training benchmark with no timed step).
  theirs_cmd = [FLAGS.peer_python, FLAGS.peer_script, '--config', 'small', '--families', '',
                '--gen', '--gen-batch', str(batch), '--prompt-len', str(prompt_len),
                '--new-tokens', str(new_tokens), '--gen-runs', str(runs)]
  ratios, records = [], []
  for r in range(rounds):
    pair = []
    for variant, cmd in (('ptlm_jax', ours_cmd), ('flax', theirs_cmd)):
      stdout, error = _run(cmd)
      found = _records(stdout, 'generate')
      if error or not found:
        raise RuntimeError(f'{variant} generation failed: {error or stdout[-2000:]}')
      record = dict(found[-1], round=r)
      _emit(record, variant)
      pair.append(record['new_tokens_per_s'])
      records.append(record)
    ratios.append(pair[0] / pair[1])
  ours = [x['new_tokens_per_s'] for x in records if x['peer'] == 'ptlm_jax']
  theirs = [x['new_tokens_per_s'] for x in records if x['peer'] != 'ptlm_jax']
  median = round(statistics.median(ratios), 3)
  _emit(dict(kind='generate_comparison', rounds=rounds,
             ours_new_tokens_per_s_median=statistics.median(ours),
             hf_flax_new_tokens_per_s_median=statistics.median(theirs),
             ratios=[round(x, 3) for x in ratios], median_ratio=median,
             target=TARGET_DECODE_VS_FLAX, met=median >= TARGET_DECODE_VS_FLAX))


# ---------------------------------------------------------------------------

def _check_names(families: list[str], presets: list[str]) -> None:
  from benchmarks import train_step as benchmark_train  # pylint: disable=g-import-not-at-top
  from ptlm_jax import config_lib
  for family in families:
    if family not in config_lib.FAMILIES:
      raise app.UsageError(f'--family={family!r}: expected some of {config_lib.FAMILIES}')
  for preset in presets:
    if preset not in benchmark_train.PRESETS:
      raise app.UsageError(f'--preset={preset!r}: expected some of '
                           f'{sorted(benchmark_train.PRESETS)}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.mode == 'generate':
    batch = 8 if FLAGS.batch is None else FLAGS.batch
    if FLAGS.compare_hf:
      compare_generate(FLAGS.compare_hf, batch, FLAGS.prompt_len, FLAGS.new_tokens, FLAGS.runs)
    else:
      _emit(bench_generate(batch, FLAGS.prompt_len, FLAGS.new_tokens, FLAGS.runs))
    return
  _check_names(FLAGS.family, FLAGS.preset)
  from benchmarks import train_step as benchmark_train  # pylint: disable=g-import-not-at-top  (imports jax)
  if FLAGS.mode == 'compile':
    layers = [int(n) for n in FLAGS.layers or ('2', '24')]
    for family in FLAGS.family:
      for record in benchmark_train.bench_compile(family, tuple(layers), FLAGS.preset[0],
                                                  FLAGS.repeats):
        _emit(record)
    return
  shape = shape_overrides()
  if FLAGS.mode == 'cost':
    for preset in FLAGS.preset:
      for family in FLAGS.family:
        _emit(dict(benchmark_train.step_cost(benchmark_train.preset_config(
            family, preset, shape, dtype=FLAGS.dtype)), preset=preset))
    return
  if FLAGS.compare_hf:
    compare_train(FLAGS.compare_hf, FLAGS.family, FLAGS.preset)
    return
  peak = FLAGS.peak_gflops * 1e9
  if FLAGS.peak:
    peak = benchmark_train.matmul_peak()
  from benchmarks.peers import common as peer_common  # pylint: disable=g-import-not-at-top
  machine = peer_common.cpu_features()
  if FLAGS.peak_size:
    machine['matmul_gflops'] = dict(benchmark_train.matmul_gflops(FLAGS.peak_size),
                                    n=FLAGS.peak_size)
  for preset in FLAGS.preset:
    for family in FLAGS.family:
      record = benchmark_train.bench_train(family, preset, FLAGS.steps, FLAGS.warmup, peak,
                                           shape, dtype=FLAGS.dtype)
      _emit(dict(record, **machine))


if __name__ == '__main__':
  app.run(main)
