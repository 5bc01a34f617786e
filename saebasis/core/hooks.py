"""TransformerLens-style hook names on plain Hugging Face models.

Users write `blocks.{L}.hook_resid_pre` (the residual stream entering block L) or
`blocks.{L}.hook_resid_post` (leaving it). These map to a forward pre-hook / forward hook on the HF
decoder block, so nothing depends on TransformerLens' weight processing (which would change the
activations an SAE sees). Every attachment is a context manager that always removes its hooks.
`skip_to_hook` runs only the blocks after a hook from a residual computed once (activation caching in
training, the plateau sweep).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

# Where each family keeps its list of decoder blocks.
BLOCK_PATHS = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "phi3": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}
_FALLBACK_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")
_TL_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")
_HF_HOOK = re.compile(r"^(?:model\.layers|transformer\.h|gpt_neox\.layers)\.(\d+)$")

Positions = None | Literal["last"] | Sequence[int]


@dataclass(frozen=True)
class HookPoint:
    layer: int
    kind: Literal["pre", "post"]

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_{self.kind}"


def parse_hook(hook: str) -> HookPoint:
    """`blocks.12.hook_resid_post` -> HookPoint(12, 'post'); HF block names (`model.layers.12`,
    as sae-lens' HookedProxyLM names them) mean the block's output, i.e. resid_post."""
    if m := _TL_HOOK.match(hook):
        return HookPoint(int(m.group(1)), m.group(2))  # type: ignore[arg-type]
    if m := _HF_HOOK.match(hook):
        return HookPoint(int(m.group(1)), "post")
    raise ValueError(
        f"Unknown hook '{hook}'. Use a TransformerLens residual hook name such as "
        f"'blocks.12.hook_resid_post' or 'blocks.12.hook_resid_pre'."
    )


def same_residual(a: str, b: str) -> bool:
    """True when two hook names read the same tensor: blocks.L.hook_resid_pre == blocks.{L-1}.hook_resid_post."""
    pa, pb = parse_hook(a), parse_hook(b)
    return _stream_index(pa) == _stream_index(pb)


def _stream_index(point: HookPoint) -> int:
    return point.layer if point.kind == "pre" else point.layer + 1


def _get_attr_path(root: nn.Module, path: str) -> nn.Module | None:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of an HF causal LM, for every supported family."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    paths = ([BLOCK_PATHS[model_type]] if model_type in BLOCK_PATHS else []) + list(_FALLBACK_PATHS)
    for path in paths:
        found = _get_attr_path(model, path)
        if isinstance(found, nn.ModuleList):
            return found
    raise ValueError(
        f"Cannot find the decoder blocks of model type '{model_type}'. Supported: "
        f"{sorted(BLOCK_PATHS)}; add its block path to saebasis.core.hooks.BLOCK_PATHS."
    )


def block_module_name(model: nn.Module, layer: int) -> str:
    """HF module name of block `layer` (e.g. `model.layers.12`), as sae-lens' HookedProxyLM names it."""
    target = blocks(model)[layer]
    return next(name for name, mod in model.named_modules() if mod is target)


def resolve(model: nn.Module, hook: str) -> tuple[nn.Module, HookPoint]:
    """The block module a hook name refers to, after checking the layer exists."""
    point = parse_hook(hook)
    layers = blocks(model)
    if not 0 <= point.layer < len(layers):
        raise ValueError(
            f"Hook '{hook}': layer {point.layer} is out of range; this model has {len(layers)} "
            f"layers (0..{len(layers) - 1}). Pick a layer in that range."
        )
    return layers[point.layer], point


class _PositionTracker:
    """Absolute position of the first token of the current forward call (prefill resets it)."""

    def __init__(self) -> None:
        self.offset = 0
        self.length = 0

    def update(self, seq_len: int) -> None:
        self.offset = 0 if seq_len > 1 else self.offset + self.length
        self.length = seq_len


def _mask(tracker: _PositionTracker, positions: Positions, seq_len: int, device) -> Tensor | None:
    if positions is None:
        return None
    if positions == "last":
        mask = torch.zeros(seq_len, dtype=torch.bool, device=device)
        mask[-1] = True
        return mask
    absolute = torch.arange(tracker.offset, tracker.offset + seq_len, device=device)
    return torch.isin(absolute, torch.as_tensor(list(positions), device=device))


@contextmanager
def attach(model: nn.Module, hook: str, fn: Callable[[Tensor], Tensor], positions: Positions = None) -> Iterator[None]:
    """Apply `fn` (residual [batch, pos, d_model] -> same) at `hook` inside the `with` block.

    positions: None (every position), "last" (the last position of each forward call: the prompt's
    last token, then every generated token), or absolute token indices (tracked across KV-cache
    decode steps). Hooks are removed on exit, also when the block raises.
    """
    module, point = resolve(model, hook)
    tracker = _PositionTracker()

    def apply(h: Tensor) -> Tensor:
        mask = _mask(tracker, positions, h.shape[1], h.device)
        out = fn(h).to(h.dtype)
        return out if mask is None else torch.where(mask[None, :, None], out, h)

    def pre_hook(_mod, args, kwargs):
        if args:
            tracker.update(args[0].shape[1])
            return (apply(args[0]), *args[1:]), kwargs
        tracker.update(kwargs["hidden_states"].shape[1])
        return args, {**kwargs, "hidden_states": apply(kwargs["hidden_states"])}

    def track(_mod, args, kwargs):
        tracker.update((args[0] if args else kwargs["hidden_states"]).shape[1])

    def post_hook(_mod, _args, _kwargs, output):
        if isinstance(output, tuple):
            return (apply(output[0]), *output[1:])
        return apply(output)

    handles = []
    try:
        if point.kind == "pre":
            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            handles.append(module.register_forward_pre_hook(track, with_kwargs=True))
            handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


class StopForward(Exception):
    """Raised inside a hook to skip the layers after it (activation caching)."""


@contextmanager
def record(model: nn.Module, hook: str, stop: bool = False) -> Iterator[list[Tensor]]:
    """Collect the residual at `hook` for each forward call; with stop=True the forward pass
    ends at the hook (call it through `run_to_hook`)."""
    captured: list[Tensor] = []

    def grab(h: Tensor) -> Tensor:
        captured.append(h.detach())
        if stop:
            raise StopForward
        return h

    with attach(model, hook, grab):
        yield captured


@torch.no_grad()
def run_to_hook(model: nn.Module, hook: str, **inputs) -> Tensor:
    """Residual at `hook` [batch, pos, d_model], without running the layers after it."""
    with record(model, hook, stop=True) as captured:
        try:
            model(**inputs, use_cache=False)
        except StopForward:
            pass
    return captured[0]


@contextmanager
def steering(model: nn.Module, hook: str, intervention, strength=1.0, positions: Positions = None) -> Iterator[None]:
    """Apply `intervention` at `hook` at `strength` (a number, or a [batch] tensor: one per row) inside the
    `with` block; nothing is attached when intervention is None. The intervention's forward checks the
    strength (interventions.base.check_strength, the one rule) on the first call, before any heavy work."""
    if intervention is None:
        yield
        return
    with intervention.attach_to(model, hook, strength, positions):
        yield


# -- skipping the blocks upstream of a hook (a residual computed once, reused) ------------------------
def upstream_blocks(hook: str) -> int:
    """How many blocks run before the residual at `hook` (blocks.L.hook_resid_post: L + 1; _pre: L)."""
    point = parse_hook(hook)
    return point.layer + 1 if point.kind == "post" else point.layer


class _Inject(nn.Module):
    """Stands in for a skipped block: passes its input on, or (the last one) returns the cached residual."""

    def __init__(self, block: nn.Module, h: Tensor | None) -> None:
        super().__init__()
        self.h = h
        if hasattr(block, "attention_type"):  # Gemma / Qwen pick the attention mask by this attribute
            self.attention_type = block.attention_type

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        return hidden_states if self.h is None else self.h


@contextmanager
def skip_to_hook(model: nn.Module, hook: str, h: Float[Tensor, "batch pos d_model"]) -> Iterator[None]:
    """Inside the block the model's blocks upstream of `hook` are replaced and the residual there is `h`."""
    layers = blocks(model)
    n = upstream_blocks(hook)
    saved = list(layers[:n])
    try:
        for i, block in enumerate(saved):
            layers[i] = _Inject(block, h if i == n - 1 else None)
        yield
    finally:
        for i, block in enumerate(saved):
            layers[i] = block
