"""steering-vectors' `SteeringVector({k: v}, "decoder_block")`: v added to decoder block k's output.

steering-vectors has no file format of its own; saebasis writes a safetensors file (tensor "layer.<k>", metadata
layer_type) that `load_steering_vector(path)` turns into the library's object:

    from saebasis.export.steering_vectors import load_steering_vector
    with load_steering_vector("steer.safetensors").apply(model, multiplier=1.0): ...

The vector is the shift at the exported strength: multiplier 1 reproduces saebasis; multiplier c scales it.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from saebasis.export.vector import ExportVector

LAYER_TYPE = "decoder_block"


def require_steering_vectors():
    try:
        import steering_vectors
    except ImportError as err:
        raise ImportError(
            "format=steering-vectors is read by steering-vectors: bash scripts/setup_peers.sh "
            "(pip install --no-deps steering-vectors==0.12.2)."
        ) from err
    return steering_vectors


def write_steering_vector(ev: ExportVector, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "steering-vectors",
        "layer_type": LAYER_TYPE,
        "method": ev.method,
        "hook": ev.hook,
        "strength": repr(float(ev.strength)),
    }
    save_file({f"layer.{ev.layer}": ev.vector}, str(path), metadata=meta)
    return path


def load_steering_vector(path: str | Path):
    """The file as a steering_vectors.SteeringVector (needs steering-vectors installed)."""
    sv = require_steering_vectors()
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "steering-vectors":
            raise ValueError(f"{path} is not a saebasis steering-vectors export (metadata format != steering-vectors).")
        layers = {int(name.split(".", 1)[1]): f.get_tensor(name) for name in f.keys()}
    return sv.SteeringVector(layers, meta.get("layer_type", LAYER_TYPE))
