"""A method that is a LoRA adapter (intervention=lora) exports as a peft adapter folder instead of a vector:
adapter_config.json + adapter_model.safetensors, loaded by `peft.PeftModel.from_pretrained(model, folder)`.
lora_alpha holds alpha x strength, so peft's scaling (lora_alpha / r) reproduces saebasis at that strength.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from saebasis.core.hooks import BLOCK_PATHS
from saebasis.export.vector import Source


def write_peft(source: Source, strength: float, path: str | Path) -> Path:
    blocks_path = BLOCK_PATHS.get(source.model_type or "llama", "model.layers")
    adapter = source.intervention.peft_adapter(source.hook, strength, blocks_path)
    if adapter is None:
        raise ValueError(
            f"Cannot export format=peft: '{source.intervention.method}' is not a LoRA adapter. A method "
            "that folds to one vector exports as gguf | steering-vectors | repeng | lm-eval."
        )
    config, tensors = adapter
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path
