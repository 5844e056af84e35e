#!/usr/bin/env bash
# ptlm_jax launcher: sets up .venv on first use, then runs a job.
#
#   ./launch.sh [ARGS]          the default job: MLM vs causal LM vs span corruption at matched
#                               compute on the embedded news corpus, then rotten_tomatoes and
#                               shakespeare_ner transfer (python -m experiments.compare_objectives;
#                               report in runs/compare/report.md, ~15 min on 2 CPU cores)
#   ./launch.sh test [ARGS]     install the test extras and run the whole test suite
#   ./launch.sh train ARGS      python -m ptlm_jax.main ARGS
#   ./launch.sh sweep FILE --workdir=DIR [--tpu=N --zone=Z --type=T] [--dry_run]
#                               the runs a sweep file declares, here or on a TPU VM
#   ./launch.sh tpu --name=N --zone=Z --type=v4-32 [--dry_run] -- MAIN_ARGS
#                               run the main on every worker of a Cloud TPU VM (gcloud)
#
# .venv is (re)built only when it is missing or setup.py / constraints.txt changed
# (PTLM_NO_INSTALL=1 uses an existing .venv as it is). PYTHON selects the interpreter
# used to create it (default: python3, 3.10+).
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
STAMP="$VENV/.ptlm-stamp"

ensure_venv() {  # $1: extras to install ("" or "test")
  local extras="$1" want have
  if [[ -n "${PTLM_NO_INSTALL:-}" && -x "$VENV/bin/python" ]]; then
    return 0
  fi
  want="$(cat setup.py constraints.txt | sha256sum | cut -c1-16)"
  have="$(cat "$STAMP" 2>/dev/null || true)"
  # The stamp records the dependency hash and the extras installed with it.
  if [[ -x "$VENV/bin/python" && "$have" == "$want:"* ]]; then
    if [[ -z "$extras" || "$have" == *":$extras"* ]]; then
      return 0
    fi
  fi
  echo "[launch] setting up $VENV (extras: ${extras:-none}); this takes a few minutes the first time" >&2
  if [[ ! -x "$VENV/bin/python" ]]; then
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  local spec="."
  [[ -n "$extras" ]] && spec=".[$extras]"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      -c constraints.txt -e "$spec"
  echo "$want:$extras" > "$STAMP"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  "")
    ensure_venv ""
    # The compute-matched objective comparison (corpus and tokenizer made on first use).
    exec "$VENV/bin/python" -m experiments.compare_objectives "$@"
    ;;
  --*)
    # Flags only: they belong to the default job (e.g. ./launch.sh --seeds=3).
    ensure_venv ""
    exec "$VENV/bin/python" -m experiments.compare_objectives "$cmd" "$@"
    ;;
  test)
    ensure_venv test
    exec "$VENV/bin/python" -m pytest tests "$@"
    ;;
  train)
    ensure_venv ""
    exec "$VENV/bin/python" -m ptlm_jax.main "$@"
    ;;
  sweep)
    # A dry run or a pod sweep needs only the standard library; local runs need .venv.
    if [[ " $* " == *" --dry_run "* || " $* " == *" --tpu"* ]]; then
      exec "${PYTHON:-python3}" -m experiments.sweep "$@"
    fi
    ensure_venv ""
    exec "$VENV/bin/python" -m experiments.sweep --python="$VENV/bin/python" "$@"
    ;;
  tpu)
    # Standard library only: prints or runs the gcloud commands, no local install needed.
    exec "${PYTHON:-python3}" -m experiments.tpu_launch "$@"
    ;;
  -h|--help|help)
    sed -n '2,19p' "$0"
    ;;
  *)
    echo "launch.sh: unknown command '$cmd' (expected: test, train, sweep, tpu, or nothing)" >&2
    exit 2
    ;;
esac
