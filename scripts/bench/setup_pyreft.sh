#!/usr/bin/env bash
# The LoReFT baseline's own venv (.venv-pyreft): pyreft 0.1.0 pins transformers==4.45.1, saebasis needs 5.x.
# torch is installed first and then held, so pyreft's deps cannot swap it for a CUDA build.
#   bash scripts/bench/setup_pyreft.sh              # CPU torch 2.13.0 (from this machine's disk / PyPI)
#   TORCH_INDEX=https://download.pytorch.org/whl/cu124 bash scripts/bench/setup_pyreft.sh   # a GPU build
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[ -x .venv-pyreft/bin/python ] || "$PY" -m venv .venv-pyreft
.venv-pyreft/bin/pip install -q --upgrade pip
.venv-pyreft/bin/pip install -q torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
held=$(mktemp)
echo "torch==$(.venv-pyreft/bin/python -c 'import torch; print(torch.__version__)')" > "$held"
.venv-pyreft/bin/pip install -q pyreft -c "$held"
rm -f "$held"
.venv-pyreft/bin/python -c "import pyreft, transformers; print('pyreft', pyreft.__version__ if hasattr(pyreft, '__version__') else '0.1', 'transformers', transformers.__version__)"
