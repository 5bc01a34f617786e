#!/usr/bin/env bash
# Does the SAE's width hold the reading down? A wider layer-12 SAE (default 16,384 latents) trained with the shipped
# recipe on the same corpus (scripts/train_default_sae.sh's train-sae call, only d_sae changed), and the readability
# table (docs/results/readability.md: the three trained SAE-basis methods, seed 0, every concept) re-measured with it.
#   bash scripts/width_readability.sh [BOARD]   # BOARD: a board out_dir whose readability is the 4,096-latent reading
#                                               # to compare with (default outputs/leaderboard/full-2025)
# Stages resume where they stopped; wall times are appended to outputs/width/stages.jsonl.
#  1. train-sae layer=12 d_sae=$D_SAE (it caches the corpus' layer-12 residuals first when they are missing, ~10 min)
#     -> outputs/width/smollm2-l12-$D_SAE (weights, cfg, quality.json on the held-out shards), packed to
#     docs/results/state/smollm2-l12-$D_SAE.tar.gz; when that archive is present, it is unpacked instead of training
#  2. the readability board with that SAE: `saebasis leaderboard make_only=true 'seeds=[0]'`, the SAE-basis bias and
#     both SAE adaptors only, in the precision of BOARD (AUTOCAST, default bfloat16): trains each seed-0 run, reads it
#  3. both readings side by side -> outputs/width/readability-$D_SAE.md (+ .json): aligned cells and mean alignment
set -euo pipefail
cd "$(dirname "$0")/.."
D_SAE=${D_SAE:-16384}
AUTOCAST=${AUTOCAST:-bfloat16}
BOARD=${1:-outputs/leaderboard/full-2025}
SAE_DIR=outputs/width/smollm2-l12-$D_SAE
OUT=outputs/leaderboard/width-$D_SAE
PY=${PYTHON:-.venv/bin/python}
mkdir -p outputs/width
STAGES_LOG=outputs/width/stages.jsonl
source scripts/stage.sh  # stage <name> <command...>: run it and record its wall time
STATE=docs/results/state/$(basename "$SAE_DIR").tar.gz  # the trained SAE, committed: a new machine skips stage 1
if [ ! -f "$SAE_DIR/sae_weights.safetensors" ] && [ -f "$STATE" ]; then
  bash scripts/board_state.sh unpack "$SAE_DIR"  # checks every member before writing (see board_state.py)
fi
if [ ! -f "$SAE_DIR/sae_weights.safetensors" ]; then
  stage "train_sae_$D_SAE" "$PY" -m saebasis.cli train-sae layer=12 architecture=batchtopk d_sae="$D_SAE" \
    save_fp16=true out_dir="$SAE_DIR" work_dir="outputs/width/train-$D_SAE"
  bash scripts/board_state.sh pack "$SAE_DIR"
fi
stage "readability_$D_SAE" "$PY" -m saebasis.cli leaderboard preset=full make_only=true "autocast=$AUTOCAST" \
  'seeds=[0]' "sae.path=$SAE_DIR" "stack_overrides=['sae.path=$SAE_DIR']" "out_dir=$OUT" \
  'only=[sae_bias,sae_adaptor_sparse,sae_adaptor_lowrank]'
"$PY" -m saebasis.interpret.readability_compare "$BOARD/leaderboard.json" "$OUT/leaderboard.json" \
  --names 4096 "$D_SAE" --quality saebasis/assets/sae/smollm2-l12/quality.json "$SAE_DIR/quality.json" \
  --out "outputs/width/readability-$D_SAE.md"
