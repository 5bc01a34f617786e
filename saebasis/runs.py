"""A saved run is a folder: `cfg.json` + `intervention.safetensors` + `metrics.json`.

Folders are written atomically (a temporary sibling, then one rename), so a crash mid-save never leaves
a half-written run that loads. Loading reads JSON and safetensors only: no pickle, no code execution.
A run folder only ever replaces a finished saebasis run (recognised by its files), and only with overwrite=true;
resume continues the newest checkpoint of the run in progress and leaves a finished run alone. The rules are
written out in docs/run-folders.md.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from saebasis.core.sae import SAEBasis
from saebasis.interventions.base import Intervention, build

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
"""Files saebasis never loads from a folder it reads (pickles can run code)."""
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "intervention.safetensors"
METRICS_FILE = "metrics.json"
RUN_EXTRAS = ("README.md", "interpret")
"""What saebasis itself also writes into a run folder (the model card of a saved Steering; `interpret`'s report)."""
CKPT_RECORD = "run.json"
"""In a checkpoint folder: the id, fingerprint and start time of the run whose checkpoints it holds."""
MIN_FREE_BYTES = 64 * 2**20
"""Free space a run's folder needs before training starts (the run itself, its checkpoints, its logs)."""


class Run(NamedTuple):
    intervention: Intervention
    cfg: dict[str, Any]
    metrics: dict[str, Any]
    path: Path


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())


def atomic_dir(target: Path, write) -> Path:
    """Call `write(tmp_dir)` then move tmp_dir to `target` in one rename (replacing an old folder)."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file, not a folder: saebasis never replaces it. Pick another path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        with disk_full_explained(target, tmp):
            write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def save_run(path: str | Path, intervention: Intervention, cfg: dict[str, Any], metrics: dict | None = None) -> Path:
    """Save the learned parameters (never the LM or SAE), the full config and metrics."""
    full_cfg = {
        **cfg,
        "method": intervention.method,
        "intervention": intervention.config_dict(),
        "d_model": intervention.d_model,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in intervention.state_dict().items()}
    check_replaceable(Path(path))  # never replace a folder saebasis did not write

    def write(tmp: Path) -> None:
        save_file(tensors, tmp / WEIGHTS_FILE)
        _write_json(tmp / CFG_FILE, full_cfg)
        _write_json(tmp / METRICS_FILE, metrics or {})

    return atomic_dir(Path(path), write)


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing. Is {path.parent} a saebasis run folder (cfg.json + {WEIGHTS_FILE})?"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the run folder is corrupt. Re-run training.") from err


def load_sae_for_run(cfg: dict[str, Any], device: str = "cpu") -> SAEBasis | None:
    from saebasis.core.stack import load_sae  # the one SAE loader

    return load_sae(cfg.get("sae"), device)


def refuse_pickles(folder: Path, allowed: tuple[str, ...] = ()) -> None:
    for name in sorted(os.listdir(folder)):
        if name.endswith(PICKLE_SUFFIXES) and name not in allowed:
            raise ValueError(
                f"Refusing to load {Path(folder) / name}: saebasis loads only safetensors / JSON / YAML, "
                "never pickles. "
                f"Remove the file or convert it to safetensors."
            )


def load_run(path: str | Path, sae: SAEBasis | None = None, device: str = "cpu") -> Run:
    """Rebuild the intervention of a saved run; the SAE is loaded from cfg.json unless given."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"Run folder {path} does not exist. Train one with `saebasis train` first.")
    refuse_pickles(path)
    cfg = read_json(path / CFG_FILE)
    metrics = read_json(path / METRICS_FILE) if (path / METRICS_FILE).exists() else {}
    weights = path / WEIGHTS_FILE
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing; the run at {path} is incomplete. Re-run training.")
    try:
        state = load_file(weights, device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights} is corrupt ({err}). Re-run training or restore the file.") from err
    sae = sae if sae is not None else load_sae_for_run(cfg, device)
    intervention = build(cfg["method"], cfg.get("intervention"), cfg["d_model"], sae)
    try:
        intervention.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{weights} does not fit a '{cfg['method']}' intervention built from {path / CFG_FILE} with this SAE "
            f"(d_model {cfg['d_model']}{'' if sae is None else f', d_sae {sae.d_sae}'}): "
            f"{str(err).splitlines()[0]} ... "
            f"Load it with the SAE it was trained with (cfg.json 'sae'), or re-train it."
        ) from err
    check_finite(intervention)  # a run edited / corrupted to NaN never generates silently-empty text
    return Run(intervention.to(device), cfg, metrics, path)


def check_finite(intervention: Intervention) -> None:
    """Refuse to save (or use) an intervention with NaN / inf weights or absurd magnitudes."""
    for name, t in [*intervention.named_parameters(), *intervention.named_buffers()]:
        if t is None or not t.is_floating_point():
            continue
        if not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"The trained '{intervention.method}' has non-finite values in {name}: training diverged. "
                f"Nothing was saved; lower lr or raise regularisation and train again."
            )
        if t.numel() and float(t.detach().abs().max()) > 1e12:
            raise ValueError(
                f"The trained '{intervention.method}' has |{name}| up to {float(t.detach().abs().max()):.3g}: training "
                f"diverged (lr too large?). Nothing was saved; lower lr and train again."
            )


# -- run folders: one writer at a time, no silent overwrite, writable before any work ----------------
def fingerprint(cfg: dict) -> str:
    """A hash of what makes a training run what it is (not where it is saved or how long it runs)."""
    keys = (
        "intervention",
        "data",
        "seed",
        "model",
        "sae",
        "hook",
        "objective",
        "lr",
        "batch_size",
        "max_len",
        "max_pairs",
        "val_fraction",
        "kl_coef",
        "beta",
        "weight_decay",
    )
    blob = json.dumps({k: cfg.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_checkpoint(path: Path, cfg: dict) -> None:
    """resume=true: the checkpoint exists, loads weights-only (never unpickling code), and belongs to cfg."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"resume=true but {path} does not exist (run_dir={cfg.get('run_dir')}). Check run_dir for a typo, or drop "
            f"resume=true to train from scratch."
        )
    recorded = _load_checkpoint(path).get("saebasis_config")
    if recorded != fingerprint(cfg):
        raise _other_config(path, recorded, cfg, "use a new run_dir / overwrite=true (without resume) to start over")


# -- what a run folder may replace -----------------------------------------------------------------------
def is_finished_run(path: Path) -> bool:
    """A folder saebasis wrote as a finished run: cfg.json (a method and its width) + intervention.safetensors."""
    path = Path(path)
    if not (path / CFG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        return False
    try:
        cfg = json.loads((path / CFG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "method" in cfg and "d_model" in cfg


def foreign_entries(path: Path) -> list[str]:
    """Entries of a folder that a saebasis run folder never holds."""
    own = {CFG_FILE, WEIGHTS_FILE, METRICS_FILE, *RUN_EXTRAS}
    return sorted(name + ("/" if (Path(path) / name).is_dir() else "") for name in os.listdir(path) if name not in own)


def check_replaceable(path: Path) -> None:
    """`path` is free, an empty folder, or a finished saebasis run (nothing else of the user's inside)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise FileExistsError(
            f"run_dir {path} is an existing file, not a run folder: saebasis never replaces it. Pick a "
            f"new run_dir (a folder that does not exist yet)."
        )
    if not os.listdir(path):
        return
    foreign = foreign_entries(path)
    if not is_finished_run(path) or foreign:
        shown = ", ".join((foreign or sorted(os.listdir(path)))[:6])
        raise FileExistsError(
            f"run_dir {path} already exists and is not a saebasis run folder (it holds {shown}): "
            "a run folder only ever "
            f"replaces a finished saebasis run (cfg.json + {WEIGHTS_FILE} + {METRICS_FILE}), "
            "so nothing in it was touched. "
            f"Pick a new run_dir, or move those files away."
        )


def check_run_dir(run_dir: Path, overwrite: bool = False, resume: bool = False) -> str:
    """Before any work: what a run into `run_dir` may do. Returns "new" (nothing there, or an empty folder),
    "replace" (a finished run, overwrite=true) or "finished" (a finished run, resume=true: left alone).
    Refuses a file, a folder saebasis did not write, and a finished run without overwrite / resume."""
    run_dir = Path(run_dir)
    check_replaceable(run_dir)
    if not run_dir.exists() or not os.listdir(run_dir):
        return "new"
    if resume:
        return "finished"
    if not overwrite:
        raise FileExistsError(
            f"{run_dir} already holds a finished run. Use a new run_dir, or overwrite=true to replace it."
        )
    return "replace"


# -- disk space ---------------------------------------------------------------------------------------------
def free_bytes(path: Path) -> int:
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def check_free_space(folder: Path, needed: int = MIN_FREE_BYTES) -> None:
    free = free_bytes(folder)
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"Only {_mb(free)} free on the disk of {folder}; a run needs at least {_mb(needed)} "
            f"(weights, checkpoints, logs). Free at least {_mb(needed - free)} there, or pick a run_dir on "
            f"another disk. Nothing was started.",
        )


def _is_disk_full(err: BaseException) -> bool:
    text = str(err)
    return getattr(err, "errno", None) == errno.ENOSPC or "No space left" in text or "StorageFull" in text


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


@contextmanager
def disk_full_explained(target: Path, tmp: Path | None = None, needed: int | None = None) -> Iterator[None]:
    """A full disk while writing `target` becomes one clear OSError naming the space needed and free."""
    try:
        yield
    except (OSError, SafetensorError, RuntimeError) as err:
        if not _is_disk_full(err):
            raise
        written = folder_bytes(tmp) if tmp is not None and Path(tmp).exists() else 0
        need = max(needed or 0, written, 1)
        kept = (
            f" The previous run in {target} is kept unchanged." if Path(target).is_dir() and os.listdir(target) else ""
        )
        raise OSError(
            errno.ENOSPC,
            f"The disk of {Path(target).parent} is full ({_mb(free_bytes(Path(target).parent))} "
            f"free) while writing {target}: it needs at least {_mb(need)} more. Free space there (or pick a "
            f"run_dir on another disk) and run again.{kept}",
        ) from None


# -- one writer at a time ------------------------------------------------------------------------------------
def ddp_worker() -> bool:
    """A DDP process other than rank 0 (which alone checks, locks and writes the run folder)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


STALE_EMPTY_S = 30.0
"""An empty lock older than this is stale: its writer died between creating it and writing its pid."""


def _take_lock(lock: Path, run_dir: Path) -> None:
    """Create `lock` holding this pid; a dead writer's lock is taken over; a live or unreadable one refused."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        owner = lock.read_text().strip() if lock.exists() else ""
        pid = owner.split()[0] if owner else ""
        host = owner.split()[1] if len(owner.split()) > 1 else socket.gethostname()  # older locks: this host
        if pid.isdigit() and host != socket.gethostname():
            raise RuntimeError(
                f"{run_dir} is being written by process {pid} on host {host} ({lock}): a shared folder is never taken "
                f"over from another machine. Wait for it, or clear it with `rm '{lock}'` if nothing runs there."
            ) from None
        if pid.isdigit() and not _pid_alive(int(pid)):
            print(f"[saebasis] {lock} was left by process {pid}, which is no longer running: taken over.")
            lock.unlink(missing_ok=True)
            return _take_lock(lock, run_dir)
        if not pid.isdigit() and time.time() - lock.stat().st_mtime > STALE_EMPTY_S:
            raise RuntimeError(
                f"{lock} is a stale lock: it is {'empty' if not owner else 'unreadable'} "
                "(its writer died before recording "
                f"its pid, e.g. on a full disk), so no saebasis process holds {run_dir}. "
                f"Clear it with `rm '{lock}'` and "
                f"run again."
            ) from None
        raise RuntimeError(
            f"{run_dir} is being written by another process (pid {pid or '?'}, {lock}). Wait for it, or use another "
            f"run_dir. If no saebasis process is running there (the pid was reused), clear it with `rm '{lock}'`."
        ) from None
    try:
        os.write(fd, f"{os.getpid()} {socket.gethostname()}".encode())  # the host: locks on a shared filesystem
    except OSError as err:
        os.close(fd)
        lock.unlink(missing_ok=True)  # never leave an empty lock behind
        if _is_disk_full(err):
            raise OSError(
                errno.ENOSPC,
                f"The disk of {lock.parent} is full ({_mb(free_bytes(lock.parent))} free): a run "
                f"needs at least {_mb(MIN_FREE_BYTES)}. Free space there, or pick a run_dir on another disk. "
                f"Nothing was started.",
            ) from None
        raise
    os.close(fd)


@contextmanager
def run_guard(run_dir: str | Path, overwrite: bool = False, resume: bool = False) -> Iterator[Path]:
    """Hold `<run_dir>.lock` while a run is produced: a second writer fails at once with a clear message, a
    folder saebasis did not write (or a file) is refused, a finished run is not overwritten unless `overwrite`,
    and the parent folder must be writable (with room) up front."""
    run_dir = Path(run_dir)
    if ddp_worker():
        yield run_dir  # a DDP worker: rank 0 holds the lock and writes the run
        return
    parent = run_dir.parent
    check_writable(parent, "run_dir")
    check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    check_free_space(parent)
    lock = run_dir.with_name(f"{run_dir.name}.lock")
    _take_lock(lock, run_dir)
    try:
        yield run_dir
    finally:
        lock.unlink(missing_ok=True)


def check_writable(folder: str | Path, field: str = "out_dir") -> Path:
    """`folder` (created if missing) accepts new files: checked before any work, named by its config field."""
    folder = Path(folder)
    what = "training" if field == "run_dir" else "any work starts"
    if folder.exists() and not folder.is_dir():
        raise PermissionError(
            f"Cannot write to {folder} (it is a file, not a folder): pick a writable {field} before {what}."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkstemp(dir=folder, prefix=".write-test-")[1])
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"Cannot write to {folder} ({err.strerror}): pick a writable {field} before {what}."
        ) from err
    return folder


# -- checkpoints: one run's at a time, resume picks the newest of the run in progress ------------------------
class TrainPlan(NamedTuple):
    """What a training into run_dir does, decided before any work (plan_training)."""

    mode: str  # "new" | "replace" | "resume" | "finished" (resume=true on a finished run: left alone)
    resume_from: Path | None  # the checkpoint to continue (mode "resume")
    run_id: str  # recorded in ckpt_dir/run.json and in every checkpoint
    message: str = ""


def read_record(ckpt_dir: Path) -> dict:
    try:
        record = json.loads((Path(ckpt_dir) / CKPT_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    ckpt_dir = Path(ckpt_dir)
    return sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []


def checkpoint_record(cfg: dict, run_id: str) -> dict:
    """What every checkpoint records (a Lightning callback adds it): the config fingerprint, the run id, the time."""
    return {"saebasis_config": fingerprint(cfg), "saebasis_run": {"id": run_id, "time": time.time()}}


def _load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} cannot be loaded as a weights-only checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}). It is truncated, corrupt or not a saebasis checkpoint: delete "
            f"it to train from scratch."
        ) from err
    return ckpt if isinstance(ckpt, dict) else {}


def newest_checkpoint(ckpt_dir: Path, run_id: str | None = None) -> tuple[Path, dict] | None:
    """The newest checkpoint of run `run_id` (any run when None) by its recorded time (then its step, then the
    file's time) -- never by file name: Lightning's `last-v1.ckpt` may be newer than `last.ckpt`."""
    found = []
    for path in checkpoint_files(ckpt_dir):
        ckpt = _load_checkpoint(path)
        rec = ckpt.get("saebasis_run") if isinstance(ckpt.get("saebasis_run"), dict) else {}
        if run_id is not None and rec.get("id") not in (None, run_id):
            continue  # a checkpoint of another run
        found.append(((rec.get("time") or 0.0, int(ckpt.get("global_step") or 0), path.stat().st_mtime), path, ckpt))
    if not found:
        return None
    _, path, ckpt = max(found, key=lambda f: f[0])
    return path, ckpt


def _finished_config(run_dir: Path) -> dict:
    try:
        config = json.loads((Path(run_dir) / CFG_FILE).read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return {}
    return config if isinstance(config, dict) else {}


def _finished_fingerprint(run_dir: Path) -> str | None:
    config = _finished_config(run_dir)
    return fingerprint(config) if config else None


def _limit(value: Any) -> float:
    return float("inf") if value is None or value == -1 else float(value)


def trains_further(cfg: dict, saved: dict, steps: int | None) -> bool:
    """resume=true on a finished run continues it only when the trainer limits now allow more steps than it ran
    (e.g. trainer.max_epochs raised from 1 to 2); the same or lower limits leave it alone."""
    new, old = cfg.get("trainer") or {}, saved.get("trainer") or {}
    if steps is None or not old:
        return False
    more_epochs = _limit(new.get("max_epochs")) > _limit(old.get("max_epochs"))
    more_steps = _limit(new.get("max_steps")) > _limit(old.get("max_steps"))
    return _limit(new.get("max_steps")) > steps and (more_epochs or more_steps)


def _other_config(what: Path, recorded: str | None, cfg: dict, fix: str) -> ValueError:
    return ValueError(
        f"{what} belongs to another configuration (its fingerprint {recorded} != {fingerprint(cfg)} of this "
        f"one: method, data, seed, model, SAE, hook or optimisation differ). Resume with the same config, "
        f"or {fix}."
    )


def plan_training(cfg: dict) -> TrainPlan:
    """Before any work, decide what training into cfg.run_dir (checkpoints in cfg.ckpt_dir) does:
    - resume=true on a finished run with no later unfinished attempt: "finished" (leave it alone, say so), unless
      the trainer limits now allow more steps (then it continues from its newest checkpoint);
    - resume=true otherwise: the newest checkpoint of the run in progress ("resume"), checked weights-only and
      against this config; none at all is refused (a typo in run_dir?);
    - no resume: "new" or "replace" (overwrite=true); checkpoints of an unfinished run are refused unless
      overwrite=true (then cleared by start_checkpoints: names never collide with an older run's)."""
    run_dir, ckpt_dir = Path(cfg["run_dir"]), Path(cfg["ckpt_dir"])
    resume, overwrite = bool(cfg.get("resume")), bool(cfg.get("overwrite"))
    if ddp_worker():  # rank 0 decided (and cleared / recorded) already: follow its run
        record = read_record(ckpt_dir)
        newest = newest_checkpoint(ckpt_dir, record.get("run_id")) if resume else None
        return TrainPlan("resume" if newest else "new", newest[0] if newest else None, record.get("run_id", ""))
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise FileExistsError(f"ckpt_dir {ckpt_dir} is a file, not a folder. Pick another ckpt_dir (or leave it null).")
    state = check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    record, files = read_record(ckpt_dir), checkpoint_files(ckpt_dir)
    if resume:
        finished_at = (run_dir / CFG_FILE).stat().st_mtime if state == "finished" else None
        started = record.get("started") or max((f.stat().st_mtime for f in files), default=0.0)  # no record: older code
        later = bool(files) and finished_at is not None and started > finished_at  # an overwrite=true run since, killed
        if state == "finished" and not later:
            saved = _finished_fingerprint(run_dir)
            if saved is not None and saved != fingerprint(cfg):
                raise _other_config(
                    run_dir, saved, cfg, "use a new run_dir / overwrite=true (without resume) to start over"
                )
            steps = (read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else {}).get("steps")
            if not trains_further(cfg, _finished_config(run_dir), steps):
                return TrainPlan(
                    "finished",
                    None,
                    record.get("run_id", ""),
                    (
                        f"[saebasis] {run_dir} already holds a finished run"
                        f"{f' ({steps} steps)' if steps is not None else ''}: "
                        "resume=true leaves it as it is. To train again, "
                        "use overwrite=true without resume, or a new run_dir."
                    ),
                )
            if not files:
                raise FileNotFoundError(
                    f"resume=true with larger trainer limits continues the finished run in {run_dir} "
                    f"from its checkpoints, but {ckpt_dir} holds none. Use overwrite=true (without "
                    f"resume) to train it again from scratch."
                )
        newest = newest_checkpoint(ckpt_dir, record.get("run_id"))
        if newest is None:
            raise FileNotFoundError(
                f"resume=true but {ckpt_dir} does not exist or holds no checkpoint (run_dir={run_dir}). "
                "Check run_dir for "
                f"a typo, or drop resume=true to train from scratch."
            )
        path, ckpt = newest
        if ckpt.get("saebasis_config") != fingerprint(cfg):
            raise _other_config(
                path,
                ckpt.get("saebasis_config"),
                cfg,
                f"use a new run_dir / overwrite=true (without resume) to start over (this clears {ckpt_dir})",
            )
        return TrainPlan("resume", path, record.get("run_id") or uuid.uuid4().hex)
    if files and state == "new" and not overwrite:
        newest = newest_checkpoint(ckpt_dir)
        step = int(newest[1].get("global_step") or 0) if newest else 0
        raise FileExistsError(
            f"{ckpt_dir} holds the checkpoint of an unfinished run (step {step}). "
            "resume=true continues it; overwrite=true "
            f"starts over and deletes it; or pick a new run_dir."
        )
    return TrainPlan(state, None, uuid.uuid4().hex)


def start_checkpoints(cfg: dict, plan: TrainPlan) -> None:
    """Inside the run's lock, as training starts: a fresh run clears the checkpoint folder's old checkpoints (an
    overwritten run's: names never collide) and records its id and start time in ckpt_dir/run.json."""
    ckpt_dir = Path(cfg["ckpt_dir"])
    if ddp_worker() or (plan.mode in ("finished", "resume") and read_record(ckpt_dir)):
        return
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if plan.mode != "resume":
        for path in checkpoint_files(ckpt_dir):
            path.unlink()
    _write_json(
        ckpt_dir / CKPT_RECORD,
        {
            "run_id": plan.run_id,
            "fingerprint": fingerprint(cfg),
            "started": time.time(),
            "run_dir": str(cfg["run_dir"]),
        },
    )


# -- divergence, relative to the residual stream ---------------------------------------------------------------
DIVERGED_RATIO = 100.0
"""A trained intervention that moves the residual by more than this many times its own norm (strength 1) diverged."""


def residual_change_ratio(intervention: Intervention, stack, prompts: list[str], max_len: int = 64) -> float:
    """Median over tokens of |h'(last block) - h(last block)| / |h(last block)| with the intervention at strength 1:
    how far it moves the residual stream, relative to the stream's own norm (any method, any hook)."""
    from saebasis.core import hooks

    texts = [p for p in prompts if p][:8] or ["The"]
    batch = stack.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_len)
    device = next(stack.model.parameters()).device
    inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
    last = f"blocks.{len(hooks.blocks(stack.model)) - 1}.hook_resid_post"
    with torch.no_grad():
        base = hooks.run_to_hook(stack.model, last, **inputs).float()  # [batch, pos, d_model]
        with hooks.steering(stack.model, stack.hook, intervention, 1.0):
            steered = hooks.run_to_hook(stack.model, last, **inputs).float()
    mask = inputs["attention_mask"].bool()
    change = (steered - base).norm(dim=-1)[mask]  # [tokens]
    norm = base.norm(dim=-1)[mask].clamp_min(1e-6)
    ratio = change / norm
    return float("inf") if not bool(torch.isfinite(ratio).all()) else float(ratio.median())


def check_scale(intervention: Intervention, stack, prompts: list[str], max_len: int = 64) -> float:
    """Refuse (before saving) an intervention that moves the residual far beyond its norm: training diverged even
    if every weight is finite (lr=1e11, init_std=1e6). Returns the ratio."""
    check_finite(intervention)
    ratio = residual_change_ratio(intervention, stack, prompts, max_len)
    if not ratio <= DIVERGED_RATIO:
        raise ValueError(
            f"The trained '{intervention.method}' moves the residual stream by {ratio:.3g}x its own norm at strength 1 "
            f"(a working steering moves it by well under {DIVERGED_RATIO:g}x): "
            "training diverged (lr or the init scale too "
            f"large). Nothing was saved; lower lr / init_std and train again."
        )
    return ratio


__all__ = [
    "Run",
    "atomic_dir",
    "check_checkpoint",
    "check_finite",
    "check_run_dir",
    "check_scale",
    "check_writable",
    "fingerprint",
    "load_run",
    "newest_checkpoint",
    "plan_training",
    "run_guard",
    "save_run",
    "start_checkpoints",
]
