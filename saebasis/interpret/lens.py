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

from saebasis.interventions.latent_effect import FINAL_NORMS, final_norm, through_norm  # noqa: F401 (re-exported)


def norm_note(model: nn.Module) -> str:
    norm, path = final_norm(model)
    if norm is None:
        return "no final norm found: logits = W_dec[i] W_U^T"
    kind = "LayerNorm (centred, x weight)" if isinstance(norm, nn.LayerNorm) else f"{type(norm).__name__} (x weight)"
    return (
        f"logits = N(W_dec[i]) W_U^T with N the linear part of the final norm `{path}`: {kind}; "
        "its 1/rms scale is left out (it cannot reorder tokens)"
    )


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
