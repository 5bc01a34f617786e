"""Batched generation with an intervention attached (greedy, KV cache, chat template)."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Sequence

import torch

from saebasis import hooks
from saebasis.activations import chat_prefix


@torch.no_grad()
def generate(
    model, tokenizer, prompts: Sequence[str], intervention=None, hook: str | None = None, max_new_tokens: int = 48,
    batch_size: int = 16, system_prefix: str = "",
) -> tuple[list[str], float]:
    """Responses for each prompt and the wall time in seconds. `system_prefix` is prepended to each
    user message (the prompting reference method)."""
    device = next(model.parameters()).device
    if getattr(getattr(intervention, "cfg", None), "mode", None) == "faithful":
        batch_size = 1  # SARA as published: batch size 1, no padding
    responses: list[str] = []
    start = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        chats = [chat_prefix(tokenizer, system_prefix + p) for p in prompts[i : i + batch_size]]
        batch = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        if hasattr(intervention, "set_prompt_mask"):
            intervention.set_prompt_mask(batch["attention_mask"])
        ctx = hooks.attach(model, hook, intervention) if intervention is not None else nullcontext()
        with ctx:
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        responses += [r.strip() for r in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)]
    return responses, time.perf_counter() - start
