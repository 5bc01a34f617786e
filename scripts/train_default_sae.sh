#!/usr/bin/env bash
# Reproduce the shipped default SAEs (SmolLM2-135M-Instruct, resid_post of layers 12, 6 and 18) with sae-lens' runner.
#   bash scripts/train_default_sae.sh            # every layer in LAYERS (default: 12 6 18)
#   LAYERS=12 bash scripts/train_default_sae.sh  # one layer; extra args are Hydra overrides for train-sae
# Stage 1, the corpus: saebasis/assets/corpus/shard-*.jsonl.gz, shipped with the package; missing shards are generated
# first (resumable; ~150 model-written tokens/s on 2 CPU cores, ~2.5 min per shard; `python scripts/build_corpus.py`
# runs this stage alone). Stage 2, per layer: sae-lens training on the training shards, then quality.json on >= 60k
# held-out tokens (every 10th shard, never trained on).
set -euo pipefail
cd "$(dirname "$0")/.."
for layer in ${LAYERS:-12 6 18}; do
  .venv/bin/saebasis train-sae layer="$layer" architecture=topk d_sae=4096 save_fp16=true \
    out_dir="saebasis/assets/sae/smollm2-l$layer" work_dir="outputs/train_sae/l$layer" "$@"
done
