"""Rank vs sparsity at matched parameter budgets: validation loss vs parameters per family, and a verdict.

    saebasis train -m experiment=rank_vs_sparsity          # the grid (configs/budget/*, 3 concepts)
    python scripts/rank_vs_sparsity.py multirun/rank_vs_sparsity [--metric val/loss]
    python scripts/rank_vs_sparsity.py multirun/rank_vs_sparsity --judge --metric score   # + steering score

--judge scores every run with the comparison's own protocol and judges (`saebasis compare` per concept, the
concept's experiment file, seed 0, strength searched on validation from the start grid STRENGTHS, test score),
into <root>/judged/<concept>/ (resumable: rerun and finished runs are kept). The plot then shows validation loss
and score against parameters, and `--metric score` gives the verdict on the score (higher is better).

Reads every run under the folder (saebasis.experiments.sweep_summary.collect_runs: overrides + metrics), takes the
family and nominal budget from the `+budget=<family>_<budget>` override, and writes rank_vs_sparsity.{csv,md,png}
beside the runs. A run's size is its trainable parameters (`n_params`), except sae_bias: its zeros are exact
and it folds to one vector, so its size is the latents it writes.

Hypotheses (paired differences of the metric at the same concept and budget, lower is better):
  sparsity: sae_sparse beats sae_lowrank (same basis, sparse vs low rank) and beats residual (the basis helps);
  rank:     sae_lowrank beats residual and sae_sparse (the SAE basis helps through low rank);
  neither:  residual beats both SAE-basis adaptors.
Uncertainty: a 95% bootstrap CI of each mean difference, resampling concepts then budgets (with one concept,
budgets only: say so when reporting).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
from pathlib import Path

from saebasis.experiments.sweep_summary import collect_runs

FAMILIES = ("residual", "sae_lowrank", "sae_sparse", "sae_bias")
HIGHER_IS_BETTER = {"score"}  # every other metric (val/loss) is lower-is-better
STRENGTHS = [0.5, 1, 2]  # compare's start grid for every run (the search extends it until the optimum is interior)
COMPARISONS = {  # name: (worse-if-positive family, better family): difference = metric(a) - metric(b)
    "sae_lowrank - sae_sparse": ("sae_lowrank", "sae_sparse"),
    "residual - sae_sparse": ("residual", "sae_sparse"),
    "residual - sae_lowrank": ("residual", "sae_lowrank"),
    "sae_bias - sae_sparse": ("sae_bias", "sae_sparse"),
}


def load_rows(root: Path, metric: str) -> list[dict]:
    rows, _ = collect_runs(root)
    out = []
    for r in rows:
        budget = str(r.get("+budget") or r.get("budget") or "")
        family = next((f for f in sorted(FAMILIES, key=len, reverse=True) if budget.startswith(f + "_")), None)
        if family is None or metric not in r:
            continue
        size = r.get("latents_written") if family == "sae_bias" else r.get("n_params")
        data = r.get("data") or json.loads((root / r["run"] / "cfg.json").read_text()).get(
            "data", "default"
        )  # one concept: not swept
        out.append(
            {
                "family": family,
                "budget": budget[len(family) + 1 :],
                "concept": Path(str(data)).name,
                "data": str(data),
                "seed": r.get("seed", 0),
                "size": size,
                metric: r[metric],
                "latents_read": r.get("latents_read", ""),
                "latents_written": r.get("latents_written", ""),
                "train_time_s": r.get("train_time_s", ""),
                "run": r["run"],
            }
        )
    return out


def paired(rows: list[dict], a: str, b: str, metric: str) -> dict[str, list[float]]:
    """concept -> differences at each budget both families ran (seeds averaged), signed so that positive means
    b is better: metric(a) - metric(b) for a loss, metric(b) - metric(a) for a score."""

    def mean_at(fam, concept, budget):
        vals = [r[metric] for r in rows if (r["family"], r["concept"], r["budget"]) == (fam, concept, budget)]
        return statistics.fmean(vals) if vals else None

    out: dict[str, list[float]] = {}
    for concept in sorted({r["concept"] for r in rows}):
        for budget in sorted({r["budget"] for r in rows}):
            x, y = mean_at(a, concept, budget), mean_at(b, concept, budget)
            if x is not None and y is not None:  # positive: b is better
                out.setdefault(concept, []).append(y - x if metric in HIGHER_IS_BETTER else x - y)
    return out


def bootstrap(diffs: dict[str, list[float]], n: int = 2000, seed: int = 0) -> tuple[float, float, float, int]:
    """(mean, lo, hi, pairs): mean difference and its 95% CI, resampling concepts, then budgets within each."""
    concepts = [v for v in diffs.values() if v]
    if not concepts:
        return float("nan"), float("nan"), float("nan"), 0
    mean = statistics.fmean(statistics.fmean(v) for v in concepts)
    rng, stats = random.Random(seed), []
    for _ in range(n):
        picked = [concepts[rng.randrange(len(concepts))] for _ in concepts]
        stats.append(statistics.fmean(statistics.fmean(rng.choices(v, k=len(v))) for v in picked))
    stats.sort()
    return mean, stats[int(0.025 * n)], stats[int(0.975 * n) - 1], sum(len(v) for v in concepts)


def verdict(ci: dict[str, tuple]) -> str:
    def wins(name):  # the second family is better, CI above 0
        return ci[name][3] > 0 and ci[name][1] > 0

    def loses(name):
        return ci[name][3] > 0 and ci[name][2] < 0

    if wins("sae_lowrank - sae_sparse") and wins("residual - sae_sparse"):
        return (
            "sparsity: in the SAE basis, sparse beats low rank at matched parameters, "
            "and beats the residual low-rank adaptor"
        )
    if loses("sae_lowrank - sae_sparse") and wins("residual - sae_lowrank"):
        return "rank: the dense low-rank SAE-basis adaptor beats both the sparse one and the residual one"
    if loses("residual - sae_sparse") and loses("residual - sae_lowrank"):
        return "neither: the residual low-rank adaptor beats both SAE-basis adaptors"
    return "inconclusive: no hypothesis has every needed difference with a 95% CI that excludes 0"


def plot(path: Path, rows: list[dict], metrics: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concepts = sorted({r["concept"] for r in rows})
    fig, axes = plt.subplots(len(metrics), len(concepts), figsize=(5 * len(concepts), 4 * len(metrics)), squeeze=False)
    for row_axes, metric in zip(axes, metrics):
        for ax, concept in zip(row_axes, concepts):
            for i, fam in enumerate(FAMILIES):
                pts = sorted(
                    (r["size"], r[metric])
                    for r in rows
                    if r["family"] == fam and r["concept"] == concept and r["size"] and r.get(metric) is not None
                )
                if pts:
                    ax.plot(*zip(*pts), "o-", color=f"C{i}", label=fam)
            better = "higher" if metric in HIGHER_IS_BETTER else "lower"
            ax.set(
                xscale="log",
                xlabel="parameters (sae_bias: latents written)",
                ylabel=f"{metric} ({better} is better)",
                title=concept,
            )
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def judge(root: Path, rows: list[dict], overrides: list[str] = ()) -> None:
    """Score every run with compare's protocol (one compare per concept, the runs as saved methods); adds
    row["score"] (test score at the val-chosen strength) and row["strength"]. `overrides`: compare overrides
    (e.g. the model / SAE the runs were trained with when not the embedded default)."""
    from saebasis.config import compose, to_dict
    from saebasis.core.stack import load_stack
    from saebasis.data import load_concept
    from saebasis.experiments.compare import compare

    stack = None
    for data in sorted({r["data"] for r in rows}):
        concept = Path(data).name
        out = root / "judged" / concept
        cfg = to_dict(
            compose(
                "compare", [f"data={data}", f"out_dir={out}", "logger=none", "resume=true", "seeds=[0]", *overrides]
            )
        )
        mine = [r for r in rows if r["data"] == data]
        cfg["methods"] = {
            "unsteered": {"kind": "none"},
            **{
                f"{r['family']}_{r['budget']}": {"kind": "run", "run_dir": str(root / r["run"]), "strengths": STRENGTHS}
                for r in mine
            },
        }
        stack = stack or load_stack(cfg)
        result = compare(cfg, stack=stack, concept=load_concept(data))
        by_name = {row["method"]: row for row in result["rows"]}
        for r in mine:
            judged = by_name[f"{r['family']}_{r['budget']}"]
            r["score"], r["strength"] = judged["score"], judged["strength"]


def summarize(root: Path, metric: str = "val/loss", judged: bool = False, overrides: list[str] = ()) -> dict:
    rows = load_rows(root, "val/loss")
    if not rows:
        raise SystemExit(
            f"No rank_vs_sparsity runs with 'val/loss' under {root} (expected +budget=<family>_<budget> overrides)."
        )
    if metric not in ("val/loss", "score") or (metric == "score" and not judged):
        raise SystemExit(f"--metric {metric}: use val/loss, or score together with --judge.")
    if judged:
        judge(root, rows, overrides)
    metrics = ["val/loss", "score"] if judged else ["val/loss"]
    cols = [
        "family",
        "budget",
        "concept",
        "seed",
        "size",
        *metrics,
        *(["strength"] if judged else []),
        "latents_read",
        "latents_written",
        "train_time_s",
        "run",
    ]
    rows.sort(key=lambda r: (r["concept"], r["family"], r["size"] or 0))
    with open(root / "rank_vs_sparsity.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(cols[:-1]) + " |", "|" + "---|" * (len(cols) - 1)]
    lines += [
        "| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols[:-1]) + " |"
        for r in rows
    ]
    n_concepts = len({r["concept"] for r in rows})
    ci_by: dict[str, dict] = {}
    for m in metrics:
        ci = {name: bootstrap(paired(rows, a, b, m)) for name, (a, b) in COMPARISONS.items()}
        ci_by[m] = ci
        lines += [
            "",
            f"Paired differences of {m} (positive: the second family is better), 95% bootstrap CI over "
            + ("concepts, then budgets" if n_concepts > 1 else "budgets only (one concept)")
            + ":",
        ]
        lines += [f"- {name}: {d:+.4f} [{lo:+.4f}, {hi:+.4f}] ({k} pairs)" for name, (d, lo, hi, k) in ci.items()]
        lines += [f"Verdict on {m}: {verdict(ci)}."]
    lines += ["", f"Verdict ({metric}): {verdict(ci_by[metric])}."]
    (root / "rank_vs_sparsity.md").write_text("\n".join(lines) + "\n")
    plot(root / "rank_vs_sparsity.png", rows, metrics)
    print("\n".join(lines))
    return {"rows": rows, "ci": ci_by[metric], "ci_by_metric": ci_by, "verdict": verdict(ci_by[metric])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--metric", default="val/loss", help="the verdict's metric: val/loss, or score (needs --judge)")
    parser.add_argument("--judge", action="store_true", help="score every run with compare's protocol (resumable)")
    parser.add_argument(
        "--override", action="append", default=[], help="a compare override for --judge (repeatable), e.g. model=gpt2"
    )
    args = parser.parse_args(argv)
    result = summarize(args.root, args.metric, args.judge, args.override)
    print(json.dumps({k: list(v) for k, v in result["ci"].items()}))


if __name__ == "__main__":
    main()
