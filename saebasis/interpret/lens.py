"""Logit lens of a decoder direction: which output tokens latent i promotes and suppresses.

logits_i = W_U (N(W_dec[i])), W_U the unembedding [vocab, d_model], N the linear part of the final norm:
  RMSNorm (Llama, Qwen, Mistral, ...)  d * weight
  Gemma's RMSNorm                     d * (1 + weight)
  LayerNorm (GPT-2, GPT-NeoX)          (d - mean(d)) * weight   (centring is linear; the bias is the same for
                                                                 every direction, so it is left out)
The norm's data-dependent 1 / rms(x) is a positive scalar for a given token: it rescales every logit alike
and cannot change which tokens rank highest, so it is left out. Models with no final norm use d as is.
Applying the per-channel weight matters: a weight vector far from 1 would otherwise reorder the tokens.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_layernorm", "model.decoder.final_layer_norm")


def final_norm(model: nn.Module) -> tuple[nn.Module | None, str]:
    """The final norm module and its dotted path (None, "" when the model has none)."""
    for path in FINAL_NORMS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.Module):
            return obj, path
    return None, ""


def through_norm(model: nn.Module, d: Float[Tensor, "*n d_model"]) -> Float[Tensor, "*n d_model"]:
    """The linear part of the final norm applied to direction(s) d (see the module docstring)."""
    norm, _ = final_norm(model)
    if norm is None:
        return d
    if isinstance(norm, nn.LayerNorm):
        d = d - d.mean(-1, keepdim=True)
    weight = getattr(norm, "weight", None)
    if weight is None:
        return d
    weight = weight.detach().float()
    if getattr(model.config, "model_type", "").startswith("gemma"):
        weight = 1 + weight  # Gemma stores the RMSNorm scale as an offset from 1
    return d * weight


def norm_note(model: nn.Module) -> str:
    norm, path = final_norm(model)
    if norm is None:
        return "no final norm found: logits = W_dec[i] W_U^T"
    kind = "LayerNorm (centred, x weight)" if isinstance(norm, nn.LayerNorm) else f"{type(norm).__name__} (x weight)"
    return f"logits = N(W_dec[i]) W_U^T with N the linear part of the final norm `{path}`: {kind}; its 1/rms scale is left out (it cannot reorder tokens)"


@torch.no_grad()
def logit_lens(model: nn.Module, tokenizer, direction: Float[Tensor, " d_model"], k: int = 8) -> dict[str, list]:
    """Top-k promoted / suppressed tokens of one residual direction, with their logits."""
    W_U = model.get_output_embeddings().weight.detach().float()  # [vocab, d_model]
    logits = W_U @ through_norm(model, direction.detach().float().to(W_U.device))  # [vocab]
    k = min(k, logits.numel())
    top, bottom = logits.topk(k), (-logits).topk(k)
    return {
        "promoted": [tokenizer.decode([i]) for i in top.indices.tolist()],
        "promoted_logits": top.values.tolist(),
        "suppressed": [tokenizer.decode([i]) for i in bottom.indices.tolist()],
        "suppressed_logits": (-bottom.values).tolist(),
    }
