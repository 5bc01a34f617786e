"""A comparison's cells: one file per (concept, method), so several workers can share one board.

A cell is one method's result on one concept (every seed of it: the strength is chosen on all seeds together), saved
as `<concept out_dir>/cells/<method>.json` in one atomic rename. A worker claims a cell with the run-folder lock
(`saebasis.runs.run_guard` on `cells/<method>`) before computing it and re-reads it once the claim is held, so a
cell is never computed twice at once, nor again once saved; a cell another worker holds is left to that worker.
Every computation is also appended to `cells/computed.jsonl` (one line per cell started: which method, process,
host and worker), the record that says how often each cell was computed.
The concept's results.json and the board's pages are merged from the cells under `merge_lock`, which waits.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from saebasis.runs import run_guard

CELLS = "cells"
LOG = "computed.jsonl"


def cell_path(out: Path, method: str) -> Path:
    return Path(out) / CELLS / f"{method}.json"


@contextmanager
def claim(out: Path, method: str) -> Iterator[bool]:
    """Hold the lock of one cell: yields True when this process holds it, False when another process does (a dead
    process's lock is taken over by run_guard; a stale lock it cannot attribute is named, with how to clear it)."""
    stack = ExitStack()
    try:
        stack.enter_context(run_guard(Path(out) / CELLS / method, overwrite=True))
    except RuntimeError as err:  # run_guard: being written by another process, or a stale lock
        held = False
        if "stale" in str(err):
            print(f"[saebasis] {err}", flush=True)
    else:
        held = True
    with stack:
        yield held


@contextmanager
def merge_lock(path: Path, poll_s: float = 0.2, wait_s: float = 600.0) -> Iterator[None]:
    """Hold `<path>.lock` (the run-folder lock), waiting while another process holds it: one merge at a time, so the
    last merge reads every cell saved before it. A merge takes seconds: after `wait_s` the lock's error is raised."""
    start = time.time()
    while True:
        stack = ExitStack()
        try:
            stack.enter_context(run_guard(Path(path), overwrite=True))
        except RuntimeError:
            if time.time() - start > wait_s:
                raise
            time.sleep(poll_s)
            continue
        with stack:
            yield
        return


def log_computation(out: Path, method: str, worker=0) -> None:
    """Append one line to cells/computed.jsonl: this process starts computing `method` (O_APPEND: lines never mix)."""
    line = (
        json.dumps(
            {
                "method": method,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "worker": worker,
                "started": time.time(),
            }
        )
        + "\n"
    )
    path = Path(out) / CELLS / LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def computations(out: Path) -> list[dict]:
    """Every computation started in a concept's out_dir (cells/computed.jsonl), oldest first."""
    path = Path(out) / CELLS / LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def write_cell(out: Path, method: str, blob: dict) -> Path:
    """Save a cell in one rename (a reader sees the old file or the new one, never half of one)."""
    path = cell_path(out, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(blob, indent=2, default=str))
    tmp.replace(path)
    return path


def read_cell(out: Path, method: str) -> dict | None:
    """A saved cell (None when there is none, or it cannot be read)."""
    path = cell_path(out, method)
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (json.JSONDecodeError, OSError):
        return None


def saved_between(out: Path, methods, start: float = 0.0, end: float = float("inf")) -> int:
    """How many of `methods` have a cell in the concept folder `out` saved between `start` and `end` (by any worker;
    the cell's record says when): a concept's progress, for time estimates."""
    times = [((read_cell(out, m) or {}).get("cell") or {}).get("record", {}).get("finished") for m in methods]
    return sum(t is not None and start <= t <= end for t in times)


def record(worker=0) -> dict:
    """Who computed a cell: stored in the cell beside its result."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "worker": worker, "finished": time.time()}
