"""The pre-registered readings (a)-(c) of docs/results/sae-basis-preregistration.md, measured on a finished board.

    python scripts/preregistered_readings.py outputs/leaderboard/full-2025 --out docs/results/full-2025-readings.md

Reads the board's out_dir (concepts/*/results.json and leaderboard.json; nothing is generated or judged) and writes a
markdown page and its JSON beside it:
  (a) selection: the ratio of the 14-concept means of the concept judge's column, `selected / contrast` (default
      sae_latent_output / sae_latent), with a paired bootstrap CI over concepts; met when the ratio is >= 1.5;
  (b) score: per SAE-basis row (the rows the board's readability table reads: the intervention contract's
      `uses_sae`, never a name), its paired difference with the board's leader (not resolved below: the CI's upper
      end >= 0, or it is the leader) and with each of `baselines` (default diffmean_last and caa; resolved above:
      the CI's lower end > 0); met when one row passes all three;
  (c) reading: for the rows that pass (b), on how many concepts their seed-0 top-10 latents are aligned with the
      concept (the readability alignment's CI above 0); met when one of them reaches `min_aligned` (default 7).
Every row's figures are reported whatever the outcome, so a reading that is not met shows by how much. Rows added
after the run started (`added`, default sae_latent_contrast_output) are reported beside the registered ones -- their
ratio to `contrast`, their row of the table, marked -- and count in no reading: the leader is the registered rows'.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from saebasis.eval.board import overall, paired_difference, paired_ratio
from saebasis.experiments.leaderboard import finished_concepts
from saebasis.interpret.readability import resolved


def aligned(readability: dict, method: str) -> tuple[int, int, list[str]]:
    """(concepts where the method's top latents are aligned with CI above 0, concepts read, the aligned ones)."""
    read = {c: r[method] for c, r in readability.items() if method in r}
    hits = [c for c, r in read.items() if resolved(r) == "+"]
    return len(hits), len(read), hits


def readings(
    results: dict[str, dict],
    readability: dict[str, dict],
    selected: str = "sae_latent_output",
    contrast: str = "sae_latent",
    baselines: tuple[str, ...] = ("diffmean_last", "caa"),
    ratio_needed: float = 1.5,
    min_aligned: int = 7,
    added: tuple[str, ...] = (),
) -> dict:
    """The three readings from a board's per-concept results ({concept: results.json}) and its readability table
    ({concept: {method: readability}}); `added` rows are reported and never counted."""
    on_board = {m for b in results.values() for m in b["results"]}
    missing = [m for m in (selected, contrast, *baselines) if m not in on_board]
    if missing:
        raise ValueError(
            f"the board has no row for {missing}: the readings need {selected}, {contrast} and {baselines}."
        )
    ratio = paired_ratio(results, selected, contrast)
    registered = {
        c: {**b, "results": {m: r for m, r in b["results"].items() if m not in added}} for c, b in results.items()
    }
    leader = overall(registered)[0]["method"]
    present = [m for m in added if m in on_board]
    sae_rows = sorted({m for by_method in readability.values() for m in by_method})
    rows = []
    for method in sae_rows:
        vs_leader = None if method == leader else paired_difference(results, method, leader)
        vs = {b: paired_difference(results, method, b) for b in baselines}
        not_below = vs_leader is None or vs_leader["ci_high"] >= 0
        above = {b: d is not None and d["ci_low"] > 0 for b, d in vs.items()}
        hits, read, where = aligned(readability, method)
        rows.append(
            {
                "method": method,
                "vs_leader": vs_leader,
                "not_below_leader": not_below,
                "vs_baselines": vs,
                "above_baselines": above,
                "passes_b": not_below and all(above.values()),
                "aligned": hits,
                "read": read,
                "aligned_concepts": where,
                "added": method in added,
            }
        )
    passing = [r for r in rows if r["passes_b"] and not r["added"]]
    return {
        "concepts": len(results),
        "leader": leader,
        "a": {**ratio, "needed": ratio_needed, "met": ratio["ratio"] >= ratio_needed},
        "added": {m: paired_ratio(results, m, contrast) for m in present},
        "b": {"met": bool(passing), "passing": [r["method"] for r in passing]},
        "c": {
            "met": any(r["aligned"] >= min_aligned for r in passing),
            "needed": min_aligned,
            "best_of_passing": max((r["aligned"] for r in passing), default=None),
        },
        "rows": rows,
    }


def ci(d: dict | None) -> str:
    return "-" if d is None else f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def render(got: dict) -> str:
    a, b, c = got["a"], got["b"], got["c"]
    met = {True: "**met**", False: "**not met**"}
    baselines = list(got["rows"][0]["vs_baselines"]) if got["rows"] else []
    lines = [
        f"On {got['concepts']} concepts; the board's leader (best mean rank): `{got['leader']}`.",
        "",
        f"- (a) selection: {met[a['met']]}. Mean concept-judge score `{a['a']}` {a['mean_a']:.3f} / `{a['b']}` "
        f"{a['mean_b']:.3f} = {a['ratio']:.2f}x (95% paired bootstrap CI over concepts {a['ci_low']:.2f}-"
        f"{a['ci_high']:.2f}x; needed >= {a['needed']}x).",
        *(
            f"  - added after the run started, not a reading: `{m}` / `{r['b']}` = {r['ratio']:.2f}x "
            f"(CI {r['ci_low']:.2f}-{r['ci_high']:.2f}x, {r['concepts']} concepts)"
            for m, r in got["added"].items()
        ),
        f"- (b) score: {met[b['met']]}. SAE-basis rows not resolved below the leader and resolved above "
        f"{' and '.join(f'`{x}`' for x in baselines)}: {', '.join(f'`{m}`' for m in b['passing']) or 'none'}.",
        f"- (c) reading: {met[c['met']]}. "
        + (
            f"Best of the rows passing (b): aligned on {c['best_of_passing']} of {got['concepts']} concepts "
            f"(needed >= {c['needed']})."
            if b["passing"]
            else f"No row passes (b); each SAE-basis row's count is in the table (needed >= {c['needed']})."
        ),
        "",
        "| SAE-basis row | minus the leader [95% CI] | "
        + " | ".join(f"minus {x} [95% CI]" for x in baselines)
        + " | passes (b) | aligned concepts (CI > 0) |",
        "|---|---|" + "---|" * len(baselines) + "---|---|",
    ]
    for r in got["rows"]:
        lead = "is the leader" if r["vs_leader"] is None else ci(r["vs_leader"])
        lines.append(
            f"| {r['method']}{' (added, not counted)' if r['added'] else ''} | {lead} | "
            + " | ".join(ci(r["vs_baselines"][x]) for x in baselines)
            + f" | {'yes' if r['passes_b'] else 'no'} | {r['aligned']} / {r['read']}"
            + (f" ({', '.join(r['aligned_concepts'])})" if r["aligned_concepts"] else "")
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "board", type=Path, help="the leaderboard's out_dir (concepts/*/results.json, leaderboard.json)"
    )
    parser.add_argument("--out", type=Path, help="markdown page to write (its .json beside it); printed if absent")
    parser.add_argument("--selected", default="sae_latent_output")
    parser.add_argument("--contrast", default="sae_latent")
    parser.add_argument("--baselines", nargs="+", default=["diffmean_last", "caa"])
    parser.add_argument(
        "--added", nargs="*", default=["sae_latent_contrast_output"], help="rows added after the run started"
    )
    args = parser.parse_args(argv)
    page = args.board / "leaderboard.json"
    if not page.exists():
        raise SystemExit(f"No leaderboard.json in {args.board}: pass a board's out_dir (run `saebasis leaderboard`).")
    results, left = finished_concepts(args.board)
    if left:
        print(f"[saebasis] concepts not finished, left out: {left}")
    got = readings(
        results,
        json.loads(page.read_text()).get("readability") or {},
        args.selected,
        args.contrast,
        tuple(args.baselines),
        added=tuple(args.added),
    )
    text = render(got)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(got, indent=1))
        print(f"[saebasis] readings -> {args.out} (+ .json)")
    else:
        print(text)
    return got
