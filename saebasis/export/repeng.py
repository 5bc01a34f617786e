"""repeng's `ControlVector`: its own file format is the llama.cpp control-vector GGUF (`export_gguf` /
`import_gguf`), directions[k] added to the output of decoder block k by `ControlModel(model, [k])`:

    from saebasis.export.repeng import load_control_vector
    vector = load_control_vector("steer.gguf")
    controlled = repeng.ControlModel(model, list(vector.directions)); controlled.set_control(vector, coeff=1.0)

The file holds the shift at the exported strength: coeff 1 reproduces saebasis; coeff c scales it. Unlike
llama.cpp, repeng also steers block 0's output (direction.0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from saebasis.export.gguf_file import write_gguf
from saebasis.export.vector import ExportVector


def require_repeng():
    """repeng 0.4.0 (installed with --no-deps by scripts/setup_peers.sh). It names numpy.float_ in a signature,
    an alias numpy 2 removed; it is restored as numpy.float64 (what it always was) before the import."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # the alias numpy < 2 had; repeng 0.4.0 reads it at import time
    try:
        import repeng
    except ImportError as err:
        raise ImportError(
            "format=repeng is read by repeng: bash scripts/setup_peers.sh (pip install --no-deps repeng==0.4.0)."
        ) from err
    return repeng


def write_control_vector(ev: ExportVector, path: str | Path) -> Path:
    return write_gguf(ev, path, for_llamacpp=False)


def load_control_vector(path: str | Path):
    """The file as a repeng.ControlVector (needs repeng installed)."""
    return require_repeng().ControlVector.import_gguf(str(path))
