"""Capability kept under steering: accuracy on saebasis' own easy multiple-choice items (capability_task/items.jsonl:
general knowledge, arithmetic, reading), steered / unsteered, with a paired bootstrap CI.

Each choice is scored as lm-evaluation-harness scores a multiple-choice task (its `acc`): the summed log-likelihood
of " <choice>" after "Question: <question>\\nAnswer:", the continuation tokens being those of the whole text after
the context's. The steering is applied in-process (saebasis.core.hooks.steering, every token) so methods that do not
fold get the number too; for a folding method `lm_eval --model steered` on the exported file gives the same task
(capability_task/saebasis_capability.yaml, docs/export.md).

    from saebasis.eval.capability import capability_kept
    result = capability_kept(model, tokenizer, intervention, hook, strength)   # result.kept, result.ci
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from saebasis.core import hooks

ITEMS = Path(__file__).with_name("capability_task") / "items.jsonl"
CATEGORIES = ("knowledge", "arithmetic", "reading")


class Item(NamedTuple):
    question: str
    choices: list[str]
    answer: int
    category: str


class Capability(NamedTuple):
    kept: float
    """steered accuracy / unsteered accuracy."""
    ci: tuple[float, float]
    """95% paired bootstrap CI of `kept` (items resampled)."""
    steered: float
    unsteered: float
    n_items: int
    by_category: dict[str, tuple[float, float]]
    """category -> (unsteered, steered) accuracy."""


def load_items(path: str | Path | None = None) -> list[Item]:
    rows = [json.loads(line) for line in Path(path or ITEMS).read_text().splitlines() if line.strip()]
    items = [Item(r["question"], list(r["choices"]), int(r["answer"]), r.get("category", "")) for r in rows]
    for i, item in enumerate(items):
        if not 0 <= item.answer < len(item.choices):
            raise ValueError(
                f"item {i} of {path or ITEMS}: answer {item.answer} is not an index of its {len(item.choices)} choices."
            )
    return items


def context(item: Item, prefix: str = "") -> str:
    """The scored context; `prefix` (a prompting method's text) goes before it, as generation puts it before the
    user message."""
    return f"{prefix}Question: {item.question}\nAnswer:"


def select_items(items: list[Item], n: int | None) -> list[Item]:
    """The first `n` items taking the categories in turn (each in file order): a fixed subset with every category
    (`n` None or >= len(items): all of them)."""
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise ValueError(f"the number of capability items must be >= 1, got {n}.")
    by_cat: dict[str, list[Item]] = {}
    for item in items:
        by_cat.setdefault(item.category, []).append(item)
    queues = list(by_cat.values())
    out: list[Item] = []
    for i in range(max(map(len, queues))):
        out += [q[i] for q in queues if i < len(q)]
    return out[:n]


def encode_pair(tokenizer, ctx: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split: the whole text's tokens, the continuation being those after the context's own tokens."""
    whole = tokenizer(ctx + continuation, add_special_tokens=False)["input_ids"]
    ctx_ids = tokenizer(ctx, add_special_tokens=False)["input_ids"]
    return whole[: len(ctx_ids)], whole[len(ctx_ids) :]


@torch.no_grad()
def choice_logliks(
    model,
    tokenizer,
    items: list[Item],
    intervention=None,
    hook: str | None = None,
    strength: float = 1.0,
    batch_size: int = 16,
    prefix: str = "",
) -> list[Float[Tensor, " n_choices"]]:
    """Summed log-likelihood of each item's choices (one tensor per item), steered when intervention is given and
    after `prefix` when one is given."""
    pairs = [
        (i, encode_pair(tokenizer, context(item, prefix), " " + choice))
        for i, item in enumerate(items)
        for choice in item.choices
    ]
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        seqs = [ctx + cont for _, (ctx, cont) in chunk]
        width = max(map(len, seqs))
        ids = torch.zeros(len(seqs), width, dtype=torch.long)  # right padding: earlier positions are unaffected
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        with hooks.steering(model, hook, intervention, strength):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # [batch, pos, vocab]
        for row, (_, (ctx, cont)) in enumerate(chunk):
            positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)  # the tokens predicting the continuation
            logprobs = logits[row, positions].float().log_softmax(-1)  # [n_cont, vocab]
            scores.append(float(logprobs[torch.arange(len(cont)), torch.tensor(cont)].sum()))
    out, k = [], 0
    for item in items:
        out.append(torch.tensor(scores[k : k + len(item.choices)]))
        k += len(item.choices)
    return out


def correct(
    model,
    tokenizer,
    items: list[Item],
    intervention=None,
    hook: str | None = None,
    strength: float = 1.0,
    batch_size: int = 16,
    prefix: str = "",
) -> Tensor:
    """[n_items] bool: the highest-scoring choice is the answer."""
    logliks = choice_logliks(model, tokenizer, items, intervention, hook, strength, batch_size, prefix)
    return torch.tensor([int(s.argmax()) == item.answer for s, item in zip(logliks, items)])


def bootstrap_ratio(steered: Tensor, unsteered: Tensor, n_bootstrap: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% CI of mean(steered) / mean(unsteered) over items resampled with replacement (paired)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(steered), (n_bootstrap, len(steered)), generator=gen)  # [n_bootstrap, n_items]
    ratios = steered.float()[idx].mean(1) / unsteered.float()[idx].mean(1).clamp_min(1e-12)
    low, high = torch.quantile(ratios, torch.tensor([0.025, 0.975]))
    return float(low), float(high)


def capability_kept(
    model,
    tokenizer,
    intervention,
    hook: str,
    strength: float = 1.0,
    items: list[Item] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 16,
    unsteered: Tensor | None = None,
    prefix: str = "",
) -> Capability:
    """Steered accuracy / unsteered accuracy on the capability items (pass `unsteered`, a [n_items] bool from
    `correct(model, tokenizer, items)`, to reuse the unsteered pass across methods). A prompting method: its text as
    `prefix` (intervention None), measured against the unprompted model."""
    items = items if items is not None else load_items()
    base = unsteered if unsteered is not None else correct(model, tokenizer, items, batch_size=batch_size)
    if base.shape != (len(items),):
        raise ValueError(f"unsteered has shape {tuple(base.shape)}, expected ({len(items)},): one entry per item.")
    if not bool(base.any()):
        raise ValueError(
            "The unsteered model answers no item correctly: capability kept is undefined. Check the model "
            "and the items."
        )
    steered = correct(model, tokenizer, items, intervention, hook, strength, batch_size, prefix)
    by_category = {
        c: (float(base[m].float().mean()), float(steered[m].float().mean()))
        for c in sorted({i.category for i in items})
        for m in [torch.tensor([i.category == c for i in items])]
    }
    acc_s, acc_u = float(steered.float().mean()), float(base.float().mean())
    return Capability(
        acc_s / acc_u, bootstrap_ratio(steered, base, n_bootstrap, seed), acc_s, acc_u, len(items), by_category
    )
