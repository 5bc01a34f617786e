"""Aggregate every run folder of a sweep (Hydra multirun dir or any tree) into one table and plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def collect_runs(root: Path) -> list[dict]:
    rows = []
    for cfg_path in sorted(root.rglob("cfg.json")):
        run = cfg_path.parent
        if not (run / "intervention.safetensors").exists():
            continue
        cfg = json.loads(cfg_path.read_text())
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
        rows.append({"run": str(run.relative_to(root)), "method": cfg.get("method"), "hook": cfg.get("hook"),
                     **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
    return rows


def summarize(root: Path, metric: str = "val/loss") -> dict:
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder. Pass the multirun folder: saebasis sweep summarize dir=multirun/<date>")
    rows = collect_runs(root)
    if not rows:
        raise ValueError(f"No saebasis run folders (cfg.json + intervention.safetensors) under {root}.")
    cols = ["run", "method", "hook"] + sorted({k for r in rows for k in r} - {"run", "method", "hook"})
    with open(root / "summary.csv", "w", newline="") as f:
        csv.DictWriter(f, fieldnames=cols, restval="").writerows([dict(zip(cols, cols))] + rows)
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(f"{r.get(c, ''):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols) + " |" for r in rows]
    (root / "summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    plot = _plot(root, rows, metric)
    return {"csv": str(root / "summary.csv"), "md": str(root / "summary.md"), "plot": plot, "rows": rows}


def _plot(root: Path, rows: list[dict], metric: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(metric in r for r in rows):
        return None
    hooks_ = sorted({r["hook"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(hooks_) * max(1, len(methods)) / 2, 4))
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        vals = [next((r[metric] for r in rows if r["hook"] == h and r["method"] == m and metric in r), float("nan")) for h in hooks_]
        ax.bar([i + j * width for i in range(len(hooks_))], vals, width, label=m)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(hooks_))], [h.replace(".hook_", "\n") for h in hooks_], fontsize=8)
    ax.set(ylabel=metric, title=f"{metric} by hook and method")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(root / "summary.png", dpi=120)
    plt.close(fig)
    return str(root / "summary.png")
