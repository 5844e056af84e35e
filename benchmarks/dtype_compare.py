"""bf16 vs f32: the train step of one family / preset in both dtypes, interleaved step by step
in one process (both see the same machine load), and the median ratio.

  python -m benchmarks.dtype_compare gpt small 5      # family, preset, rounds
"""
import json, statistics, sys, time
import jax
from benchmarks import train_step as bt
from benchmarks.peers import common as pc
family, preset, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
benches = {dt: bt.TrainBench(bt.preset_config(family, preset, dtype=dt)) for dt in ('float32', 'bfloat16')}
for b in benches.values():
  b.run(1)  # warm-up
times = {dt: [] for dt in benches}
before = bt.cpu_times()
for _ in range(rounds):
  for dt, b in benches.items():
    times[dt] += b.run(1)
load = bt.contention(before, bt.cpu_times())
med = {dt: statistics.median(t) for dt, t in times.items()}
rec = dict(kind='dtype_comparison', family=family, preset=preset, rounds=rounds,
           step_ms_median={dt: round(m * 1e3, 1) for dt, m in med.items()},
           step_ms_all={dt: [round(x * 1e3, 1) for x in t] for dt, t in times.items()},
           bf16_speedup=round(med['float32'] / med['bfloat16'], 3),
           compile_s={dt: round(b.compile_s, 1) for dt, b in benches.items()},
           matmul_gflops=dict(bt.matmul_gflops(1024), n=1024), jax=jax.__version__,
           date=time.strftime('%Y-%m-%d'), **load, **pc.cpu_features())
print(json.dumps(rec, sort_keys=True), flush=True)
