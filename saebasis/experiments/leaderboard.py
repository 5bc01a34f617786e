"""`saebasis leaderboard`: every method x every concept, strength chosen on validation, scored on test.

For each concept the leaderboard runs `compare` (saebasis/experiments/compare.py) in-process with the leaderboard's
method set and that concept's own prompting prefix and selection rule (from `configs/experiment/compare_<concept>.yaml`),
sharing one model/SAE stack across all concepts. Resumable: each concept writes `concepts/<name>/results.json`
after every method, and a rerun skips every (concept, method) cell already complete there (trained runs of
each seed are kept in `concepts/<name>/runs/` too), so a killed run continues where it stopped.

Outputs in out_dir: `per_concept.md` (score of every method on every concept), `leaderboard.md` / `.html` /
`.json` (overall: mean score, mean rank, wins, 95% CI by a bootstrap over concepts then test instructions), and
`heatmap.png` (methods x concepts), `tradeoff.png` (mean score vs SAE latents changed per token, KL as colour), and
paired differences (the leader against every method and the configured `contrasts`, paired by test instruction, with
a bootstrap CI: which orderings are resolved). Concepts with a second judge report the two judges' Spearman agreement and
flag a disagreement on the winner. Every trained SAE-basis method is also read on every concept (readability=true):
coverage and concept alignment of its seed-0 run (saebasis/interpret/readability.py), a methods x concepts table.
`make_only=true` trains / fits every cell and reads the SAE-basis runs without generating (e.g. the readability
table on every concept first, or the training on a GPU); the board's next run in the same out_dir reuses those runs.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path

from tqdm.auto import tqdm

from saebasis.config import compose, setup_env, to_dict
from saebasis.eval.board import (ab_matching, contrasts, costs, families, judge_notes, overall, per_concept_scores, resolved,
                                 tradeoff_points)
from saebasis.interpret.readability import concept_table, read_runs


def concept_cfg(cfg: dict, concept: str) -> dict:
    """The compare config of one concept: its experiment (prompting prefix, select_by), the leaderboard's
    methods and budget on top."""
    from saebasis.experiments.compare import concept_experiment
    from saebasis.data import load_concept

    name = Path(concept).name
    overrides = concept_experiment(concept)
    base = to_dict(compose("compare", overrides))
    prompting = base["methods"].get("prompting") if overrides else {
        "kind": "prompt", "prefix": f"In your answer, show {load_concept(concept).description}. "}  # a user's own concept folder
    methods = {k: dict(v) for k, v in cfg["methods"].items() if v is not None}  # a preset drops a method with null
    if "prompting" in methods and prompting:
        methods["prompting"] = prompting
    keep = {k: cfg[k] for k in ("model", "sae", "hook", "stack_overrides", "seeds", "n_val", "n_test", "n_neutral", "max_new_tokens",
                                "batch_size", "strength_search", "autocast") if cfg.get(k) is not None}
    return {**base, **keep, "methods": methods, "data": concept, "out_dir": str(Path(cfg["out_dir"]) / "concepts" / name),
            "logger": {"mode": "disabled"}, "resume": True}


def leaderboard(cfg) -> dict:
    from saebasis.experiments.compare import compare
    from saebasis.data import load_concept
    from saebasis.core.stack import load_stack

    setup_env()
    cfg = to_dict(cfg)
    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    concepts = list(cfg["concepts"])
    for name in concepts:  # every concept loads (and validates) before any heavy work
        load_concept(name)
    unknown = sorted({m for pair in cfg.get("contrasts") or [] for m in pair} - set(cfg["methods"]))
    if unknown:  # a typo loses a table row, not results: said up front, the board runs
        print(f"[saebasis leaderboard] contrasts name methods this board does not have: {unknown} (known: "
              f"{sorted(cfg['methods'])}); those pairs are left out -- fix the names in contrasts", flush=True)
    stack = load_stack(cfg)  # the leaderboard's model and SAE, shared by every concept and method
    start = time.time()
    results: dict[str, dict] = {}
    readable: dict[str, dict] = {}
    bar = tqdm(concepts, desc="leaderboard concepts", unit="concept", bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    worked: list[float] = []  # wall seconds of the concepts this run computed (a resumed, finished one takes seconds)
    pending = [not judged(out, c) for c in concepts]  # read once: only the concept being run changes during the run
    for i, name in enumerate(bar):
        ccfg = concept_cfg(cfg, name)
        bar.set_postfix_str(f"{Path(name).name}; {time_left(worked, sum(pending[i:]))}")
        t0 = time.time()
        if cfg.get("make_only"):  # train / fit every cell, no generation: a later full run reuses the runs
            make_cells(ccfg, stack, load_concept(name))
        else:
            compare(ccfg, stack=stack, concept=load_concept(name))
            results[Path(name).name] = json.loads((Path(ccfg["out_dir"]) / "results.json").read_text())
        if cfg["readability"]:  # coverage / alignment of every trained SAE-basis method on this concept
            readable[Path(name).name] = read_runs(Path(ccfg["out_dir"]) / "runs", out, cfg["readability_overrides"])
        write(out, results, time.time() - start, readable=readable, pairs=cfg.get("contrasts"))
        if pending[i]:
            worked.append(time.time() - t0)
        print(f"[saebasis leaderboard] {Path(name).name}: {(time.time() - t0) / 60:.1f} min ({i + 1}/{len(concepts)}); "
              f"{time_left(worked, sum(pending[i + 1 :]))}", flush=True)
    paths = write(out, results, time.time() - start, final=True, readable=readable, pairs=cfg.get("contrasts"))
    print((out / "leaderboard.md").read_text())
    print(f"[saebasis leaderboard] {len(concepts)} concepts in {(time.time() - start) / 60:.1f} min -> {out}")
    return {"out_dir": str(out), **paths}


def judged(out: Path, concept: str) -> bool:
    """The concept's results.json in the board `out` is complete already (a resume will skip its cells)."""
    path = out / "concepts" / Path(concept).name / "results.json"
    try:
        return bool(json.loads(path.read_text()).get("complete")) if path.exists() else False
    except (json.JSONDecodeError, OSError):
        return False


def finished_concepts(out: Path, order: list[str] = ()) -> tuple[dict[str, dict], list[str]]:
    """A board's complete concepts ({name: its results.json}, in `order`, then any others found) and the names of the
    concept folders that are not finished (no results.json, or not complete): what a page is rendered from."""
    found = sorted(d.name for d in (Path(out) / "concepts").glob("*") if d.is_dir())
    results, left = {}, []
    for concept in [c for c in order if c in found] + [c for c in found if c not in order]:
        path = Path(out) / "concepts" / concept / "results.json"
        blob = json.loads(path.read_text()) if path.exists() else {}
        if blob.get("complete"):
            results[concept] = blob
        else:
            left.append(concept)
    return results, left


def time_left(worked: list[float], left: int) -> str:
    """The time estimate of a board: the mean wall time of the concepts this run computed times the concepts left
    to compute. Concepts a resume found finished are counted in neither (they take seconds, not minutes)."""
    if left == 0:
        return "nothing left to compute"
    if not worked:
        return f"{left} concept(s) to compute, no estimate until one has run here"
    per = sum(worked) / len(worked)
    return f"~{per * left / 3600:.1f} h left ({left} concept(s) at {per / 60:.1f} min, the mean of the {len(worked)} computed in this run)"


def make_cells(ccfg: dict, stack, concept) -> None:
    """make_only=true: every trained / fitted (method, seed) of one concept, saved where compare looks for it
    (concepts/<name>/runs/), skipping runs already made with the same composed config; an optional peer whose
    library is missing is skipped with a line. Nothing is generated or judged: the board's later run reuses these."""
    from saebasis.experiments.compare import normalise, obtain, seeds_for

    ccfg = normalise(dict(ccfg))
    out = Path(ccfg["out_dir"])
    for method, spec in ccfg["methods"].items():
        if spec["kind"] not in ("train", "fit"):
            continue  # unsteered / prompting / a saved run: nothing to make
        for seed in seeds_for(spec, ccfg):
            try:
                obtain(method, spec, ccfg, out, stack, concept, seed)
            except ImportError as err:
                if not spec.get("optional"):
                    raise
                print(f"[saebasis leaderboard] {method}: SKIPPED, its environment is missing ({err})", flush=True)
                break


def _f(x) -> str:
    return "–" if x is None or (isinstance(x, float) and x != x) else (f"{x:.3f}" if isinstance(x, float) else str(x))


def markdown(results: dict[str, dict], seconds: float, readable: dict | None = None, pairs: list | None = None,
             paired: list[dict] | None = None, rows: list[dict] | None = None) -> str:
    """leaderboard.md; `paired` = contrasts(results, pairs) when the caller has it already (a bootstrap each)."""
    if not results:  # make_only: runs made and read, nothing generated or judged
        lines = [f"# saebasis leaderboard: runs made, nothing judged yet (make_only, {seconds / 60:.1f} min)", "",
                 "Rerun without make_only=true (same out_dir) to generate and judge; it reuses these runs."]
        return "\n".join(lines + readability_section(readable)) + "\n"
    rows = overall(results) if rows is None else rows
    concepts = list(results)
    lines = [f"# saebasis leaderboard ({len(concepts)} concepts, {seconds / 60:.1f} min)", "",
             "| method | mean score | 95% CI (concepts, then instructions) | mean rank | wins | strength on an edge |",
             "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        partial = "" if r["complete"] else f" (only {r['concepts']} concepts)"
        lines.append(f"| {r['method']} | {_f(r['mean_score'])} | {_f(r['ci_low'])}-{_f(r['ci_high'])} | {r['mean_rank']:.2f} | "
                     f"{r['wins']} | {r['edges']}{partial} |")
    lines += ["", "## Per concept (test score at the val-chosen strength; \u2020 = still on a grid edge)", "",
              "| method | " + " | ".join(concepts) + " |", "|---|" + "---:|" * len(concepts)]
    for r in rows:
        cells = []
        for c in concepts:
            res = results[c]["results"].get(r["method"])
            cells.append("–" if res is None else _f(res["row"]["score"]) + ("\u2020" if res["row"].get("on_edge") else ""))
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    fams = families(results)
    if len(fams) > 1:
        names = list(fams)
        lines += ["", "## By concept family (mean test score over the family's concepts; **bold** = best in the family)", "",
                  "| method | " + " | ".join(f"{f} ({len(fams[f]['concepts'])})" for f in names) + " |", "|---|" + "---:|" * len(names)]
        best = {f: max(fams[f]["scores"].values()) for f in names if fams[f]["scores"]}
        for r in rows:
            cells = []
            for f in names:
                v = fams[f]["scores"].get(r["method"])
                cells.append("–" if v is None else (f"**{_f(v)}**" if v == best.get(f) else _f(v)))
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    cost = costs(results)
    if cost:
        lines += ["", "## What the score is made of, and what each method changes (means over concepts, chosen strength)", "",
                  "concept / instruction / fluency: the three judges the score is the harmonic mean of; KL: per-token "
                  "KL(steered || base) on neutral prompts (– for prompting: its prompt differs); latents: SAE latents "
                  "changed per token at the hook (– for prompting too); params: trainable / fitted numbers.", "",
                  "| method | concept | instruction | fluency | KL on neutral | latents changed / token | params |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            c = cost.get(r["method"], {})
            params, l0 = c.get("params"), c.get("latent_l0")
            lines.append(f"| {r['method']} | {_f(c.get('concept'))} | {_f(c.get('instruction'))} | {_f(c.get('fluency'))} | "
                         f"{_f(c.get('kl_neutral'))} | {'–' if l0 is None else format(l0, '.1f')} | "
                         f"{'–' if params is None else format(params, ',.0f')} |")
    paired = contrasts(results, pairs) if paired is None else paired
    if paired:
        lines += ["", "## Paired differences (is an ordering resolved?)", "",
                  "a minus b, paired by test instruction on the concepts both ran: mean over concepts, 95% CI by a bootstrap "
                  "over concepts then instructions (**bold** = the CI excludes 0), and on how many concepts a scored higher. "
                  "First the leader against every other method, then the configured contrasts. Each CI is 95% on its own "
                  "and the leader is picked on the same data: with this many comparisons about one in twenty may exclude 0 "
                  "by chance.", "",
                  "| a | b | a - b | 95% CI | a higher on |", "|---|---|---:|---|---:|"]
        for d in paired:
            diff = f"{d['diff']:+.3f}"
            lines.append(f"| {d['a']} | {d['b']} | {f'**{diff}**' if resolved(d) else diff} | "
                         f"{d['ci_low']:+.3f} to {d['ci_high']:+.3f} | {d['a_higher']}/{d['concepts']} |")
    skipped = sorted({m for blob in results.values() for m in (blob.get("config") or {}).get("skipped", {})})
    if skipped:
        lines += ["", f"Skipped (environment missing here; scripts/setup_peers.sh and scripts/setup_pyreft.sh set them up): {', '.join(skipped)}."]
    ab = ab_matching(results)
    if ab:
        names = list(ab)
        lines += ["", "## A/B matching (concepts with A/B items: the behaviour measured directly)", "",
                  "Probability of the concept's option on the test A/B items, at the strength chosen for the score "
                  "(select_by=ab would choose by this instead); the unsteered row is the baseline.", "",
                  "| method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
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
    return ["", "## Can the SAE-basis methods be read? (seed-0 runs, held-out corpus)", "",
            "Each cell: coverage (of the 10 latents the method changed most, how many have >= 5 contexts), concept "
            "alignment (the concept's judge on those latents' contexts minus on 10 random alive latents; * = its 95% CI "
            "excludes 0). Per-run reports: concepts/<concept>/runs/<method>-seed0/interpret/report.html.", "", table]


def write(out: Path, results: dict[str, dict], seconds: float, final: bool = False, readable: dict | None = None,
          pairs: list | None = None) -> dict:
    rows = overall(results)  # one bootstrap per method, shared by the page, the JSON and the plots
    paired = contrasts(results, pairs, rows=rows)
    text = markdown(results, seconds, readable, paired=paired, rows=rows)
    (out / "leaderboard.md").write_text(text)
    blob = {"overall": rows, "per_concept": per_concept_scores(results), "families": families(results),
            "costs": costs(results), "ab_matching": ab_matching(results), "contrasts": paired, "readability": readable or {},
            "seconds": seconds, "complete": final}
    (out / "leaderboard.json").write_text(json.dumps(blob, indent=2, default=str))
    (out / "leaderboard.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>saebasis leaderboard</title><body><pre>" + html.escape(text) + "</pre>"
        + ("<img src='heatmap.png' alt='heat map'><img src='tradeoff.png' alt='score vs latents changed'>" if final else "")
        + "</body>")
    paths = {"md": str(out / "leaderboard.md"), "json": str(out / "leaderboard.json"), "html": str(out / "leaderboard.html")}
    if final and results:
        paths["heatmap"] = heatmap(out, results, rows)
        paths["tradeoff"] = tradeoff(out, results, rows) or None
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
    sc = ax.scatter([p["latents"] for p in points], [p["score"] for p in points], c=[p["kl"] for p in points],
                    cmap="magma_r", s=60, edgecolors="black", linewidths=0.5, vmin=0)
    placed: list[tuple[float, float, str]] = []
    for p in points:
        same = next((q for q in placed if math.isclose(q[0], p["latents"], rel_tol=1e-3) and math.isclose(q[1], p["score"], abs_tol=1e-3)), None)
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


def _save(fig, path: Path) -> str:
    """Lay out, write (120 dpi) and close a figure; its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
