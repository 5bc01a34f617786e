#!/usr/bin/env bash
# Reproduce the shipped default SAE (SmolLM2-135M-Instruct, layer 12 resid_post): ~12 min of corpus
# generation (cached) + ~10 min of training on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/saebasis train-sae layer=12 architecture=topk d_sae=4096 save_fp16=true \
  out_dir=saebasis/assets/sae/smollm2-l12 "$@"
