"""Fluency: perplexity under the UNSTEERED model times a repetition factor, in [0, 1].

    fluency = f_ppl * r
    f_ppl = clip((ln 1000 - ln ppl) / (ln 1000 - ln 2), 0, 1)      ppl <= 2 -> 1, ppl 45 -> 0.5, ppl >= 1000 -> 0
    r     = min(1, distinct2 / 0.9) ** 2                           distinct2 = unique word bigrams / word bigrams

ppl is the perplexity of the response given its chat-formatted instruction. Perplexity alone rewards loops
(a loop is very predictable: "the the the ..." has ppl 12 -> f_ppl 0.72), so the repetition factor r scales it
down by how many word bigrams (lower-cased words, punctuation dropped) repeat. Ordinary prose has
distinct2 >= 0.9 (every contrastive text the project ships: 0.91-1.0) and keeps r = 1; "a man who is a man who
is a man who is a man" has distinct2 4/13 -> r 0.117; "Your family, your culture, your family, your culture,
your family" 4/9 -> r 0.244. Fewer than two words: no bigram can repeat, r = 1. An empty response scores 0.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch

from saebasis.activations import encode_pairs
from saebasis.judges.registry import register_judge

PPL_BEST, PPL_WORST = 2.0, 1000.0
DISTINCT_OK, REPETITION_POWER = 0.9, 2.0
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def fluency_from_ppl(ppl: float) -> float:
    """f_ppl = clip((ln 1000 - ln ppl) / (ln 1000 - ln 2), 0, 1); 0 for an infinite (empty) perplexity."""
    if not math.isfinite(ppl):
        return 0.0
    return min(1.0, max(0.0, (math.log(PPL_WORST) - math.log(ppl)) / (math.log(PPL_WORST) - math.log(PPL_BEST))))


def words(text: str) -> list[str]:
    """Lower-cased words (letters/digits, an inner apostrophe kept), punctuation dropped."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def distinct_n(text: str, n: int = 2) -> float:
    """Unique word n-grams / word n-grams; 1.0 when the text has no n-gram."""
    w = words(text)
    grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def repetition_factor(text: str) -> float:
    """r = min(1, distinct2 / 0.9) ** 2: 1 for ordinary prose, -> 0 for loops."""
    return min(1.0, distinct_n(text, 2) / DISTINCT_OK) ** REPETITION_POWER


@torch.no_grad()
def perplexities(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 16, max_len: int = 256) -> list[float]:
    """Perplexity of each response given its (chat-formatted) prompt under `model` as it is (unsteered).
    Left padding puts every response at the end of its row, so the LM head runs only on the last
    (longest response + 1) positions: the prompt's logits are never needed (~20% of a fluency call on the
    embedded model: 14.0 -> 10.9 s for one compared method's calls)."""
    out: list[float] = []
    device = next(model.parameters()).device
    for i in range(0, len(prompts), batch_size):
        batch = encode_pairs(tokenizer, prompts[i : i + batch_size], responses[i : i + batch_size], max_len)
        keep = int(batch["completion_mask"].sum(1).max()) + 1  # the completion window and the position before it
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                       logits_to_keep=keep).logits  # [batch, keep, vocab]
        ids = batch["input_ids"][:, -keep:].to(device)
        logp = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]  # [batch, keep-1]
        mask = batch["completion_mask"][:, -keep:][:, 1:].to(device)
        nll = -(logp * mask).sum(1) / mask.sum(1).clamp_min(1)
        out += [math.exp(n) if m > 0 else float("inf") for n, m in zip(nll.tolist(), mask.sum(1).tolist())]
    return out


def fluency(ppl: float, text: str) -> float:
    """fluency = f_ppl(ppl) * repetition_factor(text); 0 for an empty text."""
    if not text.strip():
        return 0.0
    return fluency_from_ppl(ppl) * repetition_factor(text)


@register_judge("fluency", needs=("instructions", "model", "tokenizer"), role="quality")
def fluency_judge(texts: Sequence[str], instructions: Sequence[str], model, tokenizer) -> list[float]:
    """f_ppl(perplexity under the unsteered model) * min(1, distinct2 / 0.9) ** 2."""
    return [fluency(p, t) for p, t in zip(perplexities(model, tokenizer, instructions, texts), texts)]


def fluency_scores(model, tokenizer, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Positional form of the fluency judge (older call sites)."""
    return fluency_judge(responses, prompts, model, tokenizer)
