"""What `saebasis plateau` reports: per-family edge summaries, the Markdown table, the plot and the JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from saebasis.experiments.plateau.analysis import Edge, plateau_edge

LABELS = {
    "learned": "learned",
    "isotropic": "isotropic random",
    "covariance": "covariance-matched random",
    "cov_mixture": "covariance-random mixture (z1 - z2)",
    "real_mixture": "real mixture (a_i - a_j)",
    "alive_rows": "random alive SAE decoder rows",
}
COLORS = {
    "isotropic": "tab:gray",
    "covariance": "tab:blue",
    "cov_mixture": "tab:purple",
    "real_mixture": "tab:orange",
    "alive_rows": "tab:green",
}


def edge_dict(edge: Edge) -> dict:
    return {"size": edge.size, "sharpness": edge.sharpness, "status": edge.status}


def family_summary(
    sizes: Sequence[float], kl: Sequence[Sequence[float]], threshold: float, learned_edge: float
) -> dict:
    """Each direction's edge, and over the family: median edge (+inf counts a direction that never left the
    plateau on the grid), 10-90% range, median sharpness, how many crossed, and learned edge / median edge."""
    edges = [plateau_edge(sizes, row, threshold) for row in kl]
    at = np.array([e.size if e.status != "not_reached" else math.inf for e in edges])
    sharp = np.array([e.sharpness for e in edges if math.isfinite(e.sharpness)])
    median = float(np.median(at))
    return {
        "sizes": list(map(float, sizes)),
        "kl": [list(map(float, row)) for row in kl],
        "edges": [edge_dict(e) for e in edges],
        "median_edge": median,
        "edge_q10": float(np.quantile(at, 0.1, method="nearest")),
        "edge_q90": float(np.quantile(at, 0.9, method="nearest")),
        "median_sharpness": float(np.median(sharp)) if len(sharp) else math.nan,
        "n": len(edges),
        "n_reached": int(sum(e.status != "not_reached" for e in edges)),
        "learned_over_family": learned_edge / median if median > 0 else math.nan,
    }


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "> grid"
    return f"{x:.{digits}g}"


def _table(result: dict, edge: dict, families: dict) -> list[str]:
    """Learned direction vs each random family (edges in residual units and in median |h|)."""
    norm, label = result["median_norm"], result["learned"]["label"]
    lines = [
        "| direction | n | plateau edge (size) | edge / median abs h | sharpness | learned / this |",
        "|---|---|---|---|---|---|",
        (
            f"| {label} | 1 | {_fmt(edge['size'])}{' (upper bound)' if edge['status'] == 'below_grid' else ''} | "
            f"{_fmt(edge['size'] / norm)} | {_fmt(edge['sharpness'])} | 1 |"
        ),
    ]
    for name, fam in families.items():
        lines.append(
            f"| {LABELS[name]} (median; 10-90%) | {fam['n']} ({fam['n_reached']} crossed) | "
            f"{_fmt(fam['median_edge'])} ({_fmt(fam['edge_q10'])}-{_fmt(fam['edge_q90'])}) | "
            f"{_fmt(fam['median_edge'] / norm)} | {_fmt(fam['median_sharpness'])} | "
            f"{_fmt(fam['learned_over_family'])} |"
        )
    return lines


def markdown(result: dict) -> str:
    """Two tables: KL averaged over every position but the first, and over the positions after the chat
    template's shared opening (the tokens every prompt shares)."""
    learned, shared = result["learned"], result.get("n_shared", [])
    lines = [
        f"# Activation plateau: {learned['label']} at {result['hook']}",
        "",
        (
            f"KL(steered || base) of next-token distributions, mean over {result['n_tokens']} tokens of "
            f"{result['n_prompts']} neutral prompts (first token excluded); threshold {result['threshold']} nats; "
            f"median |h| = {result['median_norm']:.3g} (neutral tokens, sink excluded)."
        ),
        "",
    ]
    lines += _table(result, learned["edge"], result["families"])
    if "families_unshared" in result and any(shared):
        opening = ", ".join(map(str, sorted(set(shared))))
        lines += [
            "",
            (
                f"The same, KL averaged only over the {result['n_tokens_unshared']} tokens after the shared "
                f"template opening ({opening} tokens per prompt; the perturbation is still added at every "
                "position but the first):"
            ),
            "",
        ]
        lines += _table(result, learned["edge_unshared"], result["families_unshared"])
    elif "families_unshared" in result:
        lines += ["", "No prompt starts with a shared template opening: the KL without shared tokens is the KL above."]
    lines += [
        "",
        (
            "size = |Δh| added at every position but the first (for a non-constant method: mean |h'(s) - h|); "
            "sharpness = d log KL / d log size across the crossing grid step (2: smooth quadratic rise)."
        ),
        "",
    ]
    lines.append(suggestion_line(result))
    if any(shared):
        lines.append(suggestion_line(result, unshared=True))
    return "\n".join(lines) + "\n"


def suggestion_line(result: dict, unshared: bool = False) -> str:
    tail = "_unshared" if unshared else ""
    s, learned = result["suggested_strength" + tail], result["learned"]
    which = " from the KL without the shared tokens" if unshared else ""
    if s is None or not math.isfinite(s):
        return (
            f"No suggested strength{which}: the learned direction did not cross the threshold on the grid "
            "(extend size_max / strength_max)."
        )
    how = (
        f"edge {learned['edge_strength' + tail]:.3g} in strength"
        if learned.get("vector_norm") is None
        else f"edge {learned['edge' + tail]['size']:.3g} / |v| {learned['vector_norm']:.3g}"
    )
    return (
        f"**Suggested strength{which}: {s:.3g}** ({how}, times the margin {result['margin']}: just past the "
        "plateau edge)."
    )


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
    ax.plot(
        learned["sizes"],
        np.clip(learned["kl"], floor, None),
        color="black",
        lw=2.5,
        marker="o",
        ms=3,
        label=learned["label"],
        zorder=5,
    )
    if math.isfinite(learned["edge"]["size"]):
        ax.axvline(learned["edge"]["size"], color="black", ls="--", lw=1.2)
    ax.axhline(result["threshold"], color="red", ls=":", lw=1, label=f"threshold {result['threshold']} nats")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="perturbation size |Δh| (residual units)",
        ylabel="KL to unsteered (nats/token)",
        title=f"Plateaus at {result['hook']} (median |h| = {result['median_norm']:.3g})",
    )
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
