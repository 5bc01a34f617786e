"""llama.cpp control vector: a GGUF file of arch "controlvector" with one F32 tensor "direction.<k>" (as repeng's
`ControlVector.export_gguf` writes it), loaded by `llama-cli --control-vector FILE` (or
`--control-vector-scaled FILE:SCALE`) and by repeng's `ControlVector.import_gguf`.

The file holds the shift at the exported strength: llama.cpp at scale 1 adds exactly saebasis' shift; scale c
multiplies it (for a method linear in strength, c x the exported strength).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from saebasis.export.vector import ExportVector, llamacpp_layer

ARCH = "controlvector"


def write_gguf(ev: ExportVector, path: str | Path, for_llamacpp: bool = True) -> Path:
    """Write the control vector; for_llamacpp checks llama.cpp's layer range (k >= 1); repeng accepts k = 0."""
    layer = llamacpp_layer(ev) if for_llamacpp else ev.layer
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_string(f"{ARCH}.model_hint", ev.model_type or "unknown")
    writer.add_uint32(f"{ARCH}.layer_count", 1)
    writer.add_string("saebasis.method", ev.method)
    writer.add_string("saebasis.hook", ev.hook)
    writer.add_float32("saebasis.strength", float(ev.strength))
    writer.add_tensor(f"direction.{layer}", ev.vector.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_gguf(path: str | Path) -> dict[int, np.ndarray]:
    """{k: direction.k} of a control-vector GGUF (float32 [d_model] each)."""
    reader = gguf.GGUFReader(str(path))
    arch = reader.get_field("general.architecture")
    if arch is None or bytes(arch.parts[-1]).decode() != ARCH:
        raise ValueError(f"{path} is not a control-vector GGUF (general.architecture != '{ARCH}').")
    return {
        int(t.name.split(".", 1)[1]): np.array(t.data, dtype=np.float32)
        for t in reader.tensors
        if t.name.startswith("direction.")
    }
