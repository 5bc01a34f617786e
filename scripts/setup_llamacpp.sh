#!/usr/bin/env bash
# Optional: llama.cpp through llama-cpp-python, built from its PyPI source distribution (no prebuilt binary is
# fetched), CPU only, into saebasis' own venv (.venv, made by scripts/setup.sh). Used to check exported control
# vectors in llama.cpp (tests/export/test_llamacpp.py, docs/export.md). The compile takes a while on 2 cores:
#   nice -n 10 nohup bash scripts/setup_llamacpp.sh > llamacpp-build.log 2>&1 &
# torch / transformers / numpy are held at what .venv has, so nothing here can replace them.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=.venv/bin/pip
[ -x "$PIP" ] || { echo "no .venv: run bash scripts/setup.sh first" >&2; exit 1; }
held=$(mktemp)
.venv/bin/python -c "import numpy, torch, transformers; print(f'numpy=={numpy.__version__}'); \
print(f'torch=={torch.__version__}'); print(f'transformers=={transformers.__version__}')" > "$held"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
"$PIP" install --no-binary llama-cpp-python -c "$held" 'llama-cpp-python>=0.3.16'
rm -f "$held"
.venv/bin/python -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, '|', \
llama_cpp.llama_print_system_info().decode())"
