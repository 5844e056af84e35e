"""Training-step and compile-time measurements behind `python -m benchmarks.speed`.

  record = benchmark_train.bench_train('bert', 'small')            # one JSON-able dict
  config = benchmark_train.preset_config('gpt', 'base-ish')        # the peers' shapes
  bench = benchmark_train.TrainBench(config)                       # the step, compiled
  times = bench.run(5)                                             # seconds per step
  records = benchmark_train.bench_compile('gpt', (2, 24))          # scan_layers compile time

What is timed is the project's own train step (`train.make_train_step`: the objective
on device, the model, the loss, the gradient, AdamW, the NaN guard) compiled by
`parallel.make(config).compile` (`parallel.mode=mesh`, one device here), on one fixed
batch of synthetic packed rows (random ordinary pieces, documents of random length
ending in EOS).  Each step draws new masks / spans from its own key, as in training.

Shapes and settings copy the peers' harness (`benchmarks/peers/common.py`, README.md):
the presets below, float32, dropout 0, AdamW (lr 1e-4, weight decay 0.01, b2 0.999,
eps 1e-8, no clipping, no warm-up), one device, `warmup` untimed steps then `steps`
timed ones, each waited for (`block_until_ready` of its metrics).  BERT's MLM predicts
at most ceil(0.15 * seq) positions per row (20 at 128, 39 at 256: the peers' 15 %) and
computes logits only there; T5 is v1.0 (ReLU, tied embeddings, d_ff = ffn, 128 max
distance) like the HF default the peers build.  Parameter counts equal the peers'.

FLOPs and MFU: `flops.py` (the peers' formula; `mfu` counts the vocabulary projection
this step really computes, `mfu_excl_head` leaves it out, as the peers' "mfu").  A CPU
has no peak in the device table: pass one (`peak_flops`), e.g. the peers' measured best
float32 matmul (`matmul_peak`).

Legend: B batch rows, L row length.
"""
from __future__ import annotations

import math
import os
import re
import resource
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ptlm_jax import config_lib, errors, flops
from ptlm_jax.data import vocab
from ptlm_jax.training import parallel, train

# The peers' presets (benchmarks/peers/common.py PRESETS); T5 "seq" = encoder length.
PRESETS = {
    'small': dict(vocab=8192, d_model=256, layers=4, heads=4, ffn=1024, seq=128, tgt_len=32,
                  batch=32, steps=10, warmup=2),
    'base-ish': dict(vocab=8192, d_model=512, layers=6, heads=8, ffn=2048, seq=256, tgt_len=64,
                     batch=8, steps=6, warmup=2),
}
MAX_POSITIONS = 512  # the peers' BERT / GPT-2 position tables
# Preset fields a run may override (the peers' harness has the same, as --d-model etc.).
SHAPE_KEYS = ('vocab', 'd_model', 'layers', 'heads', 'ffn', 'seq', 'tgt_len', 'batch')


def cpu_times() -> tuple[float, float, float, float]:
  """(wall s, busy s of every CPU, hypervisor-stolen s, this process's CPU s); Linux."""
  try:
    with open('/proc/stat') as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except OSError:
    fields = [0] * 8
  hz = os.sysconf('SC_CLK_TCK')
  busy = sum(fields[i] for i in (0, 1, 2, 5, 6)) / hz  # user nice system irq softirq
  steal = (fields[7] if len(fields) > 7 else 0) / hz
  own = resource.getrusage(resource.RUSAGE_SELF)
  return time.perf_counter(), busy, steal, own.ru_utime + own.ru_stime


def contention(before, after) -> dict[str, float]:
  """CPU used by other processes and stolen while timing, as fractions of all CPUs: on a
  shared machine, read throughput next to these (the peers' harness records the same)."""
  capacity = (after[0] - before[0]) * (os.cpu_count() or 1)
  own = after[3] - before[3]
  return dict(foreign_cpu_frac=round(max(0.0, after[1] - before[1] - own) / capacity, 4),
              steal_frac=round((after[2] - before[2]) / capacity, 4),
              own_cpu_frac=round(own / capacity, 4))


def preset_config(family: str, preset: str, shape: dict | None = None,
                  **model_overrides) -> ml_collections.ConfigDict:
  """The full config of `family` at a peers' preset, with the peers' optimizer settings.

  `shape` overrides preset fields (SHAPE_KEYS) as the peers' `--d-model` etc. do; head_dim
  is d_model // heads, as theirs.
  """
  if preset not in PRESETS:
    raise errors.ConfigError('preset', preset, f'one of {sorted(PRESETS)}')
  unknown = sorted(set(shape or {}) - set(SHAPE_KEYS))
  if unknown:
    raise errors.ConfigError('shape', unknown, f'keys among {SHAPE_KEYS}')
  p = dict(PRESETS[preset], **{k: v for k, v in (shape or {}).items() if v is not None})
  if p['d_model'] % p['heads']:
    raise errors.ConfigError('shape.heads', p['heads'], f'a divisor of d_model {p["d_model"]}')
  c = config_lib.base_config(family, 'small')
  c.model.update(vocab_size=p['vocab'], d_model=p['d_model'], num_layers=p['layers'],
                 num_decoder_layers=p['layers'], num_heads=p['heads'],
                 head_dim=p['d_model'] // p['heads'], d_ff=p['ffn'], max_len=max(MAX_POSITIONS, p['seq']),
                 dropout_rate=0.0, attention_dropout_rate=0.0, dtype='float32')
  if family == 't5':  # HF's default T5Config: v1.0
    c.model.update(activation='relu', tie_embeddings=True, relative_max_distance=128)
  c.model.update(model_overrides)
  c.data.sp_vocab_size = p['vocab'] - config_lib.NUM_SENTINELS
  c.data.seq_len = p['seq']
  c.objective.max_predictions = math.ceil(0.15 * p['seq'])
  if family == 't5':
    c.objective.targets_length = p['tgt_len']
  c.optim.update(optimizer='adamw', lr=1e-4, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8,
                 warmup_steps=0, decay='constant', grad_clip_norm=0.0, microbatches=1)
  c.parallel.update(mode='mesh', num_devices=1)
  c.train.update(batch_size=p['batch'], steps=p['warmup'] + p['steps'], seed=0)
  return c


def synthetic_rows(batch: int, length: int, piece_count: int, seed: int = 0
                   ) -> dict[str, np.ndarray]:
  """Packed rows like the pipeline's: documents of 16..length tokens, each ending in EOS."""
  rng = np.random.RandomState(seed)
  tokens = rng.randint(vocab.FIRST_ORDINARY_ID, piece_count, (batch, length)).astype(np.int32)
  segments = np.zeros((batch, length), np.int32)
  positions = np.zeros((batch, length), np.int32)
  for r in range(batch):
    start, doc = 0, 1
    while start < length:
      n = min(int(rng.randint(16, length + 1)), length - start)
      segments[r, start:start + n] = doc
      positions[r, start:start + n] = np.arange(n)
      tokens[r, start + n - 1] = vocab.EOS_ID
      start, doc = start + n, doc + 1
  return dict(tokens=tokens, segment_ids=segments, positions=positions)


class TrainBench:
  """The compiled train step of `config` with its state and one fixed device batch."""

  def __init__(self, config: ml_collections.ConfigDict):
    # pylint: disable=g-import-not-at-top  (flax models load only when a bench is built)
    from ptlm_jax import models, objectives
    self.config = c = config
    config_lib.validate(c, num_devices=jax.device_count())
    self.par = par = parallel.make(c)
    vocab_info = vocab.VocabInfo(c.data.sp_vocab_size)
    objective = objectives.get_objective(c, vocab_info)
    model = models.build_model(c.model)
    components = train.Components(model, objective, iter(()))
    init_rng, self.rng = jax.random.split(jax.random.PRNGKey(c.train.seed))
    with par.context():
      spec = train.make_state_spec(c, components, init_rng)
      par.prepare(spec.abstract_state, spec.param_specs)
      self.state = par.init_state(spec.init_state, init_rng)
      rows = synthetic_rows(c.train.batch_size, spec.row_length, vocab_info.piece_count,
                            c.train.seed)
      self.batch = par.shard_batch(rows)
      step = par.compile(train.make_train_step(model, objective, spec.tx, c, par, None,
                                               spec.trainable), returns_state=True)
      start = time.perf_counter()
      self.lowered = step.lower(self.state, self.batch, self.rng)
      self.step = self.lowered.compile()
      self.compile_s = time.perf_counter() - start
    self.counts = flops.count_params(spec.boxed_params)
    lengths = {k: v.shape[1] for k, v in spec.example_inputs.items() if v.ndim == 2}
    self.input_length = lengths.get('encoder_tokens', lengths.get('tokens'))
    self.target_length = lengths.get('decoder_tokens', 0)
    self.flops = flops.flops_per_step(c.model, self.counts, c.train.batch_size,
                                      self.input_length, target_length=self.target_length,
                                      output_length=spec.example_targets.shape[1])

  def run(self, steps: int) -> list[float]:
    """Wall seconds of each of `steps` steps, each waited for."""
    times = []
    with self.par.context():
      for _ in range(steps):
        start = time.perf_counter()
        self.state, metrics = self.step(self.state, self.batch, self.rng)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return times

  def last_loss(self) -> float:
    """The loss of the state's last step (one host fetch; not inside timed steps)."""
    _, metrics = self.step(self.state, self.batch, self.rng)
    return float(metrics['loss'] / metrics['weight'])


def record(bench: TrainBench, times: list[float], first_step_s: float, peak_flops: float = 0.0,
           **extra) -> dict[str, Any]:
  """One measurement: our fields plus the peers' train-line fields (aggregate.py reads them).

  peak_flops: of the whole run (0: the device table's peak per device x devices).
  """
  c = bench.config
  median = statistics.median(times)
  b, s, t = c.train.batch_size, bench.input_length, bench.target_length
  model_flops, head_flops = bench.flops['model'], bench.flops['head']
  device = jax.devices()[0]
  peak_flops = flops.peak_flops_per_device(device.device_kind, peak_flops) * (
      1 if peak_flops else bench.par.num_devices)
  out = dict(
      peer='ptlm_jax', kind='train', family=c.model.family, preset=extra.pop('preset', ''),
      dtype=c.model.dtype, params=bench.counts['params_total'],
      step_ms=round(median * 1e3, 2), tokens_per_s=round(b * s / median, 1),
      target_tokens_per_s=round(b * t / median, 1) if t else None,
      compile_s=round(bench.compile_s, 3), first_step_s=round(first_step_s, 3),
      model_flops_per_step=model_flops, head_flops_per_step=head_flops,
      peak_gflops=round(peak_flops / 1e9, 2) if peak_flops else None,
      mfu=round((model_flops + head_flops) / median / peak_flops, 4) if peak_flops else None,
      mfu_excl_head=round(model_flops / median / peak_flops, 4) if peak_flops else None,
      # The peers' field names (benchmarks/peers/README.md).
      batch=b, seq=s, tgt_len=t or None, step_ms_median=median * 1e3,
      step_ms_min=min(times) * 1e3, step_ms_max=max(times) * 1e3, timed_steps=len(times),
      params_total=bench.counts['params_total'],
      params_non_embedding=bench.counts['params_non_embedding'],
      device_kind=device.device_kind, backend=jax.default_backend(),
      devices=bench.par.num_devices, jax=jax.__version__)
  out['config'] = out['preset']
  out.update(extra)
  return out


def bench_train(family: str, preset: str, steps: int | None = None, warmup: int | None = None,
                peak_flops: float = 0.0, shape: dict | None = None,
                **model_overrides) -> dict[str, Any]:
  """Times `warmup` + `steps` steps of the family's pretraining step at a peers' preset
  (with `shape` overrides, see `preset_config`)."""
  p = PRESETS[preset]
  steps = p['steps'] if steps is None else steps
  warmup = p['warmup'] if warmup is None else warmup
  bench = TrainBench(preset_config(family, preset, shape, **model_overrides))
  first = bench.run(1)[0]
  bench.run(max(warmup - 1, 0))
  before = cpu_times()
  times = bench.run(steps)
  load = contention(before, cpu_times())
  return record(bench, times, first, peak_flops, preset=preset, warmup=warmup,
                loss_last=round(bench.last_loss(), 4), shape=_shape_fields(bench.config),
                **load)


def _shape_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The SHAPE_KEYS values of a preset_config (so a line says which shape it measured)."""
  m = config.model
  return dict(vocab=m.vocab_size, d_model=m.d_model, layers=m.num_layers, heads=m.num_heads,
              ffn=m.d_ff, seq=config.data.seq_len, batch=config.train.batch_size,
              tgt_len=config.objective.targets_length if m.family == 't5' else None)


def matmul_gflops(n: int = 2048) -> dict[str, float | str]:
  """jnp n^3 matmul GFLOP/s per dtype, measured as the HF Flax peer measures them."""
  from benchmarks.peers import common as peer_common  # pylint: disable=g-import-not-at-top
  return peer_common.jax_matmul_gflops(n)


def matmul_peak(sizes=(1024, 2048, 4096), reps: int = 5) -> float:
  """Best float32 jnp matmul FLOP/s over square sizes: the peers' PEAK (hf_flax_train.py)."""
  f = jax.jit(lambda x, y: x @ y)
  best = 0.0
  for n in sizes:
    x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    y = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f(x, y).block_until_ready()
    for _ in range(reps):
      start = time.perf_counter()
      f(x, y).block_until_ready()
      best = max(best, 2 * n ** 3 / (time.perf_counter() - start))
  return best


def _lower_step(config: ml_collections.ConfigDict):
  """(lowered train step of `config` on abstract state and batch, trace + lower seconds)."""
  # pylint: disable=g-import-not-at-top
  from ptlm_jax import models, objectives
  par = parallel.make(config)
  vocab_info = vocab.VocabInfo(config.data.sp_vocab_size)
  objective = objectives.get_objective(config, vocab_info)
  model = models.build_model(config.model)
  components = train.Components(model, objective, iter(()))
  rng = jax.random.PRNGKey(0)
  with par.context():
    start = time.perf_counter()
    spec = train.make_state_spec(config, components, rng)
    par.prepare(spec.abstract_state, spec.param_specs)
    state = par.global_abstract(spec.abstract_state)
    rows = jax.ShapeDtypeStruct((config.train.batch_size, spec.row_length), jnp.int32,
                                sharding=par.batch_sharding)
    batch = {k: rows for k in ('tokens', 'segment_ids', 'positions')}
    step = par.compile(train.make_train_step(model, objective, spec.tx, config, par, None,
                                             spec.trainable), returns_state=True)
    lowered = step.lower(state, batch, rng)
  return lowered, time.perf_counter() - start


def compile_seconds(config: ml_collections.ConfigDict) -> tuple[float, float]:
  """(trace + lower s, XLA compile s) of the train step of `config`, nothing executed."""
  lowered, traced = _lower_step(config)
  start = time.perf_counter()
  lowered.compile()
  return traced, time.perf_counter() - start


# Instructions of a computation that XLA:CPU runs as no kernel of their own.
_FREE_OPS = frozenset(('parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast',
                       'after-all', 'partition-id', 'replica-id', 'opt-barrier'))
_HLO_OP = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.-]+\s*=\s*\S+(?:\[[^\]]*\])?(?:\{[^}]*\})?\s+'
                     r'([a-z][\w-]*)\(')


def kernel_count(hlo_text: str) -> int:
  """Instructions that run as kernels: those of the entry and of control-flow bodies.

  Fusions count once (their fused computations are not walked); a while loop's body
  (the fused head's chunk loop) counts once, not once per trip.
  """
  count, walk = 0, False
  for line in hlo_text.splitlines():
    if not line.startswith(' '):  # a computation header, or its closing brace
      name = line.split('(')[0].split()[-1] if '(' in line else ''
      walk = bool(name) and not re.match(r'%?(fused|region|horizontally_fused|parallel_)', name
                                         ) and 'fused_computation' not in name
      if line.startswith('ENTRY'):
        walk = True
      continue
    m = _HLO_OP.match(line)
    if walk and m and m.group(1) not in _FREE_OPS:
      count += 1
  return count


def step_cost(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Contention-free figures of one compiled train step: XLA's flops and bytes accessed,
  and its kernel count (`kernel_count`), for comparing formulations on a shared machine."""
  lowered, _ = _lower_step(config)
  compiled = lowered.compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return dict(kind='cost', family=config.model.family, **_shape_fields(config),
              dtype=config.model.dtype,
              flops=float(cost.get('flops', 0.0)),
              bytes_accessed=float(cost.get('bytes accessed', 0.0)),
              kernels=kernel_count(compiled.as_text()), jax=jax.__version__,
              backend=jax.default_backend())


def bench_compile(family: str, layers: tuple[int, ...] = (2, 24), preset: str = 'small',
                  repeats: int = 2) -> list[dict[str, Any]]:
  """Compile time of the train step with `model.scan_layers` at each depth (best of repeats).

  A throwaway compilation first warms up the tracing machinery, so the first depth
  measured is not charged for it.  Depths alternate within each repeat.
  """
  configs = {n: preset_config(family, preset, num_layers=n, num_decoder_layers=n,
                              scan_layers=True) for n in layers}
  compile_seconds(preset_config(family, preset, num_layers=1, num_decoder_layers=1,
                                scan_layers=True))
  best = {n: (math.inf, math.inf) for n in layers}
  for _ in range(repeats):
    for n, config in configs.items():
      traced, compiled = compile_seconds(config)
      best[n] = min(best[n], (traced + compiled, compiled), key=lambda x: x[0])
  base = best[layers[0]][0]
  return [dict(kind='compile', family=family, preset=preset, layers=n, scan_layers=True,
               total_s=round(total, 3), xla_compile_s=round(compiled, 3),
               trace_lower_s=round(total - compiled, 3),
               ratio_to_first=round(total / base, 3), repeats=repeats,
               jax=jax.__version__, backend=jax.default_backend())
          for n, (total, compiled) in best.items()]
