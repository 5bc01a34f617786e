"""Two readability tables side by side (e.g. the same methods and concepts read through SAEs of two widths).

    python -m saebasis.interpret.readability_compare A/leaderboard.json B/leaderboard.json --names 4096 16384 \
        [--quality A/quality.json B/quality.json] --out readability-width.md

Reads each board's `readability` ({concept: {method: coverage / alignment}}; nothing is run) and writes a markdown
page and its JSON: on the (method, concept) cells both read, how many are aligned (alignment CI above 0) in each,
in both, in one only, and the mean alignment difference per method; with --quality, each SAE's quality.json
(explained variance, L0, dead latents) above the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

from saebasis.interpret.readability import resolved


def _num(x) -> str:
    return "-" if not isinstance(x, (int, float)) else f"{x:.3f}" if abs(x) < 100 else f"{x:.0f}"


def aligned(cell: dict) -> bool:
    """The alignment's CI lies above 0 (readability.resolved's '+')."""
    return resolved(cell) == "+"


def compare(a: dict[str, dict], b: dict[str, dict]) -> dict:
    """a, b: readability tables {concept: {method: {"diff", "ci95", ...}}}. Cells both have, per method: aligned
    counts in a / b / both, and the mean alignment (diff) in each."""
    methods: dict[str, dict] = {}
    for concept, by_method in a.items():
        for method, cell_a in by_method.items():
            cell_b = (b.get(concept) or {}).get(method)
            if cell_b is None or cell_a.get("diff") is None or cell_b.get("diff") is None:
                continue
            m = methods.setdefault(method, {"cells": [], "a": 0, "b": 0, "both": 0, "diff_a": [], "diff_b": []})
            m["cells"].append(concept)
            m["a"] += aligned(cell_a)
            m["b"] += aligned(cell_b)
            m["both"] += aligned(cell_a) and aligned(cell_b)
            m["diff_a"].append(cell_a["diff"])
            m["diff_b"].append(cell_b["diff"])
    if not methods:
        raise ValueError("the two readability tables share no (method, concept) cell with an alignment.")
    rows = {
        method: {
            "concepts": len(m["cells"]),
            "aligned_a": m["a"],
            "aligned_b": m["b"],
            "aligned_both": m["both"],
            "mean_diff_a": mean(m["diff_a"]),
            "mean_diff_b": mean(m["diff_b"]),
            "b_higher": sum(y > x for x, y in zip(m["diff_a"], m["diff_b"])),
        }
        for method, m in sorted(methods.items())
    }
    total = {k: sum(r[k] for r in rows.values()) for k in ("concepts", "aligned_a", "aligned_b", "aligned_both")}
    return {"methods": rows, "total": total}


def render(got: dict, names: tuple[str, str], quality: tuple[dict, dict] | None = None) -> str:
    a, b = names
    t = got["total"]
    lines = [f"# Readability: {a} vs {b}", ""]
    if quality:
        fields = ("explained_variance", "l0", "dead_fraction", "ce_loss_recovered", "train_time_s")
        lines += [
            "| SAE | explained variance | L0 | dead latents (share) | CE loss recovered | train time (s) |",
            "|---|---:|---:|---:|---:|---:|",
            *(f"| {n} | " + " | ".join(_num(q.get(f)) for f in fields) + " |" for n, q in zip(names, quality)),
            "",
        ]
    lines += [
        f"On the {t['concepts']} (method, concept) cells both read: aligned (alignment CI above 0) {t['aligned_a']} "
        f"with {a}, {t['aligned_b']} with {b}, {t['aligned_both']} with both.",
        "",
        f"| method | concepts | aligned {a} | aligned {b} | both | mean alignment {a} | mean alignment {b} "
        f"| {b} higher on |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, r in got["methods"].items():
        lines.append(
            f"| {method} | {r['concepts']} | {r['aligned_a']} | {r['aligned_b']} | {r['aligned_both']} | "
            f"{r['mean_diff_a']:+.3f} | {r['mean_diff_b']:+.3f} | {r['b_higher']}/{r['concepts']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("boards", type=Path, nargs=2, help="two leaderboard.json files (or readability JSONs)")
    parser.add_argument("--names", nargs=2, default=["a", "b"])
    parser.add_argument("--quality", type=Path, nargs=2, help="the two SAEs' quality.json")
    parser.add_argument("--out", type=Path, required=True, help="markdown page (its .json beside it)")
    args = parser.parse_args(argv)
    tables = []
    for path in args.boards:
        if not path.exists():
            raise SystemExit(f"No {path}: pass a board's leaderboard.json (run `saebasis leaderboard` first).")
        blob = json.loads(path.read_text())
        tables.append(blob.get("readability", blob))
    got = compare(*tables)
    quality = tuple(json.loads(p.read_text()) for p in args.quality) if args.quality else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(got, tuple(args.names), quality))
    args.out.with_suffix(".json").write_text(json.dumps({"names": args.names, **got, "quality": quality}, indent=1))
    print(f"[saebasis] readability compared -> {args.out} (+ .json)")
    return got


if __name__ == "__main__":
    main()
