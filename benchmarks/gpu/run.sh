#!/usr/bin/env bash
# GPU benchmark of issue 9: GPT-2 124M, BERT-base, T5-base in bfloat16 (mesh mode), MFU against
# the card's dense bf16 peak.  Run from the repository root on the GPU machine:
#   bash benchmarks/gpu/run.sh            # JSON lines on stdout and in $OUT/gpu_bench.jsonl
# Each model runs in its own process under `timeout` (PER_MODEL_TIMEOUT s, default 60), so a
# hang or a crash costs one model, and every finished line is already written.  ml_collections
# is the one package the device image lacks: wheels in .whl/ are installed first (README.md).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_bench_out}
PY=${PY:-python3}
PER_MODEL_TIMEOUT=${PER_MODEL_TIMEOUT:-60}
MODELS=${MODELS:-"gpt2-124m bert-base t5-base"}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$(pwd):${PYTHONPATH:-}
start=$(date +%s)
timeout 30 "$PY" -c 'import jax, json; d = jax.devices()[0]; print(json.dumps(dict(kind="gpu_device", device_kind=d.device_kind, devices=jax.device_count(), jax=jax.__version__, backend=jax.default_backend(), memory_gib=round((d.memory_stats() or {}).get("bytes_limit", 0) / 2**30, 1))))' \
  | tee -a "$OUT/gpu_bench.jsonl"
for model in $MODELS; do
  timeout -k 5 "$PER_MODEL_TIMEOUT" "$PY" benchmarks/gpu/gpu_bench.py --model="$model" \
      --out="$OUT/gpu_bench.jsonl" "$@"
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "{\"kind\": \"gpu_error\", \"model\": \"$model\", \"error\": \"timed out after ${PER_MODEL_TIMEOUT} s\"}" \
      | tee -a "$OUT/gpu_bench.jsonl"
  fi
done
echo "{\"kind\": \"gpu_done\", \"wall_s\": $(( $(date +%s) - start ))}" | tee -a "$OUT/gpu_bench.jsonl"
