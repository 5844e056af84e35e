#!/usr/bin/env bash
# Makes the peers' virtualenv (default $HOME/.cache/ptlm-peers/venv, where
# `python -m benchmarks.speed --compare_hf=N` looks) with the pins of requirements.txt.
#   bash benchmarks/peers/setup.sh            # or VENV=/some/dir bash benchmarks/peers/setup.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-$HOME/.cache/ptlm-peers/venv}
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# TORCH_INDEX=https://download.pytorch.org/whl/cpu takes torch's CPU build from PyTorch's own
# index (the default PyPI wheel brings CUDA libraries along); unset, pip's own settings decide.
"$VENV/bin/pip" install -q ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} -r "$HERE/requirements.txt"
"$VENV/bin/python" - <<'PY'
import flax, jax, optax, torch, transformers
from transformers import FlaxBertForMaskedLM, FlaxGPT2LMHeadModel, FlaxT5ForConditionalGeneration
print('peers venv ok: torch', torch.__version__, 'jax', jax.__version__, 'flax', flax.__version__,
      'optax', optax.__version__, 'transformers', transformers.__version__)
PY
