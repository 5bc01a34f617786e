#!/usr/bin/env bash
# Carry a leaderboard's resumable state across machines (a session here ends after 3 h; the full board takes longer).
#   bash scripts/board_state.sh pack   [out_dir]   # -> docs/results/state/<name>.tar.gz (runs, results, reports; no checkpoints)
#   bash scripts/board_state.sh unpack [out_dir]   # <- the same archive, then rerun the same leaderboard command to resume
# out_dir defaults to outputs/leaderboard/full. What is kept: every concept's results.json (finished cells, with
# the config keys a resume checks) and runs/ (intervention.safetensors, cfg.json, metrics.json, interpret/report.json);
# Lightning checkpoints (*.ckpt), wandb folders and report.html are left out (a finished run does not need them;
# `saebasis interpret run=<run>` rewrites a report's HTML), and so are the run folders of cells results.json marks
# finished, but their seed-0 runs (the readability table reads those): SARA's fitted histories alone are 2.7 MB a concept.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:?pack or unpack}
out=${2:-outputs/leaderboard/full}
state=${BOARD_STATE_DIR:-docs/results/state}  # where archives live (committed)
archive="$state/$(basename "$out").tar.gz"
case "$action" in
  pack)
    mkdir -p "$state"
    finished=$(python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for results in sorted(out.glob("concepts/*/results.json")):
    runs = results.parent / "runs"
    for method in json.loads(results.read_text()).get("results", {}):
        for run in [runs / method, *runs.glob(f"{method}-seed*")]:
            if run.is_dir() and not run.name.endswith("-seed0"):
                print(run.relative_to(out.parent))
PY
)
    tar -czf "$archive" --exclude='*.ckpt' --exclude='wandb' --exclude='report.html' --exclude-from=<(printf '%s\n' $finished) \
        -C "$(dirname "$out")" "$(basename "$out")"
    echo "packed $out -> $archive ($(du -h "$archive" | cut -f1))" ;;
  unpack)
    [ -f "$archive" ] || { echo "no $archive to unpack" >&2; exit 1; }
    mkdir -p "$(dirname "$out")"
    tar -xzf "$archive" -C "$(dirname "$out")"
    echo "unpacked $archive -> $out: rerun the same leaderboard command (resume is automatic)" ;;
  *) echo "usage: $0 pack|unpack [out_dir]" >&2; exit 2 ;;
esac
