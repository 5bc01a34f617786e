"""`export(...)` (the Python API) and `saebasis export` (the CLI): one writer per format."""

from __future__ import annotations

import json
from pathlib import Path

from saebasis.config import to_dict
from saebasis.export.gguf_file import write_gguf
from saebasis.export.lm_eval_file import write_lm_eval
from saebasis.export.peft_adapter import write_peft
from saebasis.export.repeng import write_control_vector
from saebasis.export.steering_vectors import write_steering_vector
from saebasis.export.vector import ExportVector, export_vector, resolve_source
from saebasis.interventions.base import Intervention, check_strength
from saebasis.runs import Run

WRITERS = {
    "gguf": write_gguf,
    "steering-vectors": write_steering_vector,
    "repeng": write_control_vector,
    "lm-eval": write_lm_eval,
}
FORMATS = (*WRITERS, "peft")
"""The vector formats, then peft (a LoRA run's adapter folder)."""
SUFFIX = {"gguf": ".gguf", "steering-vectors": ".safetensors", "repeng": ".gguf", "lm-eval": ".pt", "peft": ""}


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"Unknown export format '{format}'. Choose one of: {', '.join(FORMATS)}.")
    return format


def export(
    source: Run | Intervention | str | Path,
    path: str | Path,
    format: str = "gguf",
    strength: float = 1.0,
    hook: str | None = None,
) -> Path:
    """Write `source` (a run folder, a loaded Run, or an Intervention with its `hook`) at `strength` in `format`.

    Refuses (ValueError with the reason) a method that does not fold to one residual vector (format=peft: a
    method that is no LoRA adapter)."""
    check_format(format)
    if format == "peft":
        return write_peft(resolve_source(source, hook), check_strength(strength), path)
    ev = export_vector(source, strength, hook)
    return WRITERS[format](ev, path)


def describe(ev: ExportVector, format: str, path: Path) -> dict:
    return {
        "path": str(path),
        "format": format,
        "method": ev.method,
        "hook": ev.hook,
        "layer": ev.layer,
        "strength": ev.strength,
        "norm": round(float(ev.vector.norm()), 6),
        "d_model": int(ev.vector.numel()),
    }


def export_command(cfg) -> dict:
    """saebasis export run=<dir> format=<f> out=<path> strength=<s> (out null: <run>/export/steer-<s>.<suffix>)."""
    cfg = to_dict(cfg)
    if not cfg.get("run"):
        raise ValueError("Give the run folder: saebasis export run=<dir> format=gguf out=steer.gguf strength=1.0.")
    format = check_format(str(cfg.get("format")))
    if format == "peft":
        strength = check_strength(cfg.get("strength", 1.0))
        out = Path(cfg.get("out") or Path(cfg["run"]) / "export" / f"peft-{strength:g}")
        path = write_peft(resolve_source(cfg["run"]), strength, out)
        info = {"path": str(path), "format": format, "strength": strength}
        print(json.dumps(info, indent=2))
        return info
    ev = export_vector(cfg["run"], cfg.get("strength", 1.0))
    out = Path(cfg.get("out") or Path(cfg["run"]) / "export" / f"steer-{ev.strength:g}{SUFFIX[format]}")
    path = WRITERS[format](ev, out)
    info = describe(ev, format, path)
    print(json.dumps(info, indent=2))
    return info
