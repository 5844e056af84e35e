r"""Benchmarks, one JSON line per measurement; `--mode` picks what is timed.

  python -m ptlm_jax.benchmark --mode=generate                  # greedy decode tokens/s
  python -m ptlm_jax.benchmark --mode=generate --compare_hf=3   # + HF Flax, interleaved

generate: the GPT small shape (vocab 8192, d_model 256, 4 layers, 4 heads, ffn 1024,
512 positions, float32, random weights), batch 8, 16-token random prompts, exactly 128
new tokens by greedy decoding (EOS banned until then, like the peer's min_length).  The
first call compiles; `new_tokens_per_s` = batch * new tokens / the median wall time of
the next 5 calls, `ms_per_token_step` = that median / new tokens.

--compare_hf=N runs N rounds of (this benchmark, the peer harness's HF Flax
`FlaxGPT2LMHeadModel.generate` under jax.jit on the same shape), each in a fresh
process, alternating so that both see the same machine load, then prints the median of
the per-round throughput ratios.  The peer harness (shared/bench/peers, its own venv:
HF transformers 4.57.6 needs jax 0.9) is found through --peer_python and --peer_script.

New modes (training steps, ...) add a function to MODES.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string('mode', 'generate', 'What to time: ' + ', '.join(['generate']))
flags.DEFINE_integer('batch', 8, 'generate: prompts decoded together.')
flags.DEFINE_integer('prompt_len', 16, 'generate: prompt tokens per row.')
flags.DEFINE_integer('new_tokens', 128, 'generate: new tokens per row.')
flags.DEFINE_integer('runs', 5, 'Timed calls after the compiling one.')
flags.DEFINE_integer('compare_hf', 0, 'generate: rounds of (ours, HF Flax) in fresh processes '
                     '(0 = ours only, in this process).')
flags.DEFINE_string('peer_python', os.path.expanduser('~/.cache/ptlm-peers/venv/bin/python'),
                    'Python of the peer-benchmark venv (HF transformers + jax 0.9).')
flags.DEFINE_string('peer_script', '/work/shared/bench/peers/hf_flax_train.py',
                    'The peer harness (shared/bench/peers/hf_flax_train.py).')

# The peer harness's `small` preset (shared/bench/peers/common.py).
SMALL_GPT = dict(vocab_size=8192, d_model=256, num_layers=4, num_heads=4, head_dim=64,
                 d_ff=1024, max_len=512)


def _cpu_times() -> tuple[float, float, float, float]:
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


def _load(before, after) -> dict:
  """CPU used by other processes and stolen while timing, as fractions of all CPUs: on a
  shared machine, read throughput next to these (the peer harness records the same)."""
  capacity = (after[0] - before[0]) * (os.cpu_count() or 1)
  own = after[3] - before[3]
  return dict(foreign_cpu_frac=round(max(0.0, after[1] - before[1] - own) / capacity, 4),
              steal_frac=round((after[2] - before[2]) / capacity, 4))


def _versions() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return dict(jax=jax.__version__, backend=jax.default_backend(),
              device_kind=device.device_kind, host_cpus=os.cpu_count())


def bench_generate(batch: int, prompt_len: int, new_tokens: int, runs: int) -> dict:
  """Greedy decoding throughput of this project's loop on the GPT small shape."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top  (jax starts on first use)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ptlm_jax import config_lib, generate, models  # pylint: disable=g-import-not-at-top

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
  times, before = [], _cpu_times()
  for _ in range(runs):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  load = _load(before, _cpu_times())
  median = statistics.median(times)
  return dict(peer='ptlm_jax', kind='generate', family='gpt', config='small', gen_batch=batch,
              prompt_len=prompt_len, new_tokens=new_tokens, first_call_s=round(first, 3),
              gen_s_median=round(median, 4), gen_s_min=round(min(times), 4), runs=runs,
              new_tokens_per_s=round(batch * new_tokens / median, 1),
              ms_per_token_step=round(median / new_tokens * 1e3, 3), **load, **_versions())


MODES = {'generate': bench_generate}


def _json_line(output: str) -> dict:
  """The last line of a process's stdout that is a generation record."""
  for line in reversed(output.strip().splitlines()):
    if line.startswith('{') and '"generate"' in line:
      return json.loads(line)
  raise RuntimeError(f'no generation record in:\n{output[-2000:]}')


def compare_hf(rounds: int, batch: int, prompt_len: int, new_tokens: int, runs: int) -> None:
  """Alternates fresh processes of this benchmark and the HF Flax peer; prints the ratios."""
  for path in (FLAGS.peer_python, FLAGS.peer_script):
    if not os.path.exists(path):
      raise app.UsageError(f'{path} not found: set --peer_python / --peer_script '
                           '(shared/bench/peers/setup_venv.sh makes the venv)')
  ours_cmd = [sys.executable, '-m', 'ptlm_jax.benchmark', '--mode=generate', f'--batch={batch}',
              f'--prompt_len={prompt_len}', f'--new_tokens={new_tokens}', f'--runs={runs}']
  # --families '' : no training measurements, generation only (--steps 0 would leave the
  # harness's training benchmark with no timed step).
  theirs_cmd = [FLAGS.peer_python, FLAGS.peer_script, '--config', 'small', '--families', '',
                '--gen', '--gen-batch', str(batch), '--prompt-len', str(prompt_len),
                '--new-tokens', str(new_tokens), '--gen-runs', str(runs)]
  ratios, records = [], []
  for r in range(rounds):
    pair = []
    for name, cmd in (('ours', ours_cmd), ('hf-flax', theirs_cmd)):
      proc = subprocess.run(cmd, capture_output=True, text=True, check=True,
                            env=dict(os.environ, JAX_PLATFORMS='cpu'))
      record = _json_line(proc.stdout)
      record['round'] = r
      print(json.dumps(record, sort_keys=True), flush=True)
      pair.append(record['new_tokens_per_s'])
      records.append(record)
    ratios.append(pair[0] / pair[1])
  ours = [x['new_tokens_per_s'] for x in records if x['peer'] == 'ptlm_jax']
  theirs = [x['new_tokens_per_s'] for x in records if x['peer'] != 'ptlm_jax']
  print(json.dumps(dict(kind='generate_comparison', rounds=rounds,
                        ours_new_tokens_per_s_median=statistics.median(ours),
                        hf_flax_new_tokens_per_s_median=statistics.median(theirs),
                        ratios=[round(x, 3) for x in ratios],
                        median_ratio=round(statistics.median(ratios), 3))), flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.mode not in MODES:
    raise app.UsageError(f'--mode={FLAGS.mode!r}: expected one of {sorted(MODES)}')
  if FLAGS.compare_hf:
    if FLAGS.mode != 'generate':
      raise app.UsageError('--compare_hf applies to --mode=generate')
    compare_hf(FLAGS.compare_hf, FLAGS.batch, FLAGS.prompt_len, FLAGS.new_tokens, FLAGS.runs)
    return
  record = MODES[FLAGS.mode](FLAGS.batch, FLAGS.prompt_len, FLAGS.new_tokens, FLAGS.runs)
  print(json.dumps(record, sort_keys=True), flush=True)


if __name__ == '__main__':
  app.run(main)
