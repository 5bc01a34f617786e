"""Hook activations computed once per example, so later epochs run only the blocks after the hook.

The frozen LM upstream of the hook always gives the same residual for the same tokens, so with
`cache_activations: true` the first time an example is seen its residual at the hook is computed under
no_grad (`hooks.run_to_hook`) and kept; every later forward swaps the upstream blocks for stand-ins
that hand the cached residual to the rest of the model. Positions come from the attention mask (as in
`model.generate`), so an example's activations do not depend on how much left padding its batch has.

Works for families whose decoder blocks return the hidden-state tensor (every family in
`saebasis.core.hooks.BLOCK_PATHS` under transformers 5).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saebasis.core import hooks
from saebasis.core.activations import position_ids
from saebasis.core.hooks import skip_to_hook, upstream_blocks


def model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "position_ids": position_ids(batch["attention_mask"]),
    }


class ActivationCache:
    """Residual at `hook` for each example (keyed by its token ids), and memoised per-example values."""

    def __init__(self, model: nn.Module, hook: str) -> None:
        if upstream_blocks(hook) == 0:
            raise ValueError(
                f"cache_activations: nothing runs before {hook} (the embeddings); set cache_activations=false."
            )
        self.model, self.hook = model, hook
        self.acts: dict[tuple[int, ...], Tensor] = {}
        self.memo: dict[tuple[str, tuple[int, ...]], Tensor] = {}

    @staticmethod
    def keys(batch: dict[str, Tensor]) -> list[tuple[int, ...]]:
        return [tuple(ids[m.bool()].tolist()) for ids, m in zip(batch["input_ids"], batch["attention_mask"])]

    @torch.no_grad()
    def hook_acts(self, batch: dict[str, Tensor]) -> Float[Tensor, "batch pos d_model"]:
        """The batch's residual at the hook: cached examples from the store, the rest computed (upstream only)."""
        keys, mask = self.keys(batch), batch["attention_mask"].bool()
        if any(k not in self.acts for k in keys):
            h = hooks.run_to_hook(self.model, self.hook, **model_inputs(batch))  # [batch, pos, d_model]
            for i, key in enumerate(keys):
                self.acts.setdefault(key, h[i, mask[i]].clone())  # [T_i, d_model]
        out = torch.zeros(*mask.shape, self.acts[keys[0]].shape[-1], dtype=self.acts[keys[0]].dtype, device=mask.device)
        for i, key in enumerate(keys):
            out[i, mask[i]] = self.acts[key]
        return out

    def logits(self, batch: dict[str, Tensor], intervention=None, keep: int = 0, strength=1.0) -> Tensor:
        """Logits (last `keep` positions; 0 = all) from the cached residual through the blocks after the
        hook, with the intervention attached at the hook (at `strength`: a number or one per row)."""
        h = self.hook_acts(batch)
        with skip_to_hook(self.model, self.hook, h), hooks.steering(self.model, self.hook, intervention, strength):
            return self.model(**model_inputs(batch), use_cache=False, logits_to_keep=keep).logits

    @torch.no_grad()
    def per_example(self, name: str, batch: dict[str, Tensor], compute: Callable[[dict], Tensor]) -> Tensor:
        """compute(batch) -> [batch] values that never change (e.g. reference log-probs), computed once each."""
        keys = [(name, k) for k in self.keys(batch)]
        if any(k not in self.memo for k in keys):
            for key, value in zip(keys, compute(batch)):
                self.memo.setdefault(key, value.detach())
        return torch.stack([self.memo[k] for k in keys])
