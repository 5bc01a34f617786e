"""Hook activations of chat prompts (+ completions), batched, without gradients.

Used by the closed-form baselines (DiffMean, PCA, SARA) and by anything that needs the residual at a
hook for dataset text. Each example yields a [T, d_model] tensor of the chosen positions:
`completion` (tokens of the completion only), `all` (prompt + completion), or `last` (final token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from saebasis.core import hooks

PositionsSpec = Literal["completion", "all", "last"]


def chat_prefix(tokenizer, prompt: str) -> str:
    """The prompt as the model sees it before its reply (chat template when the tokenizer has one)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return prompt + "\n"


def position_ids(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Positions counted over real tokens only, as `model.generate` does for left-padded prompts (0 on padding).
    A rotary model's outputs do not depend on it (only differences of positions enter); a model with learned
    absolute positions (GPT-2) reads a left-padded row wrongly without it."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)


def right_padded(docs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token ids [batch, pos] of `docs` padded on the right with `pad_id` (position index == token index), and the
    attention mask."""
    width = max(len(d) for d in docs)
    ids = torch.full((len(docs), width), pad_id, dtype=torch.long)  # [batch, pos]
    mask = torch.zeros_like(ids)
    for row, d in enumerate(docs):
        ids[row, : len(d)], mask[row, : len(d)] = torch.tensor(d), 1
    return ids, mask


def encode_pairs(tokenizer, prompts: Sequence[str], completions: Sequence[str], max_len: int) -> dict[str, Tensor]:
    """Left-padded batch of chat(prompt) + completion, with a mask of the completion tokens."""
    rows, comp_lens = [], []
    for prompt, completion in zip(prompts, completions):
        p_ids = tokenizer(chat_prefix(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] if completion else []
        ids = (p_ids + c_ids)[-max_len:]
        rows.append(ids)
        comp_lens.append(min(len(c_ids), len(ids)))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id or 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # [batch, pos]
    attention = torch.zeros_like(input_ids)
    completion_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for i, (ids, n_comp) in enumerate(zip(rows, comp_lens)):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention[i, width - len(ids) :] = 1
        if n_comp:
            completion_mask[i, width - n_comp :] = True
    return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion_mask}


def _select(h: Tensor, batch: dict[str, Tensor], i: int, positions: PositionsSpec) -> Tensor:
    if positions == "last":
        return h[i, -1:]  # left padding: the last position is always real
    mask = batch["completion_mask"][i] if positions == "completion" else batch["attention_mask"][i].bool()
    if positions == "completion" and not mask.any():
        raise ValueError("An example has no completion tokens; use positions=all or give non-empty completions.")
    return h[i, mask]


@torch.no_grad()
def collect(
    model,
    tokenizer,
    hook: str,
    prompts: Sequence[str],
    completions: Sequence[str] | None = None,
    positions: PositionsSpec = "completion",
    batch_size: int = 8,
    max_len: int = 128,
    desc: str = "activations",
) -> list[Float[Tensor, "T d_model"]]:
    """Residual at `hook` for each example, at the chosen positions (a list: lengths differ)."""
    completions = list(completions) if completions is not None else [""] * len(prompts)
    if positions == "completion" and not any(completions):
        positions = "all"
    device = next(model.parameters()).device
    out: list[Tensor] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False, disable=len(prompts) <= batch_size):
        batch = encode_pairs(
            tokenizer, prompts[start : start + batch_size], completions[start : start + batch_size], max_len
        )
        h = hooks.run_to_hook(
            model,
            hook,
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            position_ids=position_ids(batch["attention_mask"]).to(device),
        )
        out += [_select(h.float().cpu(), batch, i, positions) for i in range(h.shape[0])]  # each [T_i, d_model]
    return out


def example_means(acts: list[Tensor]) -> Float[Tensor, "n d_model"]:
    return torch.stack([a.mean(0) for a in acts])


def completion_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token labels on completion tokens only (-100 elsewhere)."""
    return batch["input_ids"].masked_fill(~batch["completion_mask"], -100)
