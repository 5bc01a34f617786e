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

import contextlib
import inspect
import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch

from saebasis.core.activations import chat_prefix, encode_pairs, position_ids
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


class PromptReuse:
    """The unsteered model's keys / values after each chat-formatted prompt, and its next-token log-probs there,
    kept for the fluency judge while `active()`: every method and strength of a comparison answers the same
    instructions, so each prompt's forward runs once and later calls run the response tokens only, on top of
    the stored keys / values (the same perplexities within float rounding; tested). An entry is used only for
    the same model, the same token ids, the same autocast state and unchanged weights (parameter versions), and
    never while any module of the model has a forward hook (a steering hook or a swapped-in adapter would make
    the stored prompt states the wrong model's). Least recently used prompts are dropped past `max_prompts`.
    """

    def __init__(self, max_prompts: int = 256) -> None:
        self.max_prompts = max_prompts
        self.entries: OrderedDict[tuple, tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], torch.Tensor]] = (
            OrderedDict()
        )
        self.prompt_forwards = 0  # prompts run through the model (misses)
        self.reused = 0  # rows whose prompt came from the store (hits)

    @contextlib.contextmanager
    def active(self) -> Iterator[PromptReuse]:
        """perplexities() reuses and fills this store inside the block."""
        _ACTIVE.append(self)
        try:
            yield self
        finally:
            _ACTIVE.remove(self)

    def state(self, model) -> tuple:
        """What an entry's validity depends on besides the token ids."""
        device = next(model.parameters()).device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        return id(model), autocast, sum(p._version for p in model.parameters())

    def get(self, key: tuple):
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: tuple, entry) -> None:
        self.entries[key] = entry
        while len(self.entries) > self.max_prompts:
            self.entries.popitem(last=False)


_ACTIVE: list[PromptReuse] = []


def _cache_kwarg(model) -> str:
    """The forward's name for the key / value cache: `cache` (transformers >= 5.2x) or `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _hooked(model) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _prompt_states(model, store: PromptReuse, state: tuple, prompt_ids: list[list[int]]) -> list[tuple]:
    """(keys per layer [1, heads, P, d], values per layer, log-probs of the next token [vocab]) for each prompt,
    from the store or from one left-padded forward of the missing ones (positions counted from each prompt's start)."""
    from transformers import DynamicCache

    keys = [(state, tuple(ids)) for ids in prompt_ids]
    missing = list(dict.fromkeys(k for k in keys if store.get(k) is None))
    if missing:
        device = next(model.parameters()).device
        width = max(len(k[1]) for k in missing)
        ids = torch.zeros(len(missing), width, dtype=torch.long)  # [batch, pos], left-padded
        mask = torch.zeros_like(ids)
        for i, (_, p) in enumerate(missing):
            ids[i, width - len(p) :], mask[i, width - len(p) :] = torch.tensor(p), 1
        pos = position_ids(mask)
        cache = DynamicCache(config=model.config)  # filled in place by the forward
        out = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=pos.to(device),
            **{_cache_kwarg(model): cache},
            use_cache=True,
            logits_to_keep=1,
        )
        logp = out.logits[:, -1].float().log_softmax(-1)  # [batch, vocab]
        for i, k in enumerate(missing):
            n = len(k[1])
            store.put(
                k,
                (
                    tuple(layer.keys[i : i + 1, :, width - n :].clone() for layer in cache.layers),
                    tuple(layer.values[i : i + 1, :, width - n :].clone() for layer in cache.layers),
                    logp[i].clone(),
                ),
            )
        store.prompt_forwards += len(missing)
    store.reused += len(keys) - len(missing)
    return [store.get(k) for k in keys]


def _perplexities_reusing(
    model, store: PromptReuse, prompt_ids: list[list[int]], comp_ids: list[list[int]], pad: int
) -> list[float]:
    """perplexities() for one batch on top of the stored prompt states: only the response tokens run."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    states = _prompt_states(model, store, store.state(model), prompt_ids)
    n, p_width = len(prompt_ids), max(len(p) for p in prompt_ids)
    r_width = max(1, max(len(c) for c in comp_ids))
    layers = []
    for layer in range(len(states[0][0])):
        k0 = states[0][0][layer]
        kv = [k0.new_zeros(n, k0.shape[1], p_width, k0.shape[3]) for _ in range(2)]  # [batch, heads, P, d], left-padded
        for i, st in enumerate(states):
            kv[0][i, :, p_width - st[0][layer].shape[2] :] = st[0][layer][0]
            kv[1][i, :, p_width - st[1][layer].shape[2] :] = st[1][layer][0]
        layers.append(tuple(kv))
    ids = torch.full((n, r_width), pad, dtype=torch.long)  # [batch, pos], right-padded responses
    mask = torch.zeros(n, p_width + r_width, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_ids, comp_ids)):
        ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        mask[i, p_width - len(p) : p_width + len(c)] = 1
    pos = torch.tensor([len(p) for p in prompt_ids])[:, None] + torch.arange(
        r_width
    )  # [batch, pos]: each row's own positions
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=pos.to(device),
        **{_cache_kwarg(model): DynamicCache(ddp_cache_data=layers, config=model.config)},
        use_cache=False,
    ).logits
    logp = logits.float().log_softmax(-1)  # [batch, R, vocab]: position j predicts response token j + 1
    out = []
    for i, c in enumerate(comp_ids):
        if not c:
            out.append(float("inf"))
            continue
        lp = states[i][2][c[0]] + logp[i, : len(c) - 1].gather(-1, torch.tensor(c[1:], device=device)[:, None]).sum()
        out.append(math.exp(-float(lp) / len(c)))
    return out


@torch.no_grad()
def perplexities(
    model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 16, max_len: int = 256
) -> list[float]:
    """Perplexity of each response given its (chat-formatted) prompt under `model` as it is (unsteered).
    Left padding puts every response at the end of its row, so the LM head runs only on the last
    (longest response + 1) positions: the prompt's logits are never needed (~20% of a fluency call on the
    embedded model: 14.0 -> 10.9 s for one compared method's calls). Inside `PromptReuse.active()` each
    prompt's forward runs once per store and later calls run only the response tokens (compare does this)."""
    store = _ACTIVE[-1] if _ACTIVE else None
    if store is not None and not _hooked(model):
        p_ids = [tokenizer(chat_prefix(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
        c_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] if r else [] for r in responses]
        if all(len(p) + len(c) <= max_len and p for p, c in zip(p_ids, c_ids)):  # else: truncation, the full path
            pad = tokenizer.pad_token_id or 0
            return [
                x
                for i in range(0, len(prompts), batch_size)
                for x in _perplexities_reusing(model, store, p_ids[i : i + batch_size], c_ids[i : i + batch_size], pad)
            ]
    out: list[float] = []
    device = next(model.parameters()).device
    for i in range(0, len(prompts), batch_size):
        batch = encode_pairs(tokenizer, prompts[i : i + batch_size], responses[i : i + batch_size], max_len)
        keep = int(batch["completion_mask"].sum(1).max()) + 1  # the completion window and the position before it
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            position_ids=position_ids(batch["attention_mask"]).to(device),
            logits_to_keep=keep,
        ).logits  # [batch, keep, vocab]
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
