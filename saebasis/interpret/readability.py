"""Can a compared method be read? Coverage and concept alignment of every SAE-basis run of a comparison.

Used by the demo (REPORT.md, section 4) and the leaderboard (a methods x concepts readability table). For each
seed-0 run folder (`<method>-seed0` of a trained method, `<method>` of a fitted one) whose method reads or writes
SAE latents (the intervention contract's `uses_sae`, never its name), `saebasis interpret` writes its report
(skipped when the report is already there, so a resumed leaderboard does not redo it) and two numbers are read
back from report.json:
  coverage   of the 10 latents the method changed most on the held-out corpus, how many have >= 5 contexts;
  alignment  the concept's own judge on those latents' contexts minus the same judge on 10 random alive
             latents (bootstrap 95% CI), plus the share of top / random latents whose contexts lean positive.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from saebasis.config import compose, override

SEED = re.compile(r"-seed(\d+)$")
"""A trained method's run folder suffix (compare names fitted methods' folders by the method alone)."""


def uses_sae(run_dir: Path) -> bool:
    """Whether the run's method reads or writes SAE latents (the intervention contract says; no method names here)."""
    from saebasis.interventions.base import get
    from saebasis.runs import CFG_FILE, read_json

    return get(read_json(Path(run_dir) / CFG_FILE)["method"]).uses_sae


def readability(report_json: str | Path, out: Path) -> dict:
    """Coverage and concept alignment from an interpretation report.json (its report.html linked relative to `out`)."""
    data = json.loads(Path(report_json).read_text())
    cov, al = data["coverage"], data.get("alignment") or {}
    share = al.get("positive_share") or {}
    return {
        "coverage": f"{cov['covered']}/{cov['of']}",
        "min_contexts": cov["min_contexts"],
        "diff": al.get("diff"),
        "ci95": al.get("ci95"),
        "positive_share": share.get("top"),
        "random_share": share.get("random"),
        "judge": al.get("judge"),
        "report": os.path.relpath(Path(report_json).parent / "report.html", out),
    }


def read_runs(runs_dir: Path, out: Path, overrides: list[str] | tuple = ()) -> dict[str, dict]:
    """{method: readability} for every seed-0 SAE-basis run under runs_dir (`<method>-seed0` folders of trained
    methods, `<method>` folders of fitted ones), interpreting each run once (an interpret/report.json newer than the
    run's weights is reused). `overrides`: extra interpret settings."""
    from saebasis.interpret.report import interpret

    found = {}
    for run_dir in sorted(Path(runs_dir).glob("*")):
        seed = SEED.search(run_dir.name)
        if seed and seed.group(1) != "0":
            continue
        if not (run_dir / "intervention.safetensors").exists() or not uses_sae(run_dir):
            continue
        report = run_dir / "interpret" / "report.json"
        weights = run_dir / "intervention.safetensors"
        if (
            not report.exists() or report.stat().st_mtime < weights.stat().st_mtime
        ):  # none yet, or the run was retrained
            interpret(
                compose("interpret", [override("run", run_dir), override("out_dir", run_dir / "interpret"), *overrides])
            )  # quoted: a concept folder may hold `(`, `<`, spaces
        found[SEED.sub("", run_dir.name)] = readability(report, out)
    return found


def signed(x) -> str:
    return "-" if x is None else f"{x:+.3f}"


def readability_table(readable: dict) -> str:
    """Markdown: one row per method (demo REPORT.md)."""
    lines = [
        "| method | coverage (top-10 with >= 5 contexts) "
        "| concept alignment: top-10 minus 10 random alive latents [95% CI] "
        "| leaning positive: top-10 / random | report |",
        "|---|---:|---:|---:|---|",
    ]
    for name, r in readable.items():
        ci = f" [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]" if r.get("ci95") else ""
        share = "-" if r["positive_share"] is None else f"{r['positive_share']:.0%} / {r['random_share']:.0%}"
        lines.append(f"| {name} | {r['coverage']} | {signed(r['diff'])}{ci} | {share} | [report]({r['report']}) |")
    return "\n".join(lines)


def resolved(r: dict) -> str:
    """'+' / '-' when the alignment CI excludes 0, '' when it does not."""
    ci = r.get("ci95")
    return "" if not ci else ("+" if ci[0] > 0 else "-" if ci[1] < 0 else "")


def concept_table(by_concept: dict[str, dict[str, dict]]) -> str:
    """Markdown: methods x concepts, each cell 'coverage, alignment' (* = the alignment's CI excludes 0)."""
    concepts = [c for c, rows in by_concept.items() if rows]
    methods = sorted({m for rows in by_concept.values() for m in rows})
    if not methods:
        return ""
    lines = ["| method | " + " | ".join(concepts) + " | aligned (CI > 0) |", "|---|" + "---:|" * (len(concepts) + 1)]
    for m in methods:
        cells, up = [], 0
        for c in concepts:
            r = by_concept[c].get(m)
            if r is None:
                cells.append("–")
                continue
            mark = resolved(r)
            up += mark == "+"
            cells.append(f"{r['coverage']}, {signed(r['diff'])}{'*' if mark else ''}")
        n = sum(1 for c in concepts if m in by_concept[c])
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {up}/{n} |")
    return "\n".join(lines)
