"""lm-evaluation-harness' `steered` model (lm_eval >= 0.4.9, lm_eval/models/hf_steered.py) reads a torch file
{hookpoint: {"steering_vector", "steering_coefficient", "action", "bias", "head_index"}}; the hookpoint is a module
name under model.base_model, e.g. "layers.k" for a Llama (its forward hook adds coefficient x vector to the output):

    lm_eval --model steered --model_args pretrained=<hf folder>,steer_path=steer.pt --tasks saebasis_capability \
        --include_path <saebasis>/eval/capability_task

The file holds the shift at the exported strength with steering_coefficient 1.0 (lm_eval's own scale: a
coefficient c scales the shift). It is written with torch.save, the format lm_eval reads; saebasis itself never
loads it (it loads no pickles).
"""

from __future__ import annotations

from pathlib import Path

import torch

from saebasis.core.hooks import BLOCK_PATHS
from saebasis.export.vector import ExportVector

SUFFIXES = (".pt", ".pth")


def hookpoint(ev: ExportVector) -> str:
    """Decoder block k's module name under the HF model's base_model (model.layers.k -> layers.k)."""
    path = BLOCK_PATHS.get(ev.model_type or "llama", "model.layers")
    return f"{path.split('.', 1)[1] if '.' in path else path}.{ev.layer}"


def steer_config(ev: ExportVector) -> dict:
    return {
        hookpoint(ev): {
            "steering_vector": ev.vector.clone(),
            "steering_coefficient": 1.0,
            "action": "add",
            "bias": None,
            "head_index": None,
        }
    }


def write_lm_eval(ev: ExportVector, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(
            f"lm_eval's steered model reads a .pt / .pth steering file; got out={path}. Use e.g. out=steer.pt."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(steer_config(ev), path)
    return path
