"""The leaderboard's pages: leaderboard.md / .json / .html from the concepts' results, the heat map and the trade-off
plot (`saebasis.experiments.leaderboard` runs the board; scripts/publish_board.py re-renders a finished one)."""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from saebasis.eval.board import (
    ab_matching,
    capability,
    contrasts,
    costs,
    families,
    judge_notes,
    overall,
    per_concept_scores,
    resolved,
    timings,
    tradeoff_points,
)
from saebasis.interpret.readability import concept_table


def _f(x) -> str:
    return "–" if x is None or (isinstance(x, float) and x != x) else (f"{x:.3f}" if isinstance(x, float) else str(x))


def markdown(
    results: dict[str, dict],
    seconds: float,
    readable: dict | None = None,
    pairs: list | None = None,
    paired: list[dict] | None = None,
    rows: list[dict] | None = None,
) -> str:
    """leaderboard.md; `paired` = contrasts(results, pairs) when the caller has it already (a bootstrap each)."""
    if not results:  # make_only: runs made and read, nothing generated or judged
        lines = [
            f"# saebasis leaderboard: runs made, nothing judged yet (make_only, {seconds / 60:.1f} min)",
            "",
            "Rerun without make_only=true (same out_dir) to generate and judge; it reuses these runs.",
        ]
        return "\n".join(lines + readability_section(readable)) + "\n"
    rows = overall(results) if rows is None else rows
    concepts = list(results)
    lines = [
        f"# saebasis leaderboard ({len(concepts)} concepts, {seconds / 60:.1f} min)",
        "",
        "| method | mean score | 95% CI (concepts, then instructions) | mean rank | wins | strength on an edge |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        partial = "" if r["complete"] else f" (only {r['concepts']} concepts)"
        lines.append(
            f"| {r['method']} | {_f(r['mean_score'])} | {_f(r['ci_low'])}-{_f(r['ci_high'])} | {r['mean_rank']:.2f} | "
            f"{r['wins']} | {r['edges']}{partial} |"
        )
    lines += [
        "",
        "## Per concept (test score at the val-chosen strength; \u2020 = still on a grid edge)",
        "",
        "| method | " + " | ".join(concepts) + " |",
        "|---|" + "---:|" * len(concepts),
    ]
    for r in rows:
        cells = []
        for c in concepts:
            res = results[c]["results"].get(r["method"])
            cells.append(
                "–" if res is None else _f(res["row"]["score"]) + ("\u2020" if res["row"].get("on_edge") else "")
            )
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    fams = families(results)
    if len(fams) > 1:
        names = list(fams)
        lines += [
            "",
            "## By concept family (mean test score over the family's concepts; **bold** = best in the family)",
            "",
            "| method | " + " | ".join(f"{f} ({len(fams[f]['concepts'])})" for f in names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        best = {f: max(fams[f]["scores"].values()) for f in names if fams[f]["scores"]}
        for r in rows:
            cells = []
            for f in names:
                v = fams[f]["scores"].get(r["method"])
                cells.append("–" if v is None else (f"**{_f(v)}**" if v == best.get(f) else _f(v)))
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    cost = costs(results)
    if cost:
        lines += [
            "",
            "## What the score is made of, and what each method changes (means over concepts, chosen strength)",
            "",
            "concept / instruction / fluency: the three judges the score is the harmonic mean of; KL: per-token "
            "KL(steered || base) on neutral prompts (– for prompting: its prompt differs); latents: SAE latents "
            "changed per token at the hook (– for prompting too); params: trainable / fitted numbers.",
            "",
            "| method | concept | instruction | fluency | KL on neutral | latents changed / token | params |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            c = cost.get(r["method"], {})
            params, l0 = c.get("params"), c.get("latent_l0")
            lines.append(
                f"| {r['method']} | {_f(c.get('concept'))} | {_f(c.get('instruction'))} | {_f(c.get('fluency'))} | "
                f"{_f(c.get('kl_neutral'))} | {'–' if l0 is None else format(l0, '.1f')} | "
                f"{'–' if params is None else format(params, ',.0f')} |"
            )
    kept = capability(results)
    if kept:
        n_items = sorted(
            {res["row"].get("capability_items") for blob in results.values() for res in blob["results"].values()}
            - {None}
        )
        lines += [
            "",
            "## Capability kept (what a steered model still knows)",
            "",
            "Accuracy on saebasis' multiple-choice capability items (saebasis/eval/capability.py; "
            f"{'/'.join(map(str, n_items))} items) at each method's chosen strength, steered / unsteered, first seed; "
            "mean over concepts with a 95% bootstrap CI over concepts. Prompting: its prompt put before each "
            "question. 1.000 = nothing lost.",
            "",
            "| method | mean score | capability kept | 95% CI (concepts) | lowest concept |",
            "|---|---:|---:|---|---|",
        ]
        for r in rows:
            k = kept.get(r["method"])
            if k is None:
                continue
            worst = min(
                (
                    (res["row"]["capability_kept"], c)
                    for c, blob in results.items()
                    if (res := blob["results"].get(r["method"])) and res["row"].get("capability_kept") is not None
                ),
                default=None,
            )
            lines.append(
                f"| {r['method']} | {_f(r['mean_score'])} | {_f(k['kept'])} | {_f(k['ci_low'])}-{_f(k['ci_high'])} | "
                + ("–" if worst is None else f"{worst[1]} {worst[0]:.3f}")
                + " |"
            )
    times = timings(results)
    if times:
        lines += [
            "",
            "## Time per cell (wall seconds, means over concepts)",
            "",
            "make: one seed's train / fit time (a fitted method's one-off work, e.g. sae_targeted's effect "
            "approximator, falls in the first concept that needed it); cell: all the cell did (every seed made, the "
            "strength search, test generation, judges, KL, capability kept). Wall times on the machine and worker "
            "setup the board ran on: compare rows of one board, not machines.",
            "",
            "| method | make (s) | cell (s) |",
            "|---|---:|---:|",
        ]
        for r in rows:
            t = times.get(r["method"], {})
            lines.append(
                f"| {r['method']} | "
                + " | ".join("–" if t.get(k) is None else f"{t[k]:.1f}" for k in ("make_s", "cell_s"))
                + " |"
            )
    paired = contrasts(results, pairs) if paired is None else paired
    if paired:
        lines += [
            "",
            "## Paired differences (is an ordering resolved?)",
            "",
            "a minus b, paired by test instruction on the concepts both ran: mean over concepts, 95% CI by a bootstrap "
            "over concepts then instructions (**bold** = the CI excludes 0), and on how many concepts a scored higher. "
            "First the leader against every other method, then the configured contrasts. Each CI is 95% on its own "
            "and the leader is picked on the same data: with this many comparisons about one in twenty may exclude 0 "
            "by chance.",
            "",
            "| a | b | a - b | 95% CI | a higher on |",
            "|---|---|---:|---|---:|",
        ]
        for d in paired:
            diff = f"{d['diff']:+.3f}"
            lines.append(
                f"| {d['a']} | {d['b']} | {f'**{diff}**' if resolved(d) else diff} | "
                f"{d['ci_low']:+.3f} to {d['ci_high']:+.3f} | {d['a_higher']}/{d['concepts']} |"
            )
    skipped = sorted({m for blob in results.values() for m in (blob.get("config") or {}).get("skipped", {})})
    if skipped:
        lines += [
            "",
            "Skipped (environment missing here; scripts/setup_peers.sh and scripts/setup_pyreft.sh set them up): "
            f"{', '.join(skipped)}.",
        ]
    ab = ab_matching(results)
    if ab:
        names = list(ab)
        lines += [
            "",
            "## A/B matching (concepts with A/B items: the behaviour measured directly)",
            "",
            "Probability of the concept's option on the test A/B items, at the strength chosen for the score "
            "(select_by=ab would choose by this instead); the unsteered row is the baseline.",
            "",
            "| method | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for r in rows:
            lines.append(f"| {r['method']} | " + " | ".join(_f(ab[c].get(r["method"])) for c in names) + " |")
    notes = judge_notes(results)
    if notes:
        lines += ["", "## Judge agreement", "", *notes]
    return "\n".join(lines + readability_section(readable)) + "\n"


def readability_section(readable: dict | None) -> list[str]:
    table = concept_table(readable or {})
    if not table:
        return []
    return [
        "",
        "## Can the SAE-basis methods be read? (seed-0 runs, held-out corpus)",
        "",
        "Each cell: coverage (of the 10 latents the method changed most, how many have >= 5 contexts), concept "
        "alignment (the concept's judge on those latents' contexts minus on 10 random alive latents; * = its 95% CI "
        "excludes 0). Per-run reports: concepts/<concept>/runs/<method>-seed0/interpret/report.html (a fitted "
        "method: runs/<method>/interpret/report.html).",
        "",
        table,
    ]


def write(
    out: Path,
    results: dict[str, dict],
    seconds: float,
    final: bool = False,
    readable: dict | None = None,
    pairs: list | None = None,
    complete: bool | None = None,
) -> dict:
    """The board's pages (each file replaced in one rename); final: the plots too. `complete` (default: final) is
    recorded in leaderboard.json: every concept of the board is in it."""
    rows = overall(results)  # one bootstrap per method, shared by the page, the JSON and the plots
    paired = contrasts(results, pairs, rows=rows)
    text = markdown(results, seconds, readable, paired=paired, rows=rows)
    _replace(out / "leaderboard.md", text)
    blob = {
        "overall": rows,
        "per_concept": per_concept_scores(results),
        "families": families(results),
        "costs": costs(results),
        "ab_matching": ab_matching(results),
        "capability": capability(results),
        "timings": timings(results),
        "contrasts": paired,
        "readability": readable or {},
        "seconds": seconds,
        "complete": final if complete is None else complete,
    }
    _replace(out / "leaderboard.json", json.dumps(blob, indent=2, default=str))
    _replace(
        out / "leaderboard.html",
        "<!doctype html><meta charset='utf-8'><title>saebasis leaderboard</title><body><pre>"
        + html.escape(text)
        + "</pre>"
        + (
            "<img src='heatmap.png' alt='heat map'><img src='tradeoff.png' alt='score vs latents changed'>"
            if final
            else ""
        )
        + "</body>",
    )
    paths = {
        "md": str(out / "leaderboard.md"),
        "json": str(out / "leaderboard.json"),
        "html": str(out / "leaderboard.html"),
    }
    if final and results:
        paths["heatmap"] = heatmap(out, results, rows)
        paths["tradeoff"] = tradeoff(out, results, rows) or None
        paths["capability"] = capability_plot(out, results, rows) or None
    return paths


def heatmap(out: Path, results: dict[str, dict], rows: list[dict] | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = overall(results) if rows is None else rows
    concepts = list(results)
    table = per_concept_scores(results)
    data = [[table[r["method"]].get(c, math.nan) for c in concepts] for r in rows]
    fig, ax = plt.subplots(figsize=(1.1 * len(concepts) + 3, 0.45 * len(rows) + 1.5))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(concepts)), concepts, rotation=40, ha="right")
    ax.set_yticks(range(len(rows)), [r["method"] for r in rows])
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            if v == v:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="test score (harmonic mean)")
    ax.set_title("saebasis leaderboard: methods (best mean rank first) x concepts")
    return _save(fig, out / "heatmap.png")


def tradeoff(out: Path, results: dict[str, dict], rows: list[dict] | None = None) -> str:
    """tradeoff.png: mean score against latents changed per token (symlog: 0 and 4,096 on one axis), KL as colour.
    A method without latents changed or without KL on neutral prompts (prompting: its change is the prompt, not the
    hook) is left out; methods on the same point share one label, labels of nearby points are staggered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in tradeoff_points(results, rows) if p["latents"] is not None and p["kl"] is not None]
    if not points:
        return ""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sc = ax.scatter(
        [p["latents"] for p in points],
        [p["score"] for p in points],
        c=[p["kl"] for p in points],
        cmap="magma_r",
        s=60,
        edgecolors="black",
        linewidths=0.5,
        vmin=0,
    )
    placed: list[tuple[float, float, str]] = []
    for p in points:
        same = next(
            (
                q
                for q in placed
                if math.isclose(q[0], p["latents"], rel_tol=1e-3) and math.isclose(q[1], p["score"], abs_tol=1e-3)
            ),
            None,
        )
        if same:
            placed[placed.index(same)] = (same[0], same[1], f"{same[2]} = {p['method']}")
            continue
        placed.append((p["latents"], p["score"], p["method"]))
    offsets = [(5, 3, "left"), (5, -10, "left"), (-5, 3, "right"), (-5, -10, "right")]
    for i, (x, y, label) in enumerate(placed):
        near = sum(1 for (x2, y2, _) in placed[:i] if abs(y2 - y) < 0.015 and max(x, x2, 1) / max(min(x, x2), 1) < 3)
        dx, dy, ha = offsets[near % len(offsets)]
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, fontsize=7)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(right=max([p["latents"] for p in points] + [1]) * 8)  # room for the right-most label
    ax.set_xlabel("SAE latents changed per token (mean over concepts; symlog)")
    ax.set_ylabel("mean test score")
    fig.colorbar(sc, ax=ax, label="KL(steered || base) on neutral prompts")
    ax.set_title("What a method changes vs how well it steers")
    return _save(fig, out / "tradeoff.png")


def capability_plot(out: Path, results: dict[str, dict], rows: list[dict] | None = None) -> str:
    """capability.png: mean score against capability kept (means over concepts, chosen strength), CI bars over
    concepts; '' when no method was measured (compare's capability off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept = capability(results)
    points = [(p, kept[p["method"]]) for p in tradeoff_points(results, rows) if p["method"] in kept]
    if not points:
        return ""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    labels: dict[tuple[float, float], str] = {}  # methods on the same point (e.g. caa = diffmean_last) share a label
    for p, k in points:
        spot = (round(k["kept"], 4), round(p["score"], 4))
        labels[spot] = f"{labels[spot]} = {p['method']}" if spot in labels else p["method"]
    for p, k in points:
        ax.errorbar(
            k["kept"],
            p["score"],
            xerr=[[k["kept"] - k["ci_low"]], [k["ci_high"] - k["kept"]]],
            fmt="o",
            color="black" if p["method"] in ("unsteered", "prompting") else "tab:blue",
            ecolor="0.7",
            capsize=2,
            markersize=5,
        )
        label = labels.pop((round(k["kept"], 4), round(p["score"], 4)), None)
        if label:
            ax.annotate(label, (k["kept"], p["score"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.axvline(1.0, color="0.6", linestyle=":", linewidth=1)
    ax.set_xlabel("capability kept (steered / unsteered accuracy; mean over concepts, 95% CI)")
    ax.set_ylabel("mean test score")
    ax.set_title("How well a method steers vs what the steered model still knows")
    return _save(fig, out / "capability.png")


def _save(fig, path: Path) -> str:
    """Lay out, write (120 dpi) and close a figure; its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _replace(path: Path, text: str) -> None:
    """Write a page in one rename: a reader (or a second worker) never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
