"""Agreement of two published leaderboards over the same methods and concepts (e.g. fp32 vs bf16).

    python scripts/compare_boards.py docs/results/leaderboard_full.json docs/results/leaderboard_full_bf16.json \
        --names fp32 bf16 --out docs/results/boards_fp32_vs_bf16.md

Reads the two boards' leaderboard.json (nothing is generated or judged) and writes a markdown page and its JSON
beside it, on the concepts and methods both ran: Spearman's rho of the methods' mean scores and of their mean ranks, each method's mean score and
place on both boards, and per concept the rho of the methods' scores and both winners
(saebasis.eval.board.board_agreement).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from saebasis.eval.board import board_agreement


def render(agree: dict, names: tuple[str, str]) -> str:
    a, b = names
    lines = [f"# Leaderboard agreement: {a} vs {b}", "",
             f"On the {agree['n_concepts']} concepts and {len(agree['methods'])} methods both boards ran. "
             f"Spearman's rho over methods: mean score {agree['rho_scores']:.2f}, mean rank {agree['rho_ranks']:.2f}; "
             f"per concept (methods' scores) median {agree['median_concept_rho']:.2f}; the same winner on "
             f"{agree['same_winners']} of {len(agree['concepts'])} concepts.", "",
             f"| method | mean score {a} | mean score {b} | mean rank {a} | mean rank {b} | place {a} | place {b} |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['score_a']:.3f} | {r['score_b']:.3f} | {r['rank_a']:.2f} | {r['rank_b']:.2f} | "
              f"{r['place_a']} | {r['place_b']} |" for r in agree["methods"]]
    lines += ["", f"| concept | rho | winner {a} | winner {b} | same |", "|---|---:|---|---|---|"]
    lines += [f"| {c} | {v['rho']:.2f} | {', '.join(v['winner_a'])} | {', '.join(v['winner_b'])} | {'yes' if v['same_winner'] else 'no'} |"
              for c, v in agree["concepts"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--names", nargs=2, default=["a", "b"])
    parser.add_argument("--out", type=Path, default=None, help="markdown page (its .json beside it); default: print only")
    args = parser.parse_args(argv)
    for path in (args.a, args.b):
        if not path.exists():
            raise SystemExit(f"{path} does not exist: publish the board first (python scripts/publish_board.py <out_dir> <name>)")
    agree = board_agreement(json.loads(args.a.read_text()), json.loads(args.b.read_text()))
    page = render(agree, tuple(args.names))
    print(page)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(page)
        args.out.with_suffix(".json").write_text(json.dumps({"names": args.names, **agree}, indent=1))
        print(f"[compare_boards] wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
