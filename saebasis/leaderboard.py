"""`saebasis leaderboard`: every method x every concept, strength chosen on validation, scored on test.

For each concept the leaderboard runs `compare` (saebasis/compare.py) in-process with the leaderboard's
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
import random
import time
from pathlib import Path
from statistics import mean

from tqdm.auto import tqdm

from saebasis.config import compose, setup_env, to_dict
from saebasis.interpret.readability import concept_table, read_runs


def concept_cfg(cfg: dict, concept: str) -> dict:
    """The compare config of one concept: its experiment (prompting prefix, select_by), the leaderboard's
    methods and budget on top."""
    from saebasis.compare import concept_experiment
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
                                "batch_size", "strength_search") if cfg.get(k) is not None}
    return {**base, **keep, "methods": methods, "data": concept, "out_dir": str(Path(cfg["out_dir"]) / "concepts" / name),
            "logger": {"mode": "disabled"}, "resume": True}


def leaderboard(cfg) -> dict:
    from saebasis.compare import compare
    from saebasis.data import load_concept
    from saebasis.stack import load_stack

    setup_env()
    cfg = to_dict(cfg)
    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    concepts = list(cfg["concepts"])
    for name in concepts:  # every concept loads (and validates) before any heavy work
        load_concept(name)
    stack = load_stack(cfg)  # the leaderboard's model and SAE, shared by every concept and method
    start = time.time()
    results: dict[str, dict] = {}
    readable: dict[str, dict] = {}
    bar = tqdm(concepts, desc="leaderboard concepts", unit="concept")
    for name in bar:
        bar.set_postfix(concept=name)
        ccfg = concept_cfg(cfg, name)
        if cfg.get("make_only"):  # train / fit every cell, no generation: a later full run reuses the runs
            make_cells(ccfg, stack, load_concept(name))
        else:
            compare(ccfg, stack=stack, concept=load_concept(name))
            results[Path(name).name] = json.loads((Path(ccfg["out_dir"]) / "results.json").read_text())
        if cfg["readability"]:  # coverage / alignment of every trained SAE-basis method on this concept
            readable[Path(name).name] = read_runs(Path(ccfg["out_dir"]) / "runs", out, cfg["readability_overrides"])
        write(out, results, time.time() - start, readable=readable, pairs=cfg.get("contrasts"))
    paths = write(out, results, time.time() - start, final=True, readable=readable, pairs=cfg.get("contrasts"))
    print((out / "leaderboard.md").read_text())
    print(f"[saebasis leaderboard] {len(concepts)} concepts in {(time.time() - start) / 60:.1f} min -> {out}")
    return {"out_dir": str(out), **paths}


def make_cells(ccfg: dict, stack, concept) -> None:
    """make_only=true: every trained / fitted (method, seed) of one concept, saved where compare looks for it
    (concepts/<name>/runs/), skipping runs already made with the same composed config; an optional peer whose
    library is missing is skipped with a line. Nothing is generated or judged: the board's later run reuses these."""
    from saebasis.compare import normalise, obtain, seeds_for

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


# -- aggregation ---------------------------------------------------------------------------------------
def per_concept_scores(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """{method: {concept: test score}}."""
    table: dict[str, dict[str, float]] = {}
    for concept, blob in results.items():
        for method, res in blob["results"].items():
            table.setdefault(method, {})[concept] = res["row"]["score"]
    return table


def ranks(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """{method: {concept: rank}} (1 = best; ties share the mean rank)."""
    out: dict[str, dict[str, float]] = {m: {} for m in table}
    concepts = sorted({c for row in table.values() for c in row})
    for c in concepts:
        scores = sorted(((row[c], m) for m, row in table.items() if c in row), reverse=True)
        i = 0
        while i < len(scores):
            j = i
            while j + 1 < len(scores) and scores[j + 1][0] == scores[i][0]:
                j += 1
            for k in range(i, j + 1):
                out[scores[k][1]][c] = (i + j) / 2 + 1
            i = j + 1
    return out


def concept_bootstrap_ci(per_concept: dict[str, list[float]], n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% CI of the mean over concepts of each concept's mean: resample concepts, then examples within each."""
    groups = [g for g in per_concept.values() if g]
    if not groups:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    means = []
    for _ in range(n_boot):
        drawn = [groups[rng.randrange(len(groups))] for _ in groups]
        means.append(mean(mean(g[rng.randrange(len(g))] for _ in g) for g in drawn))
    means.sort()
    return means[int(0.025 * n_boot)], means[min(n_boot - 1, int(0.975 * n_boot))]


def per_instruction(res: dict) -> list[float]:
    """One cell's test scores per instruction, averaged over seeds (their mean is the cell's score)."""
    seeds = [v for v in res.get("test_scores", {}).values() if v]
    return [mean(v[i] for v in seeds) for i in range(min(map(len, seeds)))] if seeds else []


def paired_difference(results: dict[str, dict], a: str, b: str, n_boot: int = 1000, seed: int = 0) -> dict | None:
    """a minus b on the concepts both ran, paired by test instruction (every method answers the same ones): the mean
    over concepts of the mean per-instruction difference, its 95% CI (bootstrap over concepts, then instructions),
    and on how many concepts a scored higher. None where they share no concept."""
    diffs = {}
    for concept, blob in results.items():
        ra, rb = blob["results"].get(a), blob["results"].get(b)
        if ra is None or rb is None:
            continue
        xa, xb = per_instruction(ra), per_instruction(rb)
        if xa and len(xa) == len(xb):
            diffs[concept] = [u - v for u, v in zip(xa, xb)]
    if not diffs:
        return None
    low, high = concept_bootstrap_ci(diffs, n_boot=n_boot, seed=seed)
    return {"a": a, "b": b, "diff": mean(mean(d) for d in diffs.values()), "ci_low": low, "ci_high": high,
            "a_higher": sum(1 for d in diffs.values() if mean(d) > 0), "concepts": len(diffs)}


def contrasts(results: dict[str, dict], pairs: list | None = None) -> list[dict]:
    """The leader (best mean rank) against every other method, then the configured pairs (leaderboard.yaml
    `contrasts`, e.g. the trained peers against one-latent SAE steering: AxBench's question)."""
    rows = overall(results)
    if not rows:
        return []
    leader = rows[0]["method"]
    wanted = [(leader, r["method"]) for r in rows[1:]] + [tuple(p) for p in (pairs or [])]
    out = []
    for a, b in dict.fromkeys(wanted):
        got = paired_difference(results, a, b)
        if got is not None:
            out.append(got)
    return out


def overall(results: dict[str, dict]) -> list[dict]:
    table = per_concept_scores(results)
    rank = ranks(table)
    n_concepts = len(results)
    rows = []
    for method, scores in table.items():
        examples = {c: [x for xs in results[c]["results"][method].get("test_scores", {}).values() for x in xs] for c in scores}
        low, high = concept_bootstrap_ci(examples)
        rows.append({
            "method": method, "mean_score": mean(scores.values()), "ci_low": low, "ci_high": high,
            "mean_rank": mean(rank[method].values()), "wins": sum(1 for r in rank[method].values() if r == 1),
            "concepts": len(scores), "complete": len(scores) == n_concepts,
            "edges": sum(1 for c in scores if results[c]["results"][method]["row"].get("on_edge")),
        })
    return sorted(rows, key=lambda r: (r["mean_rank"], -r["mean_score"]))


def family_of(concept: str, blob: dict) -> str:
    """The concept's family (concept.yaml `family`), "other" where its folder is gone or names none."""
    from saebasis.data import concept_family

    try:
        return concept_family((blob.get("config") or {}).get("data") or concept)
    except (FileNotFoundError, ValueError):
        return "other"


def families(results: dict[str, dict]) -> dict[str, dict]:
    """{family: {"concepts": [...], "scores": {method: mean test score over the family's concepts it ran on}}}, the
    families in first-seen order."""
    out: dict[str, dict] = {}
    table = per_concept_scores(results)
    for concept, blob in results.items():
        out.setdefault(family_of(concept, blob), {"concepts": [], "scores": {}})["concepts"].append(concept)
    for fam in out.values():
        for method, row in table.items():
            got = [row[c] for c in fam["concepts"] if c in row]
            if got:
                fam["scores"][method] = mean(got)
    return out


COST_FIELDS = ("concept", "instruction", "fluency", "kl_neutral", "latent_l0", "params")


def costs(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """{method: {field: mean over concepts}} of what a method's score is made of and what it changes: the three judges,
    KL to the base model on neutral prompts, SAE latents changed per token, trainable parameters (a field a method
    lacks on every concept -- prompting's KL -- is left out)."""
    out: dict[str, dict[str, float]] = {}
    for blob in results.values():
        for method, res in blob["results"].items():
            for field in COST_FIELDS:
                value = res["row"].get(field)
                if isinstance(value, (int, float)) and value == value:
                    out.setdefault(method, {}).setdefault(field, []).append(float(value))
    return {m: {f: mean(v) for f, v in fields.items()} for m, fields in out.items()}


def judge_notes(results: dict[str, dict]) -> list[str]:
    """Per concept with a second judge: the two judges' Spearman (median over methods) and a flag when they crown
    different winners."""
    from saebasis.judges import winner_disagreement

    notes = []
    for concept, blob in results.items():
        rows = [r["row"] for r in blob["results"].values()]
        rhos = [r["judge_rho"] for r in rows if r.get("judge_rho") is not None and r["judge_rho"] == r["judge_rho"]]
        if not rhos:
            continue
        a = {r["method"]: r["score"] for r in rows if "score2" in r}
        b = {r["method"]: r["score2"] for r in rows if "score2" in r}
        flag = " **the two judges disagree on the winner**" if winner_disagreement(a, b) else " (same winner)"
        notes.append(f"- {concept}: judge agreement, Spearman over responses (median over methods) {sorted(rhos)[len(rhos) // 2]:.2f}{flag}")
    return notes


def _f(x) -> str:
    return "–" if x is None or (isinstance(x, float) and x != x) else (f"{x:.3f}" if isinstance(x, float) else str(x))


def markdown(results: dict[str, dict], seconds: float, readable: dict | None = None, pairs: list | None = None,
             paired: list[dict] | None = None) -> str:
    """leaderboard.md; `paired` = contrasts(results, pairs) when the caller has it already (a bootstrap each)."""
    if not results:  # make_only: runs made and read, nothing generated or judged
        lines = [f"# saebasis leaderboard: runs made, nothing judged yet (make_only, {seconds / 60:.1f} min)", "",
                 "Rerun without make_only=true (same out_dir) to generate and judge; it reuses these runs."]
        return "\n".join(lines + readability_section(readable)) + "\n"
    rows = overall(results)
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
                  "changed per token; params: trainable / fitted numbers.", "",
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
                  "First the leader against every other method, then the configured contrasts.", "",
                  "| a | b | a - b | 95% CI | a higher on |", "|---|---|---:|---|---:|"]
        for d in paired:
            resolved = d["ci_low"] > 0 or d["ci_high"] < 0
            diff = f"{d['diff']:+.3f}"
            lines.append(f"| {d['a']} | {d['b']} | {f'**{diff}**' if resolved else diff} | "
                         f"{d['ci_low']:+.3f} to {d['ci_high']:+.3f} | {d['a_higher']}/{d['concepts']} |")
    skipped = sorted({m for blob in results.values() for m in (blob.get("config") or {}).get("skipped", {})})
    if skipped:
        lines += ["", f"Skipped (environment missing here; scripts/setup_peers.sh and scripts/setup_pyreft.sh set them up): {', '.join(skipped)}."]
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
    paired = contrasts(results, pairs)
    text = markdown(results, seconds, readable, paired=paired)
    (out / "leaderboard.md").write_text(text)
    blob = {"overall": overall(results), "per_concept": per_concept_scores(results), "families": families(results),
            "costs": costs(results), "contrasts": paired, "readability": readable or {},
            "seconds": seconds, "complete": final}
    (out / "leaderboard.json").write_text(json.dumps(blob, indent=2, default=str))
    (out / "leaderboard.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>saebasis leaderboard</title><body><pre>" + html.escape(text) + "</pre>"
        + ("<img src='heatmap.png' alt='heat map'><img src='tradeoff.png' alt='score vs latents changed'>" if final else "")
        + "</body>")
    paths = {"md": str(out / "leaderboard.md"), "json": str(out / "leaderboard.json"), "html": str(out / "leaderboard.html")}
    if final and results:
        paths["heatmap"] = heatmap(out, results)
        paths["tradeoff"] = tradeoff(out, results)
    return paths


def heatmap(out: Path, results: dict[str, dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = overall(results)
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
    fig.tight_layout()
    fig.savefig(out / "heatmap.png", dpi=120)
    plt.close(fig)
    return str(out / "heatmap.png")


def tradeoff_points(results: dict[str, dict]) -> list[dict]:
    """Per method: mean test score, SAE latents changed per token and KL on neutral prompts (means over concepts,
    at the chosen strength; None where a method has none): what the SAE basis trades against score."""
    cost = costs(results)
    return [{"method": r["method"], "score": r["mean_score"], "latents": cost.get(r["method"], {}).get("latent_l0"),
             "kl": cost.get(r["method"], {}).get("kl_neutral")} for r in overall(results)]


def tradeoff(out: Path, results: dict[str, dict]) -> str:
    """tradeoff.png: mean score against latents changed per token (symlog: 0 and 4,096 on one axis), KL as colour.
    A method with no KL on neutral prompts (prompting: its change is the prompt, not the hook) is left out; methods on
    the same point share one label, labels of nearby points are staggered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in tradeoff_points(results) if p["latents"] is not None and p["kl"] is not None]
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
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=120)
    plt.close(fig)
    return str(out / "tradeoff.png")
