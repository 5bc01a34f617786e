"""Results tables (CSV + Markdown), plots (matplotlib, Agg) and wandb logging for `compare`."""

from __future__ import annotations

import os
from pathlib import Path

from saebasis.core.tables import markdown_table, write_table

COLUMNS = [
    "method",
    "strength",
    "score",
    "ci_low",
    "ci_high",
    "concept",
    "instruction",
    "fluency",
    "kl_neutral",
    "params",
    "latent_l0",
    "fit_time_s",
    "gen_overhead",
    "n_test",
    "n_seeds",
]
"""Column meanings (README / docs): score = mean harmonic mean of concept, instruction, fluency on the test split
at the val-chosen strength, with its 95% bootstrap CI; kl_neutral = per-token KL(steered || base) on neutral
prompts (blank for prompting: its prompt differs); latent_l0 = SAE latents changed per token (blank for prompting,
as KL); gen_overhead =
steered / unsteered generation time per token; ab_matching (A/B concepts) = p(matching answer) on test items;
concept2 / score2 (concepts with a second_judge) = the second judge's concept score and the harmonic mean with it;
judge_rho = Spearman of the two judges over the test responses. on_edge (CSV; a dagger on the strength in
results.md) = the chosen strength is still an edge of the searched grid: the search cap stopped it."""
OPTIONAL = ("ab_matching", "concept2", "score2", "judge_rho")
EDGE_MARK = "\u2020"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _order(row: dict) -> float:
    return -row["score"] if row["score"] == row["score"] else 0.0


def _cell(row: dict, key: str) -> str:
    text = _fmt(row.get(key, ""))
    return text + EDGE_MARK if key == "strength" and row.get("on_edge") else text


def footnotes(rows: list[dict]) -> list[str]:
    """Flags under the table: strengths still on an edge; judges that crown different winners."""
    notes = []
    if any(r.get("on_edge") for r in rows):
        notes.append(
            f"{EDGE_MARK} chosen strength still on an edge of the searched grid (the search cap stopped it): "
            "its optimum may lie further out."
        )
    if any("score2" in r for r in rows):
        from saebasis.judges import winner_disagreement

        a, b = ({r["method"]: r[k] for r in rows if k in r} for k in ("score", "score2"))
        if winner_disagreement(a, b):
            notes.append(
                f"The two concept judges disagree on the winner: {max(a, key=a.get)} by score, "
                f"{max(b, key=b.get)} by score2."
            )
    return notes


def table_columns(rows: list[dict]) -> list[str]:
    """The results table's columns: COLUMNS plus the optional ones some row has."""
    return COLUMNS + [k for k in OPTIONAL if any(k in r for r in rows)]


def write_tables(out: Path, rows: list[dict]) -> dict:
    rows = sorted(rows, key=_order)
    columns = table_columns(rows)
    csv_columns = columns + [k for k in ("on_edge",) if any(k in r for r in rows)]
    return write_table(out / "results", rows, columns, _cell, csv_columns, footnotes(rows))


def results_markdown(rows: list[dict]) -> str:
    """results.md's table (best score first, notes under it) as a string."""
    rows = sorted(rows, key=_order)
    return markdown_table(rows, table_columns(rows), _cell, footnotes(rows))


def plot_results(out: Path, results: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = next(iter(results.values())).get("val_metric", "score")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, res in results.items():
        curve = sorted((float(s), v) for s, v in res["val_curve"].items())
        if res.get("steered", True):
            ax.plot([s for s, _ in curve], [v for _, v in curve], marker="o", label=name)
        else:  # unsteered / prompting: no strength, a reference level
            ax.axhline(
                curve[0][1], linestyle="--", linewidth=1, color="grey" if name == "unsteered" else "black", label=name
            )
    title = (
        "A/B matching probability vs strength"
        if metric == "ab_matching"
        else "Score vs strength (harmonic mean of concept, instruction, fluency)"
    )
    ax.set(xlabel="steering strength (log scale)", ylabel=f"mean {metric} (val)", title=title)
    if all(float(s) > 0 for res in results.values() if res.get("steered", True) for s in res["val_curve"]):
        ax.set_xscale("log", base=2)  # grids are geometric (0.25 .. 8): equal spacing per doubling
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "score_vs_strength.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^v<>pPX*h"
    for i, (name, res) in enumerate(results.items()):  # a legend, not labels: the best methods sit close together
        r = res["row"]
        ax.errorbar(
            r["fluency"],
            r["score"],
            yerr=[[r["score"] - r["ci_low"]], [r["ci_high"] - r["score"]]],
            fmt=markers[i % len(markers)],
            capsize=3,
            label=name,
        )
    ax.set(xlabel="fluency (test)", ylabel="score (test, 95% CI)", title="Score vs fluency at the chosen strength")
    ax.legend(fontsize=7, loc="best")
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

        run = wandb.init(
            project=logger.get("project", "saebasis"),
            entity=logger.get("entity"),
            mode=logger.get("mode") or os.environ.get("WANDB_MODE"),
            dir=str(out),
            job_type="compare",
            config=cfg,
            reinit=True,
        )
        columns = COLUMNS + [k for k in OPTIONAL + ("on_edge",) if any(k in r for r in rows)]
        run.log(
            {
                "results": wandb.Table(columns=columns, data=[[r.get(k) for k in columns] for r in rows]),
                "score_vs_strength": wandb.Image(paths["plot_strength"]),
                "score_vs_fluency": wandb.Image(paths["plot_fluency"]),
            }
        )
        run.finish()
    except Exception as err:  # noqa: BLE001 -- logging must never lose the results already written
        print(f"[saebasis] wandb logging skipped ({err}); results are in {out}")
