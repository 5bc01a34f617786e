"""Results tables (CSV + Markdown), plots (matplotlib, Agg) and wandb logging for `compare`."""

from __future__ import annotations

import csv
import os
from pathlib import Path

COLUMNS = ["method", "strength", "score", "ci_low", "ci_high", "concept", "instruction", "fluency",
           "kl_neutral", "params", "latent_l0", "fit_time_s", "gen_overhead"]


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_tables(out: Path, rows: list[dict]) -> dict:
    rows = sorted(rows, key=lambda r: -r["score"])
    columns = COLUMNS + [k for k in ("ab_matching",) if any(k in r for r in rows)]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in columns} for r in rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in columns) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return {"csv": str(out / "results.csv"), "md": str(out / "results.md")}


def plot_results(out: Path, results: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, res in results.items():
        curve = sorted((float(s), v) for s, v in res["val_curve"].items())
        ax.plot([s for s, _ in curve], [v for _, v in curve], marker="o", label=name)
    ax.set(xlabel="steering strength", ylabel="mean score (val)", title="Score vs strength (harmonic mean of concept, instruction, fluency)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "score_vs_strength.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, res in results.items():
        r = res["row"]
        ax.errorbar(r["fluency"], r["score"], yerr=[[r["score"] - r["ci_low"]], [r["ci_high"] - r["score"]]], fmt="o", capsize=3)
        ax.annotate(name, (r["fluency"], r["score"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel="fluency (test)", ylabel="score (test, 95% CI)", title="Score vs fluency at the chosen strength")
    fig.tight_layout()
    fig.savefig(out / "score_vs_fluency.png", dpi=120)
    plt.close(fig)
    return {"plot_strength": str(out / "score_vs_strength.png"), "plot_fluency": str(out / "score_vs_fluency.png")}


def log_wandb(cfg: dict, out: Path, rows: list[dict], paths: dict) -> None:
    """Log the table and plots; offline by default, never fatal (a run never fails on wandb)."""
    logger = cfg.get("logger") or {}
    if logger.get("mode") == "disabled":
        return
    try:
        import wandb

        run = wandb.init(project=logger.get("project", "saebasis"), entity=logger.get("entity"), mode=logger.get("mode") or os.environ.get("WANDB_MODE"),
                         dir=str(out), job_type="compare", config=cfg, reinit=True)
        run.log({"results": wandb.Table(columns=COLUMNS, data=[[r[k] for k in COLUMNS] for r in rows]),
                 "score_vs_strength": wandb.Image(paths["plot_strength"]), "score_vs_fluency": wandb.Image(paths["plot_fluency"])})
        run.finish()
    except Exception as err:  # noqa: BLE001 -- logging must never lose the results already written
        print(f"[saebasis] wandb logging skipped ({err}); results are in {out}")
