#!/usr/bin/env bash
# Reproduce the shipped default SAEs (SmolLM2-135M-Instruct, resid_post of layers 12, 6 and 18) with sae-lens' trainer.
#   bash scripts/train_default_sae.sh            # every stage, every layer in LAYERS (default: 12 6 18)
#   LAYERS=12 bash scripts/train_default_sae.sh  # one layer; extra args are Hydra overrides for train-sae
# Every stage resumes where it stopped, and its wall time is appended to outputs/train_sae/stages.jsonl.
#  1. corpus: saebasis/assets/corpus/shard-*.jsonl.gz (shipped), 51 shards x 128 model-written documents; the residuals
#     of layers 6/12/18 are captured while each shard is written (~150 model-written tokens/s on 2 CPU cores).
#  2. activation cache: any training shard without a valid cache gets one forward pass (~600 tokens/s to layer 18).
#  3. per layer: sae-lens trains a BatchTopK SAE (k 32, saved as JumpReLU) from the cache (several shuffled passes), then quality.json is measured on
#     >= 60k held-out tokens (every 10th shard, never trained on).
#  4. per-latent tables on the held-out shards, shipped in each SAE folder (scripts/build_latent_tables.py).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p outputs/train_sae
STAGES_LOG=outputs/train_sae/stages.jsonl
source scripts/stage.sh  # stage <name> <command...>: run it and record its wall time
stage corpus .venv/bin/python scripts/build_corpus.py --n-shards 51 --cache-layers 6 12 18
stage activation_cache .venv/bin/python scripts/cache_activations.py --layers 6 12 18
for layer in ${LAYERS:-12 6 18}; do
  stage "train_sae_l$layer" .venv/bin/saebasis train-sae layer="$layer" architecture=batchtopk d_sae=4096 save_fp16=true \
    "corpus.cache_layers=[6,12,18]" out_dir="saebasis/assets/sae/smollm2-l$layer" work_dir="outputs/train_sae/l$layer" "$@"
done
names=(); for layer in ${LAYERS:-12 6 18}; do names+=("smollm2-l$layer"); done
stage latent_tables .venv/bin/python scripts/build_latent_tables.py --sae "${names[@]}"
