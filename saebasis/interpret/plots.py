"""The report's figures (matplotlib, Agg backend), each returned as a base64 PNG data URI."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def overview(data: dict) -> str:
    """Scores of the top latents (left) and the norm-explained curves over k (right)."""
    latents = data["latents"]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, max(3.6, 0.3 * len(latents))), layout="constrained", gridspec_kw={"width_ratios": [1.2, 1]}
    )
    names = [f"{l['latent']}: {l['short']}" if l.get("short") else f"latent {l['latent']}" for l in latents][::-1]
    left.barh(names, [l["score"] for l in latents][::-1], color="#4477aa")
    left.set(
        title="Top latents (label: the tokens each fires on most, by lift)",
        xlabel=f"score: {data['ranking']['source']}",
    )
    left.tick_params(axis="y", labelsize=8)
    curve = data["norm_explained"]
    right.plot(curve["k"], curve["weight_share"], color="#cc6677", label="share of ||score||² in top-k")
    if curve["residual_share"] is not None:
        right.plot(
            curve["k"], curve["residual_share"], color="#228833", label="share of ||Δh||² in span of top-k W_dec rows"
        )
    right.axvline(len(latents), color="#999999", ls="--", lw=1, label=f"k = {len(latents)} (shown)")
    right.set(
        xscale="log",
        ylim=(0, 1.02),
        xlabel="k (latents in ranking order)",
        ylabel="fraction",
        title="How much the top-k latents explain",
    )
    right.legend(fontsize=8, loc="lower right")
    return to_data_uri(fig)


def patterns(p: dict) -> str:
    """Three heatmaps: the activation pattern X, its SVD loadings and its NMF parts."""
    x = np.asarray(p["matrix"])  # [n_contexts, n_latents]
    nmf_w, svd, parts = np.asarray(p["nmf_weights"]), np.asarray(p["svd_loadings"]), np.asarray(p["nmf_parts"])
    order = np.lexsort((-nmf_w.max(1), nmf_w.argmax(1)))  # contexts grouped by their main NMF part
    names = [str(i) for i in p["latents"]]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    lim = max(1e-9, float(np.abs(svd).max()))
    panels = (
        (x[order], f"Activation pattern X ({x.shape[0]} contexts)", "magma", None, "context (grouped by NMF part)"),
        (svd, f"Truncated SVD loadings ({100 * p['svd_energy']:.0f}% of ||X||²)", "RdBu_r", (-lim, lim), "component"),
        (parts, f"NMF parts (relative error {p['nmf_rel_error']:.2f})", "viridis", (0, 1), "part"),
    )
    for ax, (mat, title, cmap, lims, ylabel) in zip(axes, panels):
        im = ax.imshow(
            mat,
            aspect="auto",
            cmap=cmap,
            interpolation="nearest",
            **({} if lims is None else {"vmin": lims[0], "vmax": lims[1]}),
        )
        ax.set(title=title, xlabel="latent", ylabel=ylabel, xticks=range(len(names)), xticklabels=names)
        ax.title.set_fontsize(9)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        if ylabel != "context (grouped by NMF part)":
            ax.set_yticks(range(mat.shape[0]), [str(i + 1) for i in range(mat.shape[0])])
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    return to_data_uri(fig)
