"""What `saebasis plateau` reports: per-family edge summaries, the Markdown table, the plot and the JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from saebasis.experiments.plateau.analysis import Edge, plateau_edge

LABELS = {"learned": "learned", "isotropic": "isotropic random", "covariance": "covariance-matched random",
          "alive_rows": "random alive SAE decoder rows"}
COLORS = {"isotropic": "tab:gray", "covariance": "tab:blue", "alive_rows": "tab:green"}


def edge_dict(edge: Edge) -> dict:
    return {"size": edge.size, "sharpness": edge.sharpness, "status": edge.status}


def family_summary(sizes: Sequence[float], kl: Sequence[Sequence[float]], threshold: float, learned_edge: float) -> dict:
    """Each direction's edge, and over the family: median edge (+inf counts a direction that never left the
    plateau on the grid), 10-90% range, median sharpness, how many crossed, and learned edge / median edge."""
    edges = [plateau_edge(sizes, row, threshold) for row in kl]
    at = np.array([e.size if e.status != "not_reached" else math.inf for e in edges])
    sharp = np.array([e.sharpness for e in edges if math.isfinite(e.sharpness)])
    median = float(np.median(at))
    return {
        "sizes": list(map(float, sizes)), "kl": [list(map(float, row)) for row in kl],
        "edges": [edge_dict(e) for e in edges], "median_edge": median,
        "edge_q10": float(np.quantile(at, 0.1, method="nearest")), "edge_q90": float(np.quantile(at, 0.9, method="nearest")),
        "median_sharpness": float(np.median(sharp)) if len(sharp) else math.nan,
        "n": len(edges), "n_reached": int(sum(e.status != "not_reached" for e in edges)),
        "learned_over_family": learned_edge / median if median > 0 else math.nan,
    }


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "> grid"
    return f"{x:.{digits}g}"


def markdown(result: dict) -> str:
    """The table: learned direction vs each random family (edges in residual units and in median |h|)."""
    norm, learned = result["median_norm"], result["learned"]
    lines = [f"# Activation plateau: {learned['label']} at {result['hook']}", "",
             f"KL(steered || base) of next-token distributions, mean over {result['n_tokens']} tokens of "
             f"{result['n_prompts']} neutral prompts (first token excluded); threshold {result['threshold']} nats; "
             f"median |h| = {norm:.3g} (neutral tokens, sink excluded).", "",
             "| direction | n | plateau edge (size) | edge / median abs h | sharpness | learned / this |",
             "|---|---|---|---|---|---|"]
    e = learned["edge"]
    lines.append(f"| {learned['label']} | 1 | {_fmt(e['size'])}{' (upper bound)' if e['status'] == 'below_grid' else ''} | "
                 f"{_fmt(e['size'] / norm)} | {_fmt(e['sharpness'])} | 1 |")
    for name, fam in result["families"].items():
        lines.append(f"| {LABELS[name]} (median; 10-90%) | {fam['n']} ({fam['n_reached']} crossed) | "
                     f"{_fmt(fam['median_edge'])} ({_fmt(fam['edge_q10'])}-{_fmt(fam['edge_q90'])}) | "
                     f"{_fmt(fam['median_edge'] / norm)} | {_fmt(fam['median_sharpness'])} | {_fmt(fam['learned_over_family'])} |")
    lines += ["", "size = |Δh| added at every position but the first (for a non-constant method: mean |h'(s) - h|); "
              "sharpness = d log KL / d log size across the crossing grid step (2: smooth quadratic rise).", ""]
    lines.append(suggestion_line(result))
    return "\n".join(lines) + "\n"


def suggestion_line(result: dict) -> str:
    s, learned = result["suggested_strength"], result["learned"]
    if s is None or not math.isfinite(s):
        return ("No suggested strength: the learned direction did not cross the threshold on the grid "
                "(extend size_max / strength_max).")
    how = (f"edge {learned['edge_strength']:.3g} in strength" if learned.get("vector_norm") is None
           else f"edge {learned['edge']['size']:.3g} / |v| {learned['vector_norm']:.3g}")
    return f"**Suggested strength: {s:.3g}** ({how}, times the margin {result['margin']}: just past the plateau edge)."


def plot(path: Path, result: dict) -> None:
    """log-log KL vs size: median and 10-90% band per random family, the learned curve on top, edges dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-7
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, fam in result["families"].items():
        kl = np.clip(np.array(fam["kl"]), floor, None)  # [n_dir, n_size]
        c = COLORS[name]
        ax.fill_between(fam["sizes"], np.quantile(kl, 0.1, 0), np.quantile(kl, 0.9, 0), color=c, alpha=0.2, lw=0)
        ax.plot(fam["sizes"], np.median(kl, 0), color=c, lw=1.5, label=f"{LABELS[name]} (median, 10-90%)")
        if math.isfinite(fam["median_edge"]):
            ax.axvline(fam["median_edge"], color=c, ls="--", lw=1)
    learned = result["learned"]
    ax.plot(learned["sizes"], np.clip(learned["kl"], floor, None), color="black", lw=2.5, marker="o", ms=3,
            label=learned["label"], zorder=5)
    if math.isfinite(learned["edge"]["size"]):
        ax.axvline(learned["edge"]["size"], color="black", ls="--", lw=1.2)
    ax.axhline(result["threshold"], color="red", ls=":", lw=1, label=f"threshold {result['threshold']} nats")
    ax.set(xscale="log", yscale="log", xlabel="perturbation size |Δh| (residual units)", ylabel="KL to unsteered (nats/token)",
           title=f"Plateaus at {result['hook']} (median |h| = {result['median_norm']:.3g})")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _finite(obj):
    """NaN / inf as null (strict JSON); statuses say why."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write(out_dir: Path, result: dict) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "plateau.json", "md": out_dir / "plateau.md", "png": out_dir / "plateau.png"}
    paths["json"].write_text(json.dumps(_finite(result), indent=2))
    paths["md"].write_text(markdown(result))
    plot(paths["png"], result)
    return {k: str(v) for k, v in paths.items()}
