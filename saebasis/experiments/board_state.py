"""A leaderboard's resumable state as one archive (`scripts/board_state.sh pack|unpack [out_dir]`).

pack: `<state>/<board>.tar.gz` of out_dir: every concept's results.json and runs/ (weights, cfg.json, metrics.json,
interpret/report.json) and finished cells, without Lightning checkpoints (*.ckpt), locks (*.lock), wandb folders,
report.html, links, and the run folders of cells results.json marks finished (but their seed-0 runs, which the
readability table reads).
unpack: the same archive back into out_dir's parent, after every member is checked -- before anything is written:
only regular files and folders (no symlinks, hard links, devices), every path relative, inside `<board>/` (never
a sibling board's files, never outside), no setuid / setgid / sticky bits and nothing world-writable. Extraction
then runs through tarfile's "data" filter as well. The rules are in docs/run-folders.md.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import sys
import tarfile
from pathlib import Path, PurePosixPath

EXCLUDED_NAMES = ("wandb", "report.html")
EXCLUDED_SUFFIXES = (".ckpt", ".lock")  # a lock is a claim by a process on this machine, never carried
BAD_MODE_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH


class UnsafeArchive(ValueError):
    """An archive member that unpack refuses; nothing was written."""


def archive_path(out: Path, state_dir: Path) -> Path:
    return Path(state_dir) / f"{Path(out).name}.tar.gz"


FITTED_RUN_MAX = 2**20
"""A finished fitted run is packed when its files total at most this (a steering vector, a few latents: what the
readability table reads of the fitted SAE-basis methods); larger ones (SARA's stored activations) are refitted."""


def finished_run_dirs(out: Path) -> set[Path]:
    """Run folders of cells results.json marks finished, but the seed-0 ones (left out of the archive): a trained
    method's `<method>-seed0` and a fitted method's `<method>` (one run, seed 0; up to FITTED_RUN_MAX) stay, for
    the readability table."""
    skip: set[Path] = set()
    for results in sorted(Path(out).glob("concepts/*/results.json")):
        runs = results.parent / "runs"
        for method in json.loads(results.read_text()).get("results", {}):
            for run in runs.glob(f"{glob.escape(method)}-seed*"):
                if run.is_dir() and not run.name.endswith("-seed0"):
                    skip.add(run.resolve())
            fitted = runs / method
            if fitted.is_dir() and sum(f.stat().st_size for f in fitted.rglob("*") if f.is_file()) > FITTED_RUN_MAX:
                skip.add(fitted.resolve())
    return skip


def pack(out: Path, state_dir: Path) -> Path:
    out, archive = Path(out), archive_path(out, state_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"No board at {out} to pack: pass the leaderboard's out_dir.")
    skip = finished_run_dirs(out)

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        path = out.parent / info.name
        if not (info.isfile() or info.isdir()) or path.name in EXCLUDED_NAMES or path.name.endswith(EXCLUDED_SUFFIXES):
            return None  # links and special files are never packed
        if info.isdir() and path.resolve() in skip:
            return None
        info.mode &= ~BAD_MODE_BITS & 0o7777
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(f".{archive.name}.tmp-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(out, arcname=out.name, filter=keep)
        tmp.replace(archive)
    finally:
        tmp.unlink(missing_ok=True)
    return archive


def check_member(info: tarfile.TarInfo, board: str) -> str | None:
    """Why `info` may not be unpacked into board `board` (None: it may)."""
    name = info.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in parts or "\\" in name:
        return "a path that leaves the target ('..')"
    if not parts or parts[0] != board:
        return f"outside the board's folder {board}/ (it would write beside it, e.g. over a sibling board)"
    if info.issym() or info.islnk():
        return f"a link (to {info.linkname!r}): only regular files and folders are unpacked"
    if not (info.isfile() or info.isdir()):
        return "not a regular file or folder (a device, FIFO or other special file)"
    if info.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
        return (
            f"mode {stat.filemode(info.mode | (stat.S_IFDIR if info.isdir() else stat.S_IFREG))} "
            "(setuid / setgid / sticky)"
        )
    if info.mode & stat.S_IWOTH:
        return f"mode {oct(info.mode & 0o7777)} (world-writable)"
    return None


def check_archive(members: list[tarfile.TarInfo], board: str, parent: Path) -> None:
    """Every member is safe to unpack into parent/board, or UnsafeArchive names each one refused."""
    problems = [f"{m.name}: {why}" for m in members if (why := check_member(m, board))]
    root = Path(parent).resolve()
    for m in members:  # a link already on disk (inside the board) must not lead a member outside it
        if not problems and not (root / m.name).resolve().is_relative_to(root / board):
            problems.append(f"{m.name}: resolves outside {root / board} through a link already on disk")
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise UnsafeArchive(
            f"Refusing to unpack: {len(problems)} unsafe member(s); nothing was written.\n  {shown}\n"
            f"Fix: unpack only archives made by `scripts/board_state.sh pack`, or re-pack this board."
        )


def unpack(out: Path, state_dir: Path) -> Path:
    out, archive = Path(out), archive_path(out, state_dir)
    if not archive.is_file():
        raise FileNotFoundError(f"no {archive} to unpack: pack it first (scripts/board_state.sh pack {out}).")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        check_archive(members, out.name, out.parent)
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: the "data" filter as a second check
            tar.extractall(out.parent, members=members, filter="data")
        else:  # an older Python: the members checked above, modes stripped as the data filter would
            for m in members:
                m.mode &= 0o755 if m.isdir() else 0o644
                m.uid = m.gid = 0
            tar.extractall(out.parent, members=members)
    return out


def forget(out: Path, concept: str, methods: list[str]) -> list[Path]:
    """Drop finished cells of one concept so that the board's next run computes them again (e.g. cells measured
    while their worker was paused): each method's cell file, its entry in the concept's results.json (which is then
    no longer complete), its run folders (every seed) and their checkpoints. Refused, with nothing removed, for a
    method with no cell, entry or run there, or one whose cell is claimed (a worker is computing it). Returns the
    paths removed."""
    folder = Path(out) / "concepts" / concept
    if not folder.is_dir():
        raise FileNotFoundError(f"no concept {concept!r} in {out} (its folders: concepts/<name>).")
    runs, cells_dir, results = folder / "runs", folder / "cells", folder / "results.json"
    blob = json.loads(results.read_text()) if results.exists() else {}
    targets: list[Path] = []
    for method in methods:
        found = [cells_dir / f"{method}.json"] if (cells_dir / f"{method}.json").exists() else []
        found += [p for p in [runs / method, *runs.glob(f"{glob.escape(method)}-seed*")] if p.exists()]
        if (cells_dir / f"{method}.lock").exists():
            raise RuntimeError(
                f"{concept}/{method} is claimed by a worker ({cells_dir / f'{method}.lock'}): stop it first "
                "(a lock whose worker is gone: remove the lock file)."
            )
        if not found and method not in blob.get("results", {}):
            known = sorted(p.stem for p in cells_dir.glob("*.json"))
            raise FileNotFoundError(f"{concept} has no cell, result or run of {method!r} (its cells: {known}).")
        targets += found
    for path in targets:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if blob:
        for method in methods:
            blob.get("results", {}).pop(method, None)
        blob["complete"] = False
        tmp = results.with_name(f".results.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(blob, indent=2))
        tmp.replace(results)
    return targets


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: board_state.sh pack|unpack [out_dir]  |  board_state.sh forget <out_dir> <concept> <method>..."
    valid = bool(argv) and (len(argv) >= 4 if argv[0] == "forget" else argv[0] in ("pack", "unpack") and len(argv) <= 2)
    if not valid:
        print(usage, file=sys.stderr)
        return 2
    out = Path(argv[1] if len(argv) > 1 else "outputs/leaderboard/full")
    state_dir = Path(os.environ.get("BOARD_STATE_DIR") or "docs/results/state")
    try:
        if argv[0] == "forget":
            gone = forget(out, argv[2], argv[3:])
            print(f"forgot {', '.join(argv[3:])} of {argv[2]} ({len(gone)} paths): the board's next run computes them")
        elif argv[0] == "pack":
            archive = pack(out, state_dir)
            print(f"packed {out} -> {archive} ({archive.stat().st_size / 2**20:.1f} MB)")
        else:
            unpack(out, state_dir)
            print(
                f"unpacked {archive_path(out, state_dir)} -> {out}: "
                "rerun the same leaderboard command (resume is automatic)"
            )
    except (FileNotFoundError, UnsafeArchive, tarfile.TarError, RuntimeError) as err:
        print(f"board_state: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
