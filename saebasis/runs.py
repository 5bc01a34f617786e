"""A saved run is a folder: `cfg.json` + `intervention.safetensors` + `metrics.json`.

Folders are written atomically (a temporary sibling, then one rename), so a crash mid-save never leaves
a half-written run that loads. Loading reads JSON and safetensors only: no pickle, no code execution.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import torch

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from saebasis.interventions.base import Intervention, build
from saebasis.core.sae import SAEBasis

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
"""Files saebasis never loads from a folder it reads (pickles can run code)."""
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "intervention.safetensors"
METRICS_FILE = "metrics.json"


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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
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

    def write(tmp: Path) -> None:
        save_file(tensors, tmp / WEIGHTS_FILE)
        _write_json(tmp / CFG_FILE, full_cfg)
        _write_json(tmp / METRICS_FILE, metrics or {})

    return atomic_dir(Path(path), write)


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing. Is {path.parent} a saebasis run folder (cfg.json + {WEIGHTS_FILE})?")
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
                f"Refusing to load {Path(folder) / name}: saebasis loads only safetensors / JSON / YAML, never pickles. "
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
            f"(d_model {cfg['d_model']}{'' if sae is None else f', d_sae {sae.d_sae}'}): {str(err).splitlines()[0]} ... "
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
            raise ValueError(f"The trained '{intervention.method}' has non-finite values in {name}: training diverged. "
                             f"Nothing was saved; lower lr or raise regularisation and train again.")
        if t.numel() and float(t.detach().abs().max()) > 1e12:
            raise ValueError(f"The trained '{intervention.method}' has |{name}| up to {float(t.detach().abs().max()):.3g}: training "
                             f"diverged (lr too large?). Nothing was saved; lower lr and train again.")


# -- run folders: one writer at a time, no silent overwrite, writable before any work ----------------
def fingerprint(cfg: dict) -> str:
    """A hash of what makes a training run what it is (not where it is saved or how long it runs)."""
    keys = ("intervention", "data", "seed", "model", "sae", "hook", "objective", "lr", "batch_size", "max_len",
            "max_pairs", "val_fraction", "kl_coef", "beta", "weight_decay")
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
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any failure here means the file cannot be trusted or read
        raise ValueError(f"{path} cannot be loaded as a weights-only checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}). It is truncated, corrupt or not a saebasis checkpoint: delete "
                         f"it to train from scratch.") from err
    recorded = ckpt.get("saebasis_config") if isinstance(ckpt, dict) else None
    if recorded != fingerprint(cfg):
        raise ValueError(
            f"{path} belongs to another configuration (its fingerprint {recorded} != {fingerprint(cfg)} of this one: "
            f"method, data, seed, model, SAE, hook or optimisation differ). Resume with the same config, or use a new "
            f"run_dir / delete {path.parent} to start over."
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_guard(run_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Hold `<run_dir>.lock` while a run is produced: a second writer fails at once with a clear message,
    a finished run is not overwritten unless `overwrite`, and the parent folder must be writable up front."""
    run_dir = Path(run_dir)
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        yield run_dir  # a DDP worker: rank 0 holds the lock and writes the run
        return
    parent = run_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkstemp(dir=parent, prefix=".write-test-")[1])
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"Cannot write to {parent} ({err.strerror}): pick a writable run_dir before training.") from err
    if (run_dir / WEIGHTS_FILE).exists() and not overwrite:
        raise FileExistsError(f"{run_dir} already holds a finished run. Use a new run_dir, or overwrite=true to replace it.")
    lock = run_dir.with_name(f"{run_dir.name}.lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        owner = lock.read_text().strip() if lock.exists() else ""
        if owner.isdigit() and not _pid_alive(int(owner)):
            lock.unlink(missing_ok=True)  # left by a killed process
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        else:
            raise RuntimeError(f"{run_dir} is being written by another process (pid {owner or '?'}, {lock}). Wait for it, "
                               f"or use another run_dir.") from None
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield run_dir
    finally:
        lock.unlink(missing_ok=True)


__all__ = ["Run", "save_run", "load_run", "atomic_dir", "check_finite", "check_checkpoint", "run_guard", "fingerprint"]
