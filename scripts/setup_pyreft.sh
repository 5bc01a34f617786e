#!/usr/bin/env bash
# pyreft's own venv (.venv-pyreft) for the `loreft` peer (training) and the LoReFT benchmark: pyreft 0.1.0 pins
# transformers==4.45.1, saebasis needs 5.x, so the two never share a venv (saebasis talks to it through
# saebasis/interventions/loreft_worker.py). Optional: nothing else in saebasis needs it.
# torch is installed first and then held, so pyreft's deps cannot swap it for a CUDA build.
#   bash scripts/setup_pyreft.sh              # CPU torch 2.13.0
#   TORCH_INDEX=https://download.pytorch.org/whl/cu124 bash scripts/setup_pyreft.sh   # a GPU build
# Elsewhere than <repo>/.venv-pyreft: point SAEBASIS_PYREFT_PYTHON at that venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-pyreft/bin/python ] || "$PY" -m venv .venv-pyreft
.venv-pyreft/bin/pip install -q --upgrade pip
.venv-pyreft/bin/pip install -q torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
held=$(mktemp)
echo "torch==$(.venv-pyreft/bin/python -c 'import torch; print(torch.__version__)')" > "$held"
.venv-pyreft/bin/pip install -q pyreft==0.1.0 -c "$held"
rm -f "$held"
.venv-pyreft/bin/python -c "import pyreft, transformers; from importlib.metadata import version; print('pyreft', version('pyreft'), 'transformers', transformers.__version__)"
