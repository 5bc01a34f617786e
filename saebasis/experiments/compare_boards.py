"""Agreement of two published leaderboards over the same methods and concepts (e.g. fp32 vs bf16).

    python scripts/compare_boards.py docs/results/leaderboard_full.json docs/results/leaderboard_full_bf16.json \
        --names fp32 bf16 --out docs/results/boards_fp32_vs_bf16.md

Reads the two boards' leaderboard.json (nothing is generated or judged) and writes a markdown page and its JSON
beside it, on the concepts and methods both ran: Spearman's rho of the methods' mean scores and of their mean
ranks, each method's mean score and
place on both boards, and per concept the rho of the methods' scores and both winners
(saebasis.eval.board.board_agreement).

    python scripts/compare_boards.py A.json B.json --names fp32 bf16 --results outputs/leaderboard/full \
        outputs/leaderboard/full-bf16 --out ...

With --results (the two boards' out_dirs: concepts/*/results.json, e.g. unpacked by scripts/board_state.sh) it also
measures every ordering either page lists in its paired differences on both boards -- a minus b and its 95% CI on
each -- and says where it is resolved: both, one board only, or neither (saebasis.eval.board.contrast_agreement).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from saebasis.eval.board import board_agreement, contrast_agreement, resolved
from saebasis.experiments.leaderboard import finished_concepts


def render(agree: dict, names: tuple[str, str]) -> str:
    a, b = names
    lines = [
        f"# Leaderboard agreement: {a} vs {b}",
        "",
        f"On the {agree['n_concepts']} concepts and {len(agree['methods'])} methods both boards ran. "
        f"Spearman's rho over methods: mean score {agree['rho_scores']:.2f}, mean rank {agree['rho_ranks']:.2f}; "
        f"per concept (methods' scores) median {agree['median_concept_rho']:.2f}; the same winner on "
        f"{agree['same_winners']} of {len(agree['concepts'])} concepts.",
        "",
        f"| method | mean score {a} | mean score {b} | mean rank {a} | mean rank {b} | place {a} | place {b} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['method']} | {r['score_a']:.3f} | {r['score_b']:.3f} | {r['rank_a']:.2f} | {r['rank_b']:.2f} | "
        f"{r['place_a']} | {r['place_b']} |"
        for r in agree["methods"]
    ]
    lines += ["", f"| concept | rho | winner {a} | winner {b} | same |", "|---|---:|---|---|---|"]
    lines += [
        f"| {c} | {v['rho']:.2f} | {', '.join(v['winner_a'])} | {', '.join(v['winner_b'])} | "
        f"{'yes' if v['same_winner'] else 'no'} |"
        for c, v in agree["concepts"].items()
    ]
    return "\n".join(lines) + "\n"


def render_contrasts(rows: list[dict], names: tuple[str, str]) -> str:
    a, b = names
    where = {
        "both": "both",
        "both, opposite signs": "both, **opposite signs**",
        "a only": f"{a} only",
        "b only": f"{b} only",
        "neither": "neither",
    }
    counts = {k: sum(r["resolved"] == k for r in rows) for k in where}
    lines = [
        "",
        "## Which orderings are resolved on both boards",
        "",
        f"Every ordering either page lists among its paired differences, measured on both boards (a minus b, paired by "
        f"test instruction; 95% CI by a bootstrap over concepts then instructions; **bold** = excludes 0). Of "
        f"{len(rows)}: resolved on both {counts['both']}, with opposite signs {counts['both, opposite signs']}, "
        f"on {a} only "
        f"{counts['a only']}, on {b} only {counts['b only']}, on neither {counts['neither']}.",
        "",
        f"| a | b | {a}: a - b [95% CI] | {b}: a - b [95% CI] | resolved on |",
        "|---|---|---:|---:|---|",
    ]

    def cell(d: dict) -> str:
        text = f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
        return f"**{text}**" if resolved(d) else text

    lines += [f"| {r['a']} | {r['b']} | {cell(r['in_a'])} | {cell(r['in_b'])} | {where[r['resolved']]} |" for r in rows]
    return "\n".join(lines) + "\n"


def load_results(board: Path, order: list[str]) -> dict[str, dict]:
    """{concept: results.json} of a leaderboard's finished concepts, in `order` (then any others)."""
    results, _ = finished_concepts(board, order)
    if not results:
        raise SystemExit(
            f"{board} has no concepts/*/results.json of a finished concept: give a leaderboard's out_dir "
            "(unpack its state with "
            f"bash scripts/board_state.sh unpack <out_dir>)"
        )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--names", nargs=2, default=["a", "b"])
    parser.add_argument(
        "--out", type=Path, default=None, help="markdown page (its .json beside it); default: print only"
    )
    parser.add_argument(
        "--results",
        nargs=2,
        type=Path,
        default=None,
        metavar=("A_DIR", "B_DIR"),
        help="the boards' out_dirs: also measure every listed ordering on both",
    )
    args = parser.parse_args(argv)
    for path in (args.a, args.b):
        if not path.exists():
            raise SystemExit(
                f"{path} does not exist: publish the board first (python scripts/publish_board.py <out_dir> <name>)"
            )
    boards = [json.loads(path.read_text()) for path in (args.a, args.b)]
    agree = board_agreement(*boards)
    page = render(agree, tuple(args.names))
    if args.results:
        order = list(next(iter(boards[0]["per_concept"].values())))  # the concept order the pages bootstrapped in
        pairs = [(r["a"], r["b"]) for board in boards for r in board.get("contrasts", [])]
        agree["contrasts"] = contrast_agreement(*(load_results(d, order) for d in args.results), pairs)
        page += render_contrasts(agree["contrasts"], tuple(args.names))
    print(page)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(page)
        args.out.with_suffix(".json").write_text(json.dumps({"names": args.names, **agree}, indent=1))
        print(f"[compare_boards] wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
