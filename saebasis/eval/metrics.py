"""Per-example score, KL to the base model, A/B behaviour probability, parameter count, latent L0.

Every function here is a plain measurement on (model, intervention, data); the sweep / selection /
confidence-interval logic lives in `protocol.py` (re-exported here for older imports).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from saebasis.core import hooks
from saebasis.core.activations import chat_prefix, collect, encode_pairs, position_ids
from saebasis.eval.protocol import bootstrap_ci, choose_strength  # noqa: F401  (re-export)

L0_TOL = 1e-4
"""A latent counts as changed when |z'_i - z_i| > L0_TOL (SAE activations are O(1) or larger)."""


def harmonic_mean(*scores: float) -> float:
    """AxBench's per-example score: the harmonic mean of the judges' scores, 0 if any is 0."""
    if any(s <= 0 for s in scores):
        return 0.0
    return len(scores) / sum(1.0 / s for s in scores)


@torch.no_grad()
def kl_to_base(
    model,
    tokenizer,
    hook: str,
    intervention,
    prompts: Sequence[str],
    batch_size: int = 8,
    max_len: int = 96,
    strength: float = 1.0,
) -> float:
    """Mean over prompt tokens of KL(steered || base) of the next-token distributions on neutral prompts."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    batch_size = min(batch_size, intervention.max_batch or batch_size) if intervention is not None else batch_size
    for i in range(0, len(prompts), batch_size):
        batch = encode_pairs(tokenizer, prompts[i : i + batch_size], [""] * len(prompts[i : i + batch_size]), max_len)
        inputs = {
            "input_ids": batch["input_ids"].to(device),
            "attention_mask": batch["attention_mask"].to(device),
            "position_ids": position_ids(batch["attention_mask"]).to(device),
        }
        base = model(**inputs).logits.float().log_softmax(-1)  # [batch, pos, vocab]
        if intervention is not None:
            intervention.begin_generation(inputs["attention_mask"])
        with hooks.steering(model, hook, intervention, strength):
            steered = model(**inputs).logits.float().log_softmax(-1)
        kl = (steered.exp() * (steered - base)).sum(-1)  # [batch, pos]
        mask = inputs["attention_mask"].bool()
        total += float(kl[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1)


@torch.no_grad()
def ab_matching_prob(
    model, tokenizer, hook: str | None, intervention, items, system_prefix: str = "", strength: float = 1.0
) -> float:
    """CAA-style A/B behaviour score: mean over items of p(matching letter) / (p(A) + p(B)) for the first
    answer token after the question (chat template, then "("), with the intervention attached."""
    letters = [tokenizer(x, add_special_tokens=False)["input_ids"][-1] for x in ("(A", "(B")]
    device = next(model.parameters()).device
    probs = []
    for item in items:
        text = chat_prefix(tokenizer, system_prefix + item.question + "\nAnswer with (A) or (B).") + "("
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
        if intervention is not None:
            intervention.begin_generation(torch.ones_like(ids))
        with hooks.steering(model, hook, intervention, strength):
            logits = model(input_ids=ids).logits[0, -1].float()  # [vocab]
        p_a, p_b = logits[letters].softmax(-1).tolist()
        probs.append(p_a if item.matching.strip("() ") == "A" else p_b)
    return sum(probs) / max(1, len(probs))


def n_params(intervention) -> int:
    """Learned / fitted numbers the method stores: its parameters and persistent buffers (what its
    intervention.safetensors holds; a working mask such as sae_bias' alive_only support is not stored, and the
    frozen SAE is not counted)."""
    if intervention is None:
        return 0
    stored = sum(p.numel() for p in intervention.parameters())
    for module in intervention.modules():
        stored += sum(
            b.numel()
            for name, b in module._buffers.items()
            if b is not None and name not in module._non_persistent_buffers_set
        )
    return stored


def latent_change(
    intervention, sae, h: Float[Tensor, "T d_model"], strength: float = 1.0
) -> tuple[Float[Tensor, "T d_sae"], str]:
    """z' - z per token and how it was obtained (the intervention's own `latent_change`, see its contract)."""
    return intervention.latent_change(h, sae, strength)


@torch.no_grad()
def latent_l0(
    model, tokenizer, sae, hook: str, intervention, prompts: Sequence[str], strength: float = 1.0
) -> tuple[float, str]:
    """Mean number of SAE latents changed (|dz| > L0_TOL) per token of the neutral prompts (attention-sink
    token dropped), and the basis of the measurement; NaN when there is no SAE at the method's point."""
    if intervention is None or strength == 0:
        return 0.0, "none"
    if sae is None or not hooks.same_residual(hook, sae.hook):
        return float("nan"), "no SAE at this hook"
    counts = []
    for h in collect(model, tokenizer, hook, list(prompts), positions="all", desc="latent L0"):
        dz, basis = intervention.latent_change(h[1:].to(sae.W_dec.device), sae, strength)  # [T-1, d_sae]
        counts.append((dz.abs() > L0_TOL).sum(-1).float())
    return float(torch.cat(counts).mean()), basis
