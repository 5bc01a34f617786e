#!/usr/bin/env bash
# Optional: lm-evaluation-harness (lm_eval 0.4.13, which has the `steered` model type) in saebasis' own venv (.venv),
# to run the capability task (saebasis/eval/capability_task/) on an exported steering file offline (docs/export.md).
# torch / transformers / numpy are held at what .venv has, so nothing here can replace them.
#   bash scripts/setup_lmeval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=.venv/bin/pip
[ -x "$PIP" ] || { echo "no .venv: run bash scripts/setup.sh first" >&2; exit 1; }
held=$(mktemp)
.venv/bin/python -c "import numpy, torch, transformers; print(f'numpy=={numpy.__version__}'); \
print(f'torch=={torch.__version__}'); print(f'transformers=={transformers.__version__}')" > "$held"
"$PIP" install -q -c "$held" 'lm-eval==0.4.13'
rm -f "$held"
.venv/bin/python -c "import lm_eval, lm_eval.models.hf_steered; from importlib.metadata import version; \
print('lm-eval', version('lm-eval'))"
