"""Publish a leaderboard's pages into docs/: re-render them from its results with the current code, copy them.

    python scripts/publish_board.py outputs/leaderboard/full full
      -> docs/results/leaderboard_full.md / .json, docs/img/leaderboard_full.png (heat map),
         docs/img/leaderboard_full_tradeoff.png (score vs latents changed),
         docs/img/leaderboard_full_capability.png (score vs capability kept, when the board measured it)

Reads only the board's JSON (concepts/<name>/results.json in the config's concept order, leaderboard.json for its
time and readability); nothing is generated or judged. A concept whose results.json is missing or not complete is
left out, and the page says how many concepts it has. The time in the page's title is the sum of every cell's own
time (training / fitting, strength search, test generation and judging) over every run of the board, resumes
included, and leaves out runs made earlier with make_only=true."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from saebasis.config import compose, to_dict
from saebasis.data import resolve_concepts
from saebasis.experiments.leaderboard import finished_concepts, write

REPO = Path(__file__).resolve().parents[2]  # a clone's root (pip install -e .)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("board", type=Path, help="the leaderboard's out_dir")
    parser.add_argument("name", help="suffix of the published files (leaderboard_<name>.md ...)")
    parser.add_argument(
        "--preset", default=None, help="the preset it ran with (default: <name>): its concept order and contrasts"
    )
    parser.add_argument(
        "--docs", type=Path, default=REPO / "docs", help="where results/ and img/ are (default: the repo's docs/)"
    )
    args = parser.parse_args(argv)
    cfg = to_dict(compose("leaderboard", [f"preset={args.preset or args.name}"]))
    prev_path = args.board / "leaderboard.json"
    if not prev_path.exists():
        raise SystemExit(f"{prev_path} does not exist: run `saebasis leaderboard` into {args.board} first")
    prev = json.loads(prev_path.read_text())
    per_concept = next(iter((prev.get("per_concept") or {}).values()), {})  # the order the board was written in
    try:
        listed = [Path(c).name for c in resolve_concepts(cfg["concepts"])]
    except (FileNotFoundError, ValueError):  # a folder of the preset that is not here: its names as written
        listed = [Path(c).name for c in cfg["concepts"]]
    named = list(per_concept) + [n for n in listed if n not in per_concept]
    results, left = finished_concepts(args.board, named)
    if not results:
        raise SystemExit(f"no finished concept in {args.board}/concepts: nothing to publish")
    seconds = sum(res.get("eval_time_s", 0.0) for blob in results.values() for res in blob["results"].values())
    write(args.board, results, seconds, final=True, readable=prev.get("readability"), pairs=cfg.get("contrasts"))
    out = {
        args.board / "leaderboard.md": args.docs / "results" / f"leaderboard_{args.name}.md",
        args.board / "leaderboard.json": args.docs / "results" / f"leaderboard_{args.name}.json",
        args.board / "heatmap.png": args.docs / "img" / f"leaderboard_{args.name}.png",
        args.board / "tradeoff.png": args.docs / "img" / f"leaderboard_{args.name}_tradeoff.png",
        args.board / "capability.png": args.docs / "img" / f"leaderboard_{args.name}_capability.png",
    }
    for src, dst in out.items():
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
            print(f"[publish] {dst}")
    print(f"[publish] {len(results)} concepts" + (f"; not finished, left out: {', '.join(left)}" if left else ""))


if __name__ == "__main__":
    main()
