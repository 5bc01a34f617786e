"""Batched generation with an intervention attached (chat template, KV cache, greedy or seeded sampling).

`generate` returns (responses, seconds). `generate_timed` also counts decode steps (a per-token time that
does not depend on how long the responses happen to be). `generate_grid` runs a whole strength grid of one
method in one batched pass: every (strength, prompt) is a row, steered at its own strength.

Lengths are bounded by the model's context: a prompt longer than the context keeps its last tokens and
`max_new_tokens` is clipped so prompt + reply fit, each with a warning (never a silent hours-long run).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from saebasis.core import hooks
from saebasis.core.activations import chat_prefix


class Generation(NamedTuple):
    responses: list[str]
    seconds: float
    token_slots: int
    """sum over batches of batch size x decode steps: the work done, for a per-token time."""


def context_length(model) -> int | None:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def check_max_new_tokens(max_new_tokens) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(
            f"max_new_tokens must be a positive integer, got {max_new_tokens!r}. Use e.g. max_new_tokens=64."
        )
    return max_new_tokens


def _fit_to_context(model, batch: dict, max_new_tokens: int) -> tuple[dict, int]:
    """Keep the last tokens of over-long prompts and clip max_new_tokens to the room left (with warnings)."""
    context = context_length(model)
    if context is None:
        return batch, max_new_tokens
    width = batch["input_ids"].shape[1]
    if width >= context:
        keep = max(1, context // 2)
        warnings.warn(f"A prompt has {width} tokens; the model's context is {context}. Keeping its last {keep} tokens.")
        batch = {k: v[:, -keep:] for k, v in batch.items()}
        width = keep
    if width + max_new_tokens > context:
        warnings.warn(
            f"max_new_tokens={max_new_tokens} does not fit the context ({context}) after a {width}-token prompt; "
            f"clipped to {context - width}."
        )
        max_new_tokens = context - width
    return batch, max_new_tokens


@torch.no_grad()
def generate_timed(
    model,
    tokenizer,
    prompts: Sequence[str],
    intervention=None,
    hook: str | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    system_prefix: str = "",
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    desc: str | None = None,
    strength: float | Sequence[float] | torch.Tensor = 1.0,
) -> Generation:
    """Responses for each prompt. `strength`: one number, or one per prompt (rows steered independently).
    `system_prefix` is prepended to each user message (the prompting reference method). Sampling is seeded
    per batch (seed + batch index), so a response does not depend on what was generated before it."""
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    device = next(model.parameters()).device
    per_row = not isinstance(strength, (int, float))
    if per_row:
        strength = torch.as_tensor(strength, dtype=torch.float32)
        if strength.shape != (len(prompts),):
            raise ValueError(
                f"strength has {tuple(strength.shape)} entries for {len(prompts)} prompts; "
                "give one per prompt or one number."
            )
    if intervention is not None and intervention.max_batch is not None:
        batch_size = min(batch_size, intervention.max_batch)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else dict(do_sample=False)
    responses: list[str] = []
    slots = 0
    starts = range(0, len(prompts), batch_size)
    start = time.perf_counter()
    for n, i in enumerate(tqdm(starts, desc=desc or "generate", leave=False, disable=desc is None or len(starts) < 2)):
        chats = [chat_prefix(tokenizer, system_prefix + p) for p in prompts[i : i + batch_size]]
        batch = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
        batch, n_new = _fit_to_context(model, dict(batch), max_new_tokens)
        batch = {k: v.to(device) for k, v in batch.items()}
        if intervention is not None:
            intervention.begin_generation(batch["attention_mask"])
        if do_sample:
            torch.manual_seed(seed + n)
        s = strength[i : i + batch_size].to(device) if per_row else strength
        with hooks.steering(model, hook, intervention, s):
            out = model.generate(**batch, max_new_tokens=n_new, pad_token_id=tokenizer.pad_token_id, **sampling)
        new = out[:, batch["input_ids"].shape[1] :]  # [batch, new_tokens]
        slots += new.numel()
        responses += [r.strip() for r in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return Generation(responses, time.perf_counter() - start, slots)


def generate_grid(
    model,
    tokenizer,
    prompts: Sequence[str],
    intervention,
    hook: str,
    strengths: Sequence[float],
    max_new_tokens: int = 48,
    batch_size: int = 16,
    **kw,
) -> tuple[dict[float, list[str]], float]:
    """Responses for every (strength, prompt) in one batched pass ({strength: responses}, seconds). Greedy
    decoding gives the same text as one strength at a time (up to float noise of a different padding width)."""
    rows = [(float(s), p) for s in strengths for p in prompts]
    gen = generate_timed(
        model,
        tokenizer,
        [p for _, p in rows],
        intervention,
        hook,
        max_new_tokens,
        batch_size,
        strength=[s for s, _ in rows],
        **kw,
    )
    out: dict[float, list[str]] = {float(s): [] for s in strengths}
    for (s, _), response in zip(rows, gen.responses):
        out[s].append(response)
    return out, gen.seconds


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    intervention=None,
    hook: str | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    system_prefix: str = "",
    **sampling,
) -> tuple[list[str], float]:
    """Responses for each prompt and the wall time in seconds (greedy unless do_sample=True is given)."""
    gen = generate_timed(
        model, tokenizer, prompts, intervention, hook, max_new_tokens, batch_size, system_prefix, **sampling
    )
    return gen.responses, gen.seconds
