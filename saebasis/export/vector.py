"""What every export format carries: one residual vector added at the output of one decoder block.

A method exports when it folds (`Intervention.folded_shift(strength)` is a vector): h' = h + v at every token.
saebasis names residuals by TransformerLens hooks; the engines name the decoder block whose *output* gets v:

    saebasis hook                  block-output index k     llama.cpp GGUF      steering-vectors         repeng
    blocks.L.hook_resid_post       k = L                    direction.k         layer k (decoder_block)  directions[k]
    blocks.L.hook_resid_pre        k = L - 1 (L >= 1)       direction.k         layer k (decoder_block)  directions[k]

(lm-evaluation-harness' `steered` model: hookpoint "layers.k", the block's module name under model.base_model.)
blocks.0.hook_resid_pre is the embeddings, which no engine steers. llama.cpp also has no slot for k = 0: its loader
rejects direction.0 and puts direction.k in the buffer of layer k, added to that layer's output `l_out` (llama.cpp
common.cpp `common_control_vector_load_one`, src/llama-adapter.cpp `llama_adapter_cvec::apply`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import AutoConfig

from saebasis.core import hooks
from saebasis.core.models import EMBEDDED_NAMES, embedded_model_dir, tiny_config
from saebasis.interventions.base import Intervention, check_strength
from saebasis.runs import Run, load_run


class ExportVector(NamedTuple):
    vector: Float[Tensor, " d_model"]
    """The residual shift at `strength` (float32, CPU): engines at their own scale 1 reproduce saebasis."""
    layer: int
    """Block-output index k: v is added to the output of decoder block k (0-based)."""
    hook: str
    strength: float
    method: str
    model_type: str | None
    """The model family (config.model_type, e.g. llama) when known: repeng's model_hint."""
    n_layers: int | None
    """The model's number of decoder blocks when known (checks the layer fits)."""


def block_output_index(hook: str) -> int:
    """blocks.L.hook_resid_post -> L; blocks.L.hook_resid_pre -> L - 1 (the output of the block before L)."""
    point = hooks.parse_hook(hook)
    index = point.layer if point.kind == "post" else point.layer - 1
    if index < 0:
        raise ValueError(
            f"'{hook}' is the embeddings (the input of block 0): the engines add control vectors to a "
            "decoder block's output only. Export a run at a later hook (e.g. blocks.1.hook_resid_pre)."
        )
    return index


def llamacpp_layer(ev: ExportVector) -> int:
    """llama.cpp's direction.<k> index for the vector (k = block-output index, 1 <= k <= n_layers - 1)."""
    if ev.layer == 0:
        raise ValueError(
            f"'{ev.hook}' is block 0's output, which llama.cpp control vectors cannot reach (its loader "
            "rejects direction.0). Use format=steering-vectors | repeng | lm-eval, or a later hook."
        )
    return ev.layer


def model_info(model_cfg: dict | None) -> tuple[str | None, int | None]:
    """(model_type, n_layers) of a run's model, read from its config only (no weights loaded); (None, None)
    when the model is a hub id this machine does not have."""
    name = str((model_cfg or {}).get("name", "smollm2"))
    config = tiny_config(name)
    if config is None:
        path = embedded_model_dir() if name.lower() in EMBEDDED_NAMES else Path(name)
        if not Path(path).is_dir():
            return None, None
        config = AutoConfig.from_pretrained(path)
    return config.model_type, config.num_hidden_layers


class Source(NamedTuple):
    intervention: Intervention
    hook: str
    model_type: str | None
    n_layers: int | None


def resolve_source(
    source: Run | Intervention | str | Path,
    hook: str | None = None,
    model_type: str | None = None,
    n_layers: int | None = None,
) -> Source:
    """The intervention, its hook and (when known) its model's family and depth, from a run folder, a loaded
    `Run`, or an intervention (then give `hook`)."""
    if isinstance(source, (str, Path)):
        source = load_run(source)
    if isinstance(source, Run):
        hook = hook or source.cfg.get("hook")
        if model_type is None and n_layers is None:
            model_type, n_layers = model_info(source.cfg.get("model"))
        source = source.intervention
    if not isinstance(source, Intervention):
        raise TypeError(f"export needs a run folder, a saebasis Run or an Intervention, got {type(source).__name__}.")
    if not hook:
        raise ValueError(
            "export of an intervention needs its hook, e.g. hook='blocks.12.hook_resid_pre' "
            "(a run folder records it in cfg.json)."
        )
    hooks.parse_hook(hook)
    return Source(source, hook, model_type, n_layers)


def export_vector(
    source: Run | Intervention | str | Path,
    strength: float = 1.0,
    hook: str | None = None,
    model_type: str | None = None,
    n_layers: int | None = None,
) -> ExportVector:
    """The vector to export from a run folder, a loaded `Run`, or an intervention (then give `hook`)."""
    strength = check_strength(strength)
    iv, hook, model_type, n_layers = resolve_source(source, hook, model_type, n_layers)
    layer = block_output_index(hook)
    if n_layers is not None and layer >= n_layers:
        raise ValueError(
            f"'{hook}' is block {layer}'s output, but the model has {n_layers} blocks (0..{n_layers - 1})."
        )
    shift = iv.folded_shift(strength)
    if shift is None:
        raise ValueError(f"Cannot export: {iv.unfolded_reason()}")
    vector = shift.detach().to("cpu", torch.float32).contiguous()  # [d_model]
    if not bool(torch.isfinite(vector).all()):
        raise ValueError(f"'{iv.method}' folds to a vector with NaN / inf entries; the run is corrupt.")
    return ExportVector(vector, layer, hook, strength, iv.method, model_type, n_layers)
