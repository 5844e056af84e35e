r"""Training cost before you train: parameters, FLOPs, memory, time, energy, CO2 and money.

  python -m ptlm_jax.main.estimate --config=configs/gpt.py:base --accelerator=h100 \
      --num_devices=8 --tokens=10e9
  python -m ptlm_jax.main.estimate --config=configs/gpt.py:gpt3 --accelerator=v100 \
      --num_devices=10000 --tokens=300e9 --mfu=0.197 --pue=1.1 --grid_kg_per_kwh=0.429

Parameters and FLOPs come from the model code itself (`jax.eval_shape` of the config's
model, no allocation; flops.py's formula, the one the trainer reports MFU with). Time is
FLOPs / (devices x peak x MFU); energy is device-hours x average power x PUE; CO2 is
energy x grid intensity; cost is device-hours x price. Memory per device follows
Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models", eq. 1-2) for activations.

What trains follows `config.peft` (peft.py's labels on the model `peft.wrap` builds, so
LoRA factors, prefixes and adapters are counted): gradients and optimizer state exist for
the trainable leaves (and live rows) only.  Per-device memory follows the mesh
(`parallel.mode=mesh`): each leaf is split the way the trainer splits it
(parallel.LOGICAL_AXIS_RULES: embed over fsdp, heads / mlp / vocab over tensor, a
dimension an axis does not divide stays whole; Adafactor's factored statistics are
replicated), rows over data x fsdp, and activations by Korthikanti et al.'s eq. 2 for
tensor parallelism t: s*b*h*(10 + 24/t + 5*a*s/(h*t)).  Under pmap every device holds
everything.

The second command reproduces the handout's GPT-3 figures (1,287 MWh, 552 t CO2) from the
setting Patterson et al. 2021 report: 10,000 V100s sustaining 24.6 TFLOP/s each (19.7% of
the 125 TFLOP/s peak), 330 W average per GPU with its server share, PUE 1.1, 0.429 kg CO2/kWh.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from ptlm_jax import config_lib, errors, families

# name -> (dense bf16/fp16 peak FLOP/s per device, average power W per device, USD per
# device-hour). Peaks are vendor figures; power is board TDP (V100: Patterson et al.'s
# measured 330 W with server share); prices are on-demand list prices (2024-25, rough).
ACCELERATORS = {
    'v100': (125e12, 330.0, 1.30),
    'a100': (312e12, 400.0, 3.00),
    'h100': (989e12, 700.0, 4.00),
    'tpu-v4': (275e12, 192.0, 3.22),
    'tpu-v5e': (197e12, 200.0, 1.20),
    'tpu-v5p': (459e12, 350.0, 4.20),
}
_BYTES = {'float32': 4, 'bfloat16': 2}
_ACTIVATIONS_KEY = {'none': 'activations', 'full': 'activations_remat', 'dots': 'activations_dots'}



@dataclasses.dataclass
class Estimate:
  params_total: int
  params_trainable: int
  flops_per_token: float
  flops_per_step: float
  memory_bytes: dict[str, float]
  device_hours: float
  days: float
  energy_kwh: float
  co2_kg: float
  cost_usd: float

  def to_dict(self):
    return dataclasses.asdict(self)


def _abstract_params(model_config):
  from ptlm_jax import models  # pylint: disable=g-import-not-at-top  (heavy: flax)
  return models.abstract_params(model_config)


@dataclasses.dataclass
class _Leaf:
  size: int              # elements
  shape: tuple[int, ...]
  trainable: int         # elements that get gradients and optimizer state
  ways: int              # devices one copy is split over (1 = replicated)


def _leaves(config, mesh: dict[str, int] | None) -> list[_Leaf]:
  """Every parameter of the model the trainer builds (peft.wrap), with its trainable part
  (peft labels) and how many ways the mesh splits it (parallel's rules), without allocation."""
  # pylint: disable=g-import-not-at-top  (heavy: flax)
  import types
  import flax.linen as nn
  from ptlm_jax import models
  from ptlm_jax.peft import partitions as peft
  from ptlm_jax.training import parallel
  model = peft.wrap(models.build_model(config.model), config.peft)
  boxed = jax.eval_shape(lambda rng: model.init(
      rng, **models.dummy_inputs(config.model, length=2))['params'], jax.random.key(0))
  params = nn.unbox(boxed)
  labels = peft.flatten(peft.param_labels(params, config.peft))
  specs = peft.flatten(nn.logical_to_mesh(nn.get_partition_spec(boxed),
                                          parallel.LOGICAL_AXIS_RULES))
  fake_mesh = types.SimpleNamespace(shape=mesh or {})
  out = []
  for path, leaf in peft.flatten(params).items():
    shape = tuple(leaf.shape)
    ways = 1
    if mesh:
      for axes in parallel._fit(specs[path], shape, fake_mesh):  # pylint: disable=protected-access
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        ways *= int(np.prod([mesh[a] for a in names])) if names else 1
    out.append(_Leaf(math.prod(shape), shape, peft._trainable_size(labels[path], shape),  # pylint: disable=protected-access
                     ways))
  return out


def _optimizer_bytes(config, leaves: list[_Leaf]) -> float:
  """Optimizer state bytes per device, trainable leaves only: AdamW two moments, SGD
  momentum, Adafactor factored rows+cols (replicated) or a full second moment."""
  name, total = config.optim.optimizer, 0.0
  for leaf in leaves:
    if not leaf.trainable:
      continue
    if name == 'adamw':
      total += 8.0 * leaf.trainable / leaf.ways
    elif name == 'sgd':
      total += 4.0 * leaf.trainable / leaf.ways if config.optim.momentum else 0.0
    else:  # adafactor (optax.adafactor, min_dim_size_to_factor=128)
      big = [d for d in leaf.shape if d >= 128]
      # optax keeps a 1-element placeholder for each statistic a leaf does not use.
      total += (4.0 * (sum(sorted(leaf.shape)[-2:]) + 1) if len(big) >= 2
                else 4.0 * (leaf.size / leaf.ways + 2))
  return total


def _activation_bytes(config, rows: int, remat: str, tensor: int = 1) -> float:
  """Activation bytes per device for a remat policy (`model.remat`: none | full | dots).

  none: Korthikanti et al. 2022 per layer (eq. 2 with tensor parallelism t),
  s*b*h*(10 + 24/t + 5*a*s/(h*t)) bytes at 16 bits.  full: each layer's input, plus one
  layer's activations recomputed at a time.  dots: each layer's projection outputs (q, k,
  v, attention out, MLP in and out: the matmuls without batch dimensions) and its input,
  plus one layer recomputed.  Scaled from 16-bit to model.dtype; plus the logits.
  """
  from ptlm_jax import flops  # pylint: disable=g-import-not-at-top
  m, scale = config.model, _BYTES[config.model.dtype] / 2
  d, a, tp = m.d_model, m.num_heads, tensor
  hk, f = m.num_heads * m.head_dim / tp, m.d_ff / tp * (2 if m.activation == 'gated-gelu' else 1)

  def full_layer(s, b, cross_s=0):
    attention = 5 * a * (s + cross_s) / (d * tp)  # self-attention scores (and cross: s x S)
    return s * b * d * (10 + 24 / tp + attention + ((10 + 24 / tp) if cross_s else 0))

  def kept(s, b, cross_s=0):
    if remat == 'full':
      return 2 * s * b * d
    # q, k, v, attention out, MLP in (two for a gated MLP), MLP out, the layer input;
    # cross-attention: its q and out per target, its k and v per source position.  XLA
    # also keeps a float32 copy of the MLP's hidden input (the activation's argument;
    # measured on the compiled step: BERT / GPT-2 base +55% / +32% over bf16 dots alone).
    width = 3 * hk + 3 * d + f + 2 * m.d_ff / tp
    cross = (hk + d) * s * b + 2 * hk * cross_s * b if cross_s else 0
    return 2 * (s * b * width + cross)

  def per_layer(s, b, cross_s=0):
    return full_layer(s, b, cross_s) if remat == 'none' else kept(s, b, cross_s)

  s = config.data.seq_len
  encoder_decoder = families.get(m.family).encoder_decoder
  if encoder_decoder:
    t = _targets_length(config)
    layers = m.num_layers * per_layer(s, rows) + m.num_decoder_layers * per_layer(t, rows, s)
    recomputed = max(full_layer(s, rows), full_layer(t, rows, s))
    logits_positions = t
  else:
    layers = m.num_layers * per_layer(s, rows)
    recomputed = full_layer(s, rows)
    logits_positions = (config_lib.max_predictions(config) if families.get(m.family).bidirectional else s)
  if m.head in flops.TASK_HEADS:  # a task head: C classes (2 for spans), not V
    logits_positions, width = (1 if m.head == 'sequence_classification' else s), (
        2 if m.head == 'question_answering' else m.num_classes)
    if encoder_decoder:
      layers = m.num_layers * per_layer(s, rows)  # the encoder alone runs
  else:
    width = m.vocab_size / tp  # the vocabulary axis is split over tensor
  positions = rows * logits_positions
  if m.head == 'lm' and config.train.get('loss_chunk_tokens', 0) > 0:
    # The fused head (losses.projected_cross_entropy): one chunk's logits at a time.
    positions = min(positions, config.train.loss_chunk_tokens)
  logits = 4 * 4 * positions * width  # float32 logits, probabilities, their gradient, labels
  return scale * (layers + (recomputed if remat != 'none' else 0)) + logits


def _attention_work_bytes(config, rows: int, tensor: int = 1) -> float:
  """The backward's working set for one layer's attention on the einsum path: float32
  scores, probabilities and their gradients (16 bytes a score), and with attention dropout
  the two uint32 threefry words of each score's bit (XLA:CPU keeps them: 8 more)."""
  m = config.model
  per_score = 16 + (8 if m.attention_dropout_rate > 0 else 0)
  s = config.data.seq_len
  pairs = s * s
  if families.get(m.family).encoder_decoder:
    t = _targets_length(config)
    pairs = max(s * s, t * t + t * s)
  return rows * m.num_heads / tensor * pairs * per_score


def _targets_length(config) -> int:
  """T5 decoder length: objective.targets_length, else span corruption's (114 at 512)."""
  o, s = config.objective, config.data.seq_len
  if o.targets_length:
    return o.targets_length
  if o.name == 'span_corruption':
    from ptlm_jax.objectives import span_corruption  # pylint: disable=g-import-not-at-top
    return span_corruption.span_shapes(s, o.noise_density, o.mean_span_length,
                                       o.random_roll).targets_length
  return max(1, round(s * 0.25))


def estimate(config, accelerator: str, num_devices: int, tokens: float, mfu: float,
             pue: float, grid_kg_per_kwh: float, peak_flops: float = 0.0,
             power_watts: float = 0.0, price_per_hour: float = -1.0) -> Estimate:
  """The whole estimate for `tokens` training tokens (see the module docstring)."""
  from ptlm_jax import flops  # pylint: disable=g-import-not-at-top
  if accelerator not in ACCELERATORS:
    raise errors.ConfigError('accelerator', accelerator, f'one of {sorted(ACCELERATORS)}')
  for name, value in (('num_devices', num_devices), ('tokens', tokens), ('mfu', mfu), ('pue', pue)):
    if not value > 0:
      raise errors.ConfigError(name, value, 'a number > 0')
  if mfu > 1:
    raise errors.ConfigError('mfu', mfu, 'a fraction in (0, 1]')
  peak, power, price = ACCELERATORS[accelerator]
  peak, power = peak_flops or peak, power_watts or power
  price = price if price_per_hour < 0 else price_per_hour

  boxed = _abstract_params(config.model)
  counts = flops.count_params(boxed)
  q = config.parallel
  mesh = None
  if q.mode == 'mesh':
    mesh = dict(zip(('data', 'fsdp', 'tensor'), config_lib.mesh_shape(config, num_devices)))
  leaves = _leaves(config, mesh)
  t = config.train
  seq = config.data.seq_len
  target = _targets_length(config) if families.get(config.model.family).encoder_decoder else 0
  output = config_lib.max_predictions(config) if families.get(config.model.family).bidirectional else 0
  step = flops.flops_per_step(config.model, counts, t.batch_size, seq, target_length=target,
                              output_length=output)
  step_flops = step['model'] + step['head']
  step_tokens = t.batch_size * seq
  per_token = step_flops / step_tokens

  replicas = mesh['data'] * mesh['fsdp'] if mesh else num_devices  # devices sharing the rows
  tensor = mesh['tensor'] if mesh else 1
  rows_split = config.optim.microbatches
  rows = max(1, t.batch_size // replicas // rows_split)
  param_bytes = _BYTES[config.model.param_dtype]
  memory = {
      'params': sum(x.size * param_bytes / x.ways for x in leaves),
      'gradients': sum(x.trainable * param_bytes / x.ways for x in leaves),
      'optimizer': _optimizer_bytes(config, leaves),
      'activations': _activation_bytes(config, rows, 'none', tensor=tensor),
      'activations_remat': _activation_bytes(config, rows, 'full', tensor=tensor),
      'activations_dots': _activation_bytes(config, rows, 'dots', tensor=tensor),
  }
  # What one device holds at the step's peak with the config's own remat policy.
  memory['attention_work'] = _attention_work_bytes(config, rows, tensor)
  # Microbatches: the accumulated gradients beside the microbatch's own.
  memory['total'] = (memory['params'] + memory['gradients'] * (2 if rows_split > 1 else 1)
                     + memory['optimizer'] + memory[_ACTIVATIONS_KEY[config.model.remat]]
                     + memory['attention_work'])
  total = sum(x.size for x in leaves)
  trainable = sum(x.trainable for x in leaves)
  device_seconds = per_token * tokens / (peak * mfu)
  device_hours = device_seconds / 3600
  energy_kwh = device_hours * power / 1000 * pue
  return Estimate(
      params_total=total, params_trainable=trainable,
      flops_per_token=per_token, flops_per_step=step_flops, memory_bytes=memory,
      device_hours=device_hours, days=device_seconds / num_devices / 86400,
      energy_kwh=energy_kwh, co2_kg=energy_kwh * grid_kg_per_kwh,
      cost_usd=device_hours * price)


def co2_kg_for_energy(energy_kwh: float, grid_kg_per_kwh: float = 0.429) -> float:
  """CO2 of an energy figure: the handout's 'fine-tuning uses 10 MWh' question."""
  return energy_kwh * grid_kg_per_kwh


def _gib(n: float) -> str:
  return f'{n / 2**30:,.2f} GiB'


def report(e: Estimate, config, accelerator: str, num_devices: int, tokens: float) -> str:
  m = e.memory_bytes
  lines = [
      f'model            {config.model.family}, d_model {config.model.d_model}, '
      f'{config.model.num_layers} layers, vocab {config.model.vocab_size}',
      f'parameters       {e.params_total:,} total, {e.params_trainable:,} trainable '
      f'({100 * e.params_trainable / e.params_total:.2f}%)',
      f'FLOPs            {e.flops_per_token:.4g} per token, {e.flops_per_step:.4g} per step '
      f'(batch {config.train.batch_size} x {config.data.seq_len})',
      f'memory / device  params {_gib(m["params"])}, gradients {_gib(m["gradients"])}, '
      f'optimizer {_gib(m["optimizer"])} ({config.optim.optimizer})',
      f'                 activations: remat none {_gib(m["activations"])}, dots '
      f'{_gib(m["activations_dots"])}, full {_gib(m["activations_remat"])}; total '
      f'{_gib(m["total"])} (model.remat={config.model.remat}, {config.model.dtype} compute, '
      f'{config.parallel.mode})',
      f'budget           {tokens:.4g} tokens on {num_devices:,} x {accelerator}',
      f'time             {e.days:,.2f} days ({e.device_hours:,.0f} device-hours)',
      f'energy           {e.energy_kwh / 1000:,.1f} MWh',
      f'CO2              {e.co2_kg / 1000:,.1f} t',
      f'cost             ${e.cost_usd:,.0f}',
  ]
  return '\n'.join(lines)


def fit_check(config, num_devices: int, e: Estimate) -> dict[str, float]:
  """Compiles the real train step of `config` on `num_devices` devices (abstract inputs,
  nothing allocated) and returns XLA's per-device figures beside the estimate `e`."""
  import time  # pylint: disable=g-import-not-at-top
  from ptlm_jax.training import compiled  # pylint: disable=g-import-not-at-top
  if jax.device_count() < num_devices:
    raise errors.UserError(
        f'--num_devices={num_devices}: this process has {jax.device_count()} devices; set '
        f'XLA_FLAGS=--xla_force_host_platform_device_count={num_devices} before jax is '
        'imported (python -m ptlm_jax.main.estimate --compile does)')
  start = time.perf_counter()
  figures = compiled.step_figures(compiled.lower_train_step(config, num_devices).compile())
  return dict(num_devices=num_devices, compile_s=round(time.perf_counter() - start, 1),
              **figures, estimated_bytes=e.memory_bytes['total'],
              estimate_over_compiled=e.memory_bytes['total'] / figures['total_bytes'])


def fit_report(fit: dict[str, float]) -> str:
  return (f'compiled step      per device (XLA memory analysis, {fit["num_devices"]} devices): '
          f'arguments {_gib(fit["argument_bytes"])}, temporaries {_gib(fit["temp_bytes"])}, '
          f'total {_gib(fit["total_bytes"])}; estimated {_gib(fit["estimated_bytes"])} '
          f'({fit["estimate_over_compiled"]:.2f}x); compiled in {fit["compile_s"]:.0f} s')
