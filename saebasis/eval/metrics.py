"""Per-example scores, confidence intervals, strength selection, and KL to the base model."""

from __future__ import annotations

import random
from typing import Sequence

import torch

from saebasis import hooks
from saebasis.activations import encode_pairs


def harmonic_mean(*scores: float) -> float:
    """AxBench's per-example score: the harmonic mean of the judges' scores, 0 if any is 0."""
    if any(s <= 0 for s in scores):
        return 0.0
    return len(scores) / sum(1.0 / s for s in scores)


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over examples."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return means[int(alpha / 2 * n_boot)], means[min(n_boot - 1, int((1 - alpha / 2) * n_boot))]


def choose_strength(val_scores: dict[float, float]) -> float:
    """The strength with the best mean validation score (ties -> the smallest |strength|)."""
    if not val_scores:
        raise ValueError("No validation scores to choose a strength from; give a non-empty strength grid.")
    return max(val_scores, key=lambda s: (val_scores[s], -abs(s)))


@torch.no_grad()
def kl_to_base(model, tokenizer, hook: str, intervention, prompts: Sequence[str], batch_size: int = 8, max_len: int = 96) -> float:
    """Mean over prompt tokens of KL(steered || base) of the next-token distributions on neutral prompts."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(prompts), batch_size):
        batch = encode_pairs(tokenizer, prompts[i : i + batch_size], [""] * len(prompts[i : i + batch_size]), max_len)
        inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
        base = model(**inputs).logits.float().log_softmax(-1)
        with hooks.attach(model, hook, intervention):
            steered = model(**inputs).logits.float().log_softmax(-1)
        kl = (steered.exp() * (steered - base)).sum(-1)  # [batch, pos]
        mask = inputs["attention_mask"].bool()
        total += float(kl[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1)


@torch.no_grad()
def ab_matching_prob(model, tokenizer, hook: str | None, intervention, items) -> float:
    """CAA-style A/B behaviour score: mean over items of p(matching letter) / (p(A) + p(B)) for the first
    answer token after the question (chat template, then "("), with the intervention attached."""
    from contextlib import nullcontext

    from saebasis.activations import chat_prefix

    letters = [tokenizer(x, add_special_tokens=False)["input_ids"][-1] for x in ("(A", "(B")]
    probs = []
    for item in items:
        text = chat_prefix(tokenizer, item.question + "\nAnswer with (A) or (B).") + "("
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ctx = hooks.attach(model, hook, intervention) if intervention is not None else nullcontext()
        with ctx:
            logits = model(input_ids=ids.to(next(model.parameters()).device)).logits[0, -1].float()
        p_a, p_b = logits[letters].softmax(-1).tolist()
        probs.append(p_a if item.matching.strip("() ") == "A" else p_b)
    return sum(probs) / max(1, len(probs))
