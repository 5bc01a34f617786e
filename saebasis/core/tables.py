"""The one table writer: rows -> `<stem>.csv` (every column, raw values) and `<stem>.md` (a Markdown table, cells
formatted by the caller, notes under it). Used by compare's results, sweep summaries and the leaderboard's files."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path


def write_table(
    stem: Path,
    rows: Sequence[dict],
    columns: Sequence[str],
    cell: Callable[[dict, str], str] | None = None,
    csv_columns: Sequence[str] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, str]:
    cell = cell or (lambda row, key: _default(row.get(key, "")))
    csv_columns = list(csv_columns or columns)
    stem = Path(stem)
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=csv_columns, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: "" if r.get(k) is None else r[k] for k in csv_columns if k in r} for r in rows)
    stem.with_suffix(".md").write_text(markdown_table(rows, columns, cell, notes))
    return {"csv": str(stem.with_suffix(".csv")), "md": str(stem.with_suffix(".md"))}


def markdown_table(
    rows: Sequence[dict],
    columns: Sequence[str],
    cell: Callable[[dict, str], str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The Markdown table (and notes under it) that write_table writes, as a string."""
    cell = cell or (lambda row, key: _default(row.get(key, "")))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r, k) for k in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in notes)


def _default(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
