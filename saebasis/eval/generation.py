"""Batched generation with an intervention attached (chat template, KV cache, greedy or seeded sampling).

`generate` returns (responses, seconds) -- the interface train / generate / interpret use. `generate_timed`
also counts decode steps so `compare` can report the generation overhead per token, independent of how
long the responses happen to be.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import NamedTuple, Sequence

import torch
from tqdm.auto import tqdm

from saebasis import hooks
from saebasis.activations import chat_prefix


class Generation(NamedTuple):
    responses: list[str]
    seconds: float
    token_slots: int
    """sum over batches of batch size x decode steps: the work done, for a per-token time."""


@torch.no_grad()
def generate_timed(
    model, tokenizer, prompts: Sequence[str], intervention=None, hook: str | None = None, max_new_tokens: int = 48,
    batch_size: int = 16, system_prefix: str = "", do_sample: bool = False, temperature: float = 1.0,
    top_p: float = 1.0, seed: int = 0, desc: str | None = None,
) -> Generation:
    """Responses for each prompt. `system_prefix` is prepended to each user message (the prompting
    reference method). Sampling is seeded per batch (seed + batch index), so a response does not depend
    on what was generated before it."""
    device = next(model.parameters()).device
    if getattr(getattr(intervention, "cfg", None), "mode", None) == "faithful":
        batch_size = 1  # SARA as published: batch size 1, no padding
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else dict(do_sample=False)
    responses: list[str] = []
    slots = 0
    starts = range(0, len(prompts), batch_size)
    start = time.perf_counter()
    for n, i in enumerate(tqdm(starts, desc=desc or "generate", leave=False, disable=desc is None or len(starts) < 2)):
        chats = [chat_prefix(tokenizer, system_prefix + p) for p in prompts[i : i + batch_size]]
        batch = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        if hasattr(intervention, "set_prompt_mask"):
            intervention.set_prompt_mask(batch["attention_mask"])
        if do_sample:
            torch.manual_seed(seed + n)
        ctx = hooks.attach(model, hook, intervention) if intervention is not None else nullcontext()
        with ctx:
            out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling)
        new = out[:, batch["input_ids"].shape[1] :]  # [batch, new_tokens]
        slots += new.numel()
        responses += [r.strip() for r in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return Generation(responses, time.perf_counter() - start, slots)


def generate(
    model, tokenizer, prompts: Sequence[str], intervention=None, hook: str | None = None, max_new_tokens: int = 48,
    batch_size: int = 16, system_prefix: str = "", **sampling,
) -> tuple[list[str], float]:
    """Responses for each prompt and the wall time in seconds (greedy unless do_sample=True is given)."""
    gen = generate_timed(model, tokenizer, prompts, intervention, hook, max_new_tokens, batch_size, system_prefix, **sampling)
    return gen.responses, gen.seconds
