#!/usr/bin/env bash
# Carry a leaderboard's resumable state across machines: pack it on one, unpack it on another, rerun the same command.
#   bash scripts/board_state.sh pack   [out_dir]   # -> docs/results/state/<name>.tar.gz (runs, results, reports; no checkpoints)
#   bash scripts/board_state.sh unpack [out_dir]   # <- the same archive, then rerun the same leaderboard command to resume
#   bash scripts/board_state.sh forget <out_dir> <concept> <method>...   # drop finished cells (cell file, results.json
#        entry, runs, checkpoints) so that the board's next run computes them again, e.g. cells timed during a pause
# out_dir defaults to outputs/leaderboard/full; BOARD_STATE_DIR sets where archives live (default docs/results/state).
# What is kept: every concept's results.json and cells/ (finished cells, with the config keys a resume checks) and
# runs/ (intervention.safetensors, cfg.json, metrics.json, interpret/report.json); Lightning checkpoints (*.ckpt),
# locks, wandb folders, report.html and links are left out, and so are the run folders of cells results.json marks
# finished, but their seed-0 runs (`<method>-seed0`, and a fitted method's one run `<method>` up to 1 MiB: the
# readability table reads those).
# unpack checks every member before writing anything: only regular files and folders inside <out_dir's name>/ (no
# links, no absolute or '..' paths, no sibling board's files, no setuid / setgid / world-writable modes); see
# docs/run-folders.md. The work is done by saebasis/experiments/board_state.py (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" saebasis/experiments/board_state.py "$@"
