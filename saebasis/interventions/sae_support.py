"""Choosing the read and write supports of SAE-basis methods before training (data-driven rules, run in `prepare`);
the weights of a support are sae_rows.py's.

Rules (each gives a [d_sae] score; a method keeps the k highest):
  contrast    |mean z over positive completions - mean z over negative completions|
  active      mean activation over every token the method steers
  gradient    |d/db (CE(positive) - CE(negative))| for a latent bias b at 0
  output      among the EFFECT_CANDIDATES latents of largest contrast, the output score (Arad et al. 2025,
              latent_effect.py); the others score -inf
  delta_conf  the same, by delta_conf (Wang et al. 2025)
The effect scores come from the SAE's shipped per-latent table when it holds them for this model and SAE, else they
are computed for the candidates only.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saebasis.interventions.latent_effect import effect_scores, stored_scores
from saebasis.interventions.sae_rows import (  # noqa: F401  (re-exported: the supports' weights)
    PER_LATENT,
    SupportCache,
    affine,
    architecture,
    read_latents,
    write_rows,
)

EFFECT_CANDIDATES = 256
"""Latents of largest contrast the effect rules (output, delta_conf) choose among."""


def _pair_texts(concept) -> tuple[list[str], list[str], list[str]]:
    return [p.prompt for p in concept.pairs], [p.positive for p in concept.pairs], [p.negative for p in concept.pairs]


@torch.no_grad()
def _mean_latents(stack, prompts, completions, positions: str, max_len: int) -> Float[Tensor, " d_sae"]:
    from saebasis.core.activations import collect

    acts = collect(
        stack.model,
        stack.tokenizer,
        stack.hook,
        prompts,
        completions,
        positions=positions,
        max_len=max_len,
        desc="support",
    )
    skip = 1 if positions == "all" else 0  # the attention sink (first token) is not what SAEs are trained on
    total = torch.zeros(stack.sae.d_sae, device=stack.sae.W_dec.device)
    n = 0
    for a in acts:  # one text at a time: memory stays [T, d_sae]
        z = stack.sae.encode(a[skip:].to(total.device))
        total += z.sum(0)
        n += z.shape[0]
    return total / max(1, n)


def contrast_scores(stack, concept, max_len: int) -> Float[Tensor, " d_sae"]:
    """|mean z over positive completions - mean z over negative completions|: latents that tell the concept apart."""
    prompts, pos, neg = _pair_texts(concept)
    return (
        _mean_latents(stack, prompts, pos, "completion", max_len)
        - _mean_latents(stack, prompts, neg, "completion", max_len)
    ).abs()


def active_scores(stack, concept, max_len: int) -> Float[Tensor, " d_sae"]:
    """Mean activation over every token the method steers (pair prompts + completions, neutral prompts)."""
    prompts, pos, _ = _pair_texts(concept)
    return _mean_latents(stack, prompts + list(concept.neutral), pos + [""] * len(concept.neutral), "all", max_len)


@torch.enable_grad()
def gradient_scores(stack, concept, max_len: int, batch_size: int = 8) -> Float[Tensor, " d_sae"]:
    """|d/db (CE(positive completion) - CE(negative completion))| at b = 0, for a latent bias b on every latent
    (h' = h + b W_eff): the latents whose write most lowers the positive and raises the negative completion's
    loss -- concept-specific, since a direction that helps any completion cancels."""
    from saebasis.core import hooks
    from saebasis.core.activations import encode_pairs, position_ids

    sae, device = stack.sae, stack.sae.W_dec.device
    W_eff = write_rows(sae, None, SupportCache())  # [d_sae, d_model]
    b = torch.zeros(sae.d_sae, device=device, requires_grad=True)
    grad = torch.zeros_like(b)
    prompts, pos, neg = _pair_texts(concept)
    for completions, sign in ((pos, 1.0), (neg, -1.0)):
        for start in range(0, len(prompts), batch_size):
            batch = encode_pairs(
                stack.tokenizer, prompts[start : start + batch_size], completions[start : start + batch_size], max_len
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            with hooks.attach(stack.model, stack.hook, lambda h: h + b @ W_eff):
                logits = stack.model(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    position_ids=position_ids(batch["attention_mask"]),
                    use_cache=False,
                ).logits
            labels = batch["input_ids"].masked_fill(~batch["completion_mask"], -100)  # [batch, pos]
            ce = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum"
            )
            grad += torch.autograd.grad(sign * ce / max(1, int(batch["completion_mask"].sum())), b)[
                0
            ]  # never touches the LM's .grad
    return grad.abs()


def _effect_rule(score: str):
    def rule(stack, concept, max_len: int) -> Float[Tensor, " d_sae"]:
        contrast = contrast_scores(stack, concept, max_len)  # [d_sae]
        cand = contrast.topk(min(EFFECT_CANDIDATES, contrast.numel())).indices.cpu()
        stored = stored_scores(stack.sae, stack.model)
        if stored is not None and score in stored:
            values = stored[score][cand].float()
        else:
            values = effect_scores(stack.model, stack.tokenizer, stack.sae, cand)[score].float()
        out = torch.full((contrast.numel(),), float("-inf"))
        out[cand] = values
        return out.to(contrast.device)

    rule.__doc__ = (
        f"{score} of the {EFFECT_CANDIDATES} latents of largest contrast (-inf elsewhere): the latents kept move the "
        "model's output most (latent_effect.py)."
    )
    return rule


RULES = {
    "contrast": contrast_scores,
    "active": active_scores,
    "gradient": gradient_scores,
    "output": _effect_rule("output_score"),
    "delta_conf": _effect_rule("delta_conf"),
}
EFFECT_RULES = ("output", "delta_conf")


def choose_support(stack, concept, max_len: int, k: int, rule: str) -> Int[Tensor, " k"]:
    """The k latents with the largest score under `rule` (sorted by latent index)."""
    scores = RULES[rule](stack, concept, max_len)
    return scores.topk(min(k, scores.numel())).indices.sort().values
