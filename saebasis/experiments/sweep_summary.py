"""Aggregate every run folder of a sweep (a Hydra multirun dir, or any tree of runs) into one table and plot.

A run folder is `cfg.json` + `intervention.safetensors` (+ `metrics.json`). Its swept keys are read from
the Hydra job's `.hydra/overrides.yaml` (the job folder holds the run as `run/`): the keys whose value
differs between runs. Outputs, in the sweep folder: summary.csv, summary.md (also printed), summary.png.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback

from saebasis.core.tables import write_table

FIXED_COLS = ("run", "method", "hook")
FALLBACK = ("val/loss", "train/loss")  # plotted when the requested metric was logged by no run
MANY = 8  # an integer key with more distinct values than this (or any float key) is a scatter, not categories


def _overrides(run: Path) -> dict[str, str]:
    for job in (run.parent, run):
        path = job / ".hydra" / "overrides.yaml"
        if path.exists():
            items = yaml.safe_load(path.read_text()) or []
            return dict(o.lstrip("+~").split("=", 1) for o in items if "=" in o)
    return {}


def _number(value: str):
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def collect_runs(root: Path) -> tuple[list[dict], list[str]]:
    """(rows, swept keys): one row per run folder under `root` with its overrides and numeric metrics."""
    rows, overrides = [], []
    for cfg_path in sorted(root.rglob("cfg.json")):
        run = cfg_path.parent
        if not (run / "intervention.safetensors").exists():
            continue
        cfg = json.loads(cfg_path.read_text())
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        rows.append(
            {"run": str(run.relative_to(root)), "method": cfg.get("method"), "hook": cfg.get("hook"), **numeric}
        )
        overrides.append(_overrides(run))
    keys = sorted({k for o in overrides for k in o})
    swept = [k for k in keys if len({o.get(k) for o in overrides}) > 1 and k not in ("run_dir", "ckpt_dir")]
    for row, o in zip(rows, overrides):
        row.update({k: _number(o[k]) if k in o else "" for k in swept})
    return rows, swept


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_tables(root: Path, rows: list[dict], cols: list[str]) -> list[str]:
    paths = write_table(root / "summary", rows, cols, lambda r, c: _fmt(r.get(c, "")))
    return Path(paths["md"]).read_text().splitlines()


def summarize(root: Path, metric: str = "val/loss") -> dict:
    """Table + plot of `metric` over every run under `root`; returns the paths and the rows."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder. Pass the multirun folder: saebasis sweep summarize dir=multirun/<date>"
        )
    rows, swept = collect_runs(root)
    if not rows:
        raise ValueError(f"No saebasis run folders (cfg.json + intervention.safetensors) under {root}.")
    metrics = sorted({k for r in rows for k in r} - set(FIXED_COLS) - set(swept))
    shown = [k for k in swept if k not in FIXED_COLS and not all(str(r[k]) == str(r["method"]) for r in rows)]
    cols = [*FIXED_COLS, *shown, *metrics]
    md = write_tables(root, rows, cols)
    print("\n".join(md))
    metric = _logged_metric(rows, metric)
    scored = [r for r in rows if isinstance(r.get(metric), (int, float))]
    if scored:
        best = min(scored, key=lambda r: r[metric])
        print(f"lowest {metric}: {best[metric]:.4g} ({best['run']})")
    plot = plot_summary(root / "summary.png", rows, swept, metric)
    return {
        "csv": str(root / "summary.csv"),
        "md": str(root / "summary.md"),
        "plot": plot,
        "rows": rows,
        "swept": swept,
        "metric": metric,
    }


def _logged_metric(rows: list[dict], metric: str) -> str:
    """`metric`, or the first loss some run logged when none logged it (e.g. trainer.max_steps stopped every
    run before its first validation: no val/loss), saying so."""
    if any(metric in r for r in rows):
        return metric
    for other in FALLBACK:
        if any(other in r for r in rows):
            print(f"[saebasis] no run logged '{metric}' (did training stop before validation?); plotting '{other}'.")
            return other
    return metric


def plot_keys(rows: list[dict], swept: list[str]) -> tuple[list[str], list[str]]:
    """(categorical keys, continuous numeric keys) to plot against; method and hook first."""
    keys = [k for k in ("method", "hook") if len({r[k] for r in rows}) > 1]
    named = ("hook", "intervention", "experiment") if "method" in keys else ("hook",)
    keys += [k for k in swept if k not in named]
    many = [
        k
        for k in keys
        if all(isinstance(r[k], (int, float)) for r in rows)
        and (len({r[k] for r in rows}) > MANY or any(isinstance(r[k], float) for r in rows))
    ]
    return [k for k in keys if k not in many], many


def plot_summary(path: Path, rows: list[dict], swept: list[str], metric: str) -> str | None:
    """Heatmap of the metric over the first two categorical keys (one key: bars), plus a scatter per
    continuous key; None when no run logged the metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    if not rows:
        return None
    cats, many = plot_keys(rows, swept)
    panels = ([tuple(cats[:2])] if cats else []) + [(k,) for k in many]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4.2), squeeze=False)
    for ax, keys in zip(axes[0], panels or [()]):
        if len(keys) == 2:
            _heatmap(fig, ax, rows, keys, metric)
        elif keys and keys[0] in many:
            _scatter(ax, rows, keys[0], metric)
        else:
            _bars(ax, rows, keys[0] if keys else "run", metric)
    fig.suptitle(f"{metric} over {len(rows)} runs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _natural(value) -> list:
    """Sort key: blocks.6 before blocks.12."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(value))]


def _mean(rows: list[dict], metric: str, **match) -> float:
    vals = [r[metric] for r in rows if all(r[k] == v for k, v in match.items())]
    return sum(vals) / len(vals) if vals else float("nan")


def _label(v) -> str:
    return str(v).replace(".hook_", "\n")


def _heatmap(fig, ax, rows: list[dict], keys: tuple[str, str], metric: str) -> None:
    from matplotlib import patheffects

    ys, xs = (sorted({r[k] for r in rows}, key=_natural) for k in keys)
    grid = [[_mean(rows, metric, **{keys[0]: y, keys[1]: x}) for x in xs] for y in ys]  # [len(ys), len(xs)]
    im = ax.imshow(grid, cmap="viridis_r" if "loss" in metric else "viridis", aspect="auto")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(
                j,
                i,
                "" if math.isnan(v) else f"{v:.4g}",
                ha="center",
                va="center",
                color="w",
                fontsize=9,
                path_effects=[patheffects.withStroke(linewidth=2, foreground="k")],
            )
    ax.set_xticks(range(len(xs)), [_label(x) for x in xs], fontsize=8)
    ax.set_yticks(range(len(ys)), [_label(y) for y in ys], fontsize=8)
    ax.set(xlabel=keys[1], ylabel=keys[0], title=f"mean {metric}")
    fig.colorbar(im, ax=ax)


def _bars(ax, rows: list[dict], key: str, metric: str) -> None:
    """Each run as a dot over its category, the category mean as a bar outline (axis not forced to 0)."""
    xs = sorted({r[key] for r in rows}, key=_natural)
    for i, x in enumerate(xs):
        vals = [r[metric] for r in rows if r[key] == x]
        ax.scatter([i] * len(vals), vals, color="C0", zorder=3)
        ax.hlines(sum(vals) / len(vals), i - 0.3, i + 0.3, color="C1", lw=2, label="mean" if i == 0 else None)
    ax.set_xticks(range(len(xs)), [_label(x) for x in xs], fontsize=8, rotation=30 if len(xs) > 4 else 0)
    ax.set(xlabel=key, ylabel=metric)
    ax.legend(fontsize=8)


def _scatter(ax, rows: list[dict], key: str, metric: str) -> None:
    xs = [r[key] for r in rows]
    ax.scatter(xs, [r[metric] for r in rows])
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=key, ylabel=metric)


class SweepCallback(Callback):
    """Hydra callback (hydra/callbacks=sweep): each job's return value becomes its `metric` (the float the
    Optuna sweeper optimises; train returns a dict of metrics), and the sweep folder is summarized when
    the multirun ends."""

    def __init__(self, metric: str = "val/loss") -> None:
        self.metric = metric

    def on_job_end(self, config, job_return: JobReturn, **kwargs) -> None:
        if job_return.status != JobStatus.COMPLETED or not isinstance(job_return._return_value, dict):
            return
        value = job_return._return_value.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            job_return.return_value = float(value)
        else:
            numeric = sorted(k for k, v in job_return._return_value.items() if isinstance(v, (int, float)))
            print(
                f"[saebasis] metric '{self.metric}' is {value!r} in this job; "
                f"set hydra.callbacks.sweep.metric to one of {numeric}."
            )

    def on_multirun_end(self, config, **kwargs) -> None:
        root = Path(config.hydra.sweep.dir)
        try:
            result = summarize(root, self.metric)
        except ValueError as err:  # every job failed before saving a run: say so, keep Hydra's own error
            print(f"[saebasis] no summary: {err}")
            return
        print(f"[saebasis] sweep summary: {result['md']}, plot: {result['plot']}")
