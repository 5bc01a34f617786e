"""A saved run is a folder: `cfg.json` + `intervention.safetensors` + `metrics.json`.

Folders are written atomically (a temporary sibling, then one rename), so a crash mid-save never leaves
a half-written run that loads. Loading reads JSON and safetensors only: no pickle, no code execution.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from saebasis.interventions.base import Intervention, build
from saebasis.sae import SAEBasis

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
    spec = cfg.get("sae")
    if not spec:
        return None
    return SAEBasis.load(spec["path"], spec.get("sae_id"), hook=spec.get("hook"), device=device)


def load_run(path: str | Path, sae: SAEBasis | None = None, device: str = "cpu") -> Run:
    """Rebuild the intervention of a saved run; the SAE is loaded from cfg.json unless given."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"Run folder {path} does not exist. Train one with `saebasis train` first.")
    for name in os.listdir(path):
        if name.endswith((".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")) and name != WEIGHTS_FILE:
            raise ValueError(
                f"Refusing to load {path / name}: saebasis loads only safetensors / JSON / YAML, never pickles. "
                f"Remove the file or convert it to safetensors."
            )
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
    intervention.load_state_dict(state, strict=True)
    return Run(intervention.to(device), cfg, metrics, path)


def set_strength(intervention: Intervention, strength: float) -> Intervention:
    if not isinstance(strength, (int, float)) or strength != strength or strength in (float("inf"), float("-inf")):
        raise ValueError(f"strength must be a finite number, got {strength!r}.")
    intervention.strength = float(strength)
    return intervention


__all__ = ["Run", "save_run", "load_run", "set_strength", "atomic_dir"]
