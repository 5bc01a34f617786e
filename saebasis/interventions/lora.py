"""LoRA (peft) as a peer method: low-rank adapters on the linear maps of the block right after the hook.

Optional: needs `peft` (`pip install -e '.[peers]'` or `bash scripts/setup_peers.sh`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saebasis.core import hooks
from saebasis.core.sae import SAEBasis
from saebasis.interventions.base import Intervention, InterventionConfig, Strength, check_strength, is_zero, register

ADAPTER = "default"


def require_peft():
    try:
        import peft  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "intervention=lora needs peft: `pip install -e '.[peers]'` (or bash scripts/setup_peers.sh)."
        ) from err
    from peft import LoraConfig
    from peft.tuners.lora import Linear

    return LoraConfig, Linear


@dataclasses.dataclass
class LoraInterventionConfig(InterventionConfig):
    rank: int = 4
    """r of every adapter (A [r, in], B [out, r])."""
    alpha: float = 8.0
    """lora_alpha: the delta is scaled by alpha / rank (times the strength)."""
    target_modules: list[str] = dataclasses.field(default_factory=lambda: ["o_proj"])
    """Linear maps of the block to adapt, by name (last part, e.g. o_proj, q_proj, down_proj), or
    ["all-linear"] for every linear map of the block (peft's word)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}.")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one linear map (e.g. [o_proj]) or be [all-linear].")
        self.target_modules = list(self.target_modules)


def block_after(model: nn.Module, hook: str) -> nn.Module:
    """The block that reads the residual at `hook` (blocks.L.hook_resid_pre and blocks.{L-1}.hook_resid_post:
    block L)."""
    point = hooks.parse_hook(hook)
    layer = point.layer if point.kind == "pre" else point.layer + 1
    layers = hooks.blocks(model)
    if layer >= len(layers):
        raise ValueError(
            f"LoRA at '{hook}' would live in block {layer}, but the model has {len(layers)} blocks: "
            f"use a hook before the last block (e.g. blocks.{len(layers) - 1}.hook_resid_pre)."
        )
    return layers[layer]


@register("lora")
class LoRA(Intervention):
    """LoRA in the block after the hook:  W x  ->  W x + s (alpha / r) B A x  for each targeted linear map W.

    Through peft's own layer (`peft.tuners.lora.Linear`), swapped in for the block's linear maps only inside
    `attach_to` (the model is untouched outside it). The hook names the residual the adapted block reads:
    `blocks.L.hook_resid_pre` (== `blocks.{L-1}.hook_resid_post`) puts the adapters in block L, so the trainer's
    activation cache (which skips the blocks before the hook) still runs it. B starts at 0 (peft's default
    init): the identity at init; strength 0 attaches nothing; a [batch] strength scales each row's delta.
    A and B are the intervention's parameters (trained, saved). Their shapes come from the model, so they are
    created by `prepare` (training) or from the saved tensors (loading).
    `forward(h, s)` on a residual (validation metrics, latent change): h plus the change the adapters make to
    the adapted block's output when it reads h (positions 0..T-1, causal, no padding) -- needs the model
    (set by `prepare` / `attach_to`).
    """

    Config = LoraInterventionConfig
    kind = "trained"

    def __init__(self, cfg: LoraInterventionConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        require_peft()
        self.adapters = nn.ModuleDict()  # "self_attn-o_proj" -> {lora_A: Linear(in, r), lora_B: Linear(r, out)}
        self.__dict__["_wrappers"] = {}  # id(base linear) -> peft lora.Linear sharing this method's A / B
        self.__dict__["_where"] = None  # (model, hook) of the last prepare / attach

    # -- adapters -----------------------------------------------------------------------------------
    def targets(self, block: nn.Module) -> dict[str, nn.Linear]:
        """The block's linear maps this config adapts: {relative name: module}."""
        linears = {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}
        if self.cfg.target_modules != ["all-linear"]:
            linears = {
                n: m
                for n, m in linears.items()
                if n.split(".")[-1] in self.cfg.target_modules or n in self.cfg.target_modules
            }
        if not linears:
            raise ValueError(
                f"No linear map of the block matches target_modules={self.cfg.target_modules}; "
                f"its linear maps are {[n for n, m in block.named_modules() if isinstance(m, nn.Linear)]}."
            )
        return linears

    def wrapper(self, name: str, base: nn.Linear) -> nn.Module:
        """peft's lora.Linear around `base` whose A / B are this intervention's (created on first use)."""
        LoraConfig, Linear = require_peft()
        key = name.replace(".", "-")
        cached = self._wrappers.get(id(base))
        if cached is not None and cached.base_layer is base:
            return cached
        config = LoraConfig(
            r=self.cfg.rank, lora_alpha=self.cfg.alpha, lora_dropout=0.0, target_modules=[name.split(".")[-1]]
        )
        with torch.random.fork_rng(devices=[]):  # a wrapper for saved adapters must not move the RNG
            if key in self.adapters:
                torch.manual_seed(0)
            layer = Linear(base, ADAPTER, config=config, r=self.cfg.rank, lora_alpha=self.cfg.alpha)
        if key not in self.adapters:
            self.adapters[key] = nn.ModuleDict({"lora_A": layer.lora_A[ADAPTER], "lora_B": layer.lora_B[ADAPTER]})
        mine = self.adapters[key]
        if (mine.lora_A.in_features, mine.lora_B.out_features) != (base.in_features, base.out_features):
            raise ValueError(
                f"Saved LoRA adapter '{name}' maps {mine.lora_A.in_features} -> {mine.lora_B.out_features}, "
                f"but this model's {name} maps {base.in_features} -> {base.out_features}: another model."
            )
        layer.lora_A[ADAPTER], layer.lora_B[ADAPTER] = mine.lora_A, mine.lora_B
        self._wrappers[id(base)] = layer
        return layer

    def prepare(self, stack, concept, max_len: int) -> None:
        """Create the adapters for the stack's model at its hook (before training)."""
        self.materialize(stack.model, stack.hook)

    def materialize(self, model: nn.Module, hook: str) -> dict[str, nn.Module]:
        self.__dict__["_where"] = (model, hook)
        device = next(model.parameters()).device
        wrappers = {name: self.wrapper(name, base) for name, base in self.targets(block_after(model, hook)).items()}
        self.adapters.to(device)
        return wrappers

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Saved adapters are created from their tensors' shapes (no model needed to load a run)."""
        for key, tensor in state_dict.items():
            if key.startswith(prefix + "adapters.") and key.endswith("lora_A.weight"):
                name = key[len(prefix + "adapters.") : -len(".lora_A.weight")]
                out = state_dict[key.replace("lora_A", "lora_B")].shape[0]
                if name not in self.adapters:
                    self.adapters[name] = nn.ModuleDict(
                        {
                            "lora_A": nn.Linear(tensor.shape[1], tensor.shape[0], bias=False),
                            "lora_B": nn.Linear(tensor.shape[0], out, bias=False),
                        }
                    )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- applying -----------------------------------------------------------------------------------
    @contextmanager
    def attach_to(self, model: nn.Module, hook: str, strength: Strength = 1.0, positions=None) -> Iterator[None]:
        """Swap peft's lora.Linear in for the targeted linear maps of the block after `hook`; always restored."""
        strength = check_strength(strength)
        block = block_after(model, hook)
        if is_zero(strength):
            yield
            return
        wrappers = self.materialize(model, hook)
        scale = self.cfg.alpha / self.cfg.rank
        tracker = hooks._PositionTracker()

        def set_scaling(_mod, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]  # [batch, pos, d_model]
            tracker.update(h.shape[1])
            s = strength if not isinstance(strength, Tensor) else _rows(strength, h)
            mask = hooks._mask(tracker, positions, h.shape[1], h.device)
            if mask is not None:
                s = s * mask.to(h.dtype)[None, :, None]  # [batch or 1, pos, 1]
            for layer in wrappers.values():
                layer.scaling[ADAPTER] = scale * s

        originals = {}
        handle = block.register_forward_pre_hook(set_scaling, with_kwargs=True)
        try:
            for name, layer in wrappers.items():
                parent, leaf = _parent(block, name)
                originals[name] = getattr(parent, leaf)
                setattr(parent, leaf, layer)
            yield
        finally:
            handle.remove()
            for name, original in originals.items():
                parent, leaf = _parent(block, name)
                setattr(parent, leaf, original)

    def steer(self, h: Float[Tensor, "batch pos d_model"], s: float | Tensor) -> Float[Tensor, "batch pos d_model"]:
        if self._where is None:
            raise ValueError(
                "LoRA acts inside a block: its residual form needs the model. Call prepare(stack, ...) or "
                "use it through attach_to(model, hook, ...) first."
            )
        model, hook = self._where
        block = block_after(model, hook)
        kwargs = _block_kwargs(model, h)
        strength = s[:, 0, 0] if isinstance(s, Tensor) else s
        with self.attach_to(model, hook, strength):
            steered = block(h, **kwargs)
        return h + (steered - block(h, **kwargs))

    def peft_adapter(self, hook: str, strength: float, blocks_path: str) -> tuple[dict, dict[str, Tensor]]:
        """peft's saved form: keys base_model.model.<blocks_path>.<block>.<module>.lora_A|B.weight; lora_alpha is
        alpha x strength, so peft's scaling lora_alpha / r is saebasis' (alpha / r) x strength."""
        point = hooks.parse_hook(hook)
        block = point.layer if point.kind == "pre" else point.layer + 1
        modules = {key: f"{blocks_path}.{block}.{key.replace('-', '.')}" for key in self.adapters}
        tensors = {
            f"base_model.model.{name}.lora_{part}.weight": getattr(self.adapters[key], f"lora_{part}")
            .weight.detach()
            .cpu()
            .contiguous()
            for key, name in modules.items()
            for part in "AB"
        }
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.cfg.rank,
            "lora_alpha": self.cfg.alpha * float(strength),
            "lora_dropout": 0.0,
            "bias": "none",
            "target_modules": sorted(modules.values()),
            "fan_in_fan_out": False,
            "inference_mode": True,
            "use_rslora": False,
            "base_model_name_or_path": None,
        }
        return config, tensors

    def unfolded_reason(self) -> str:
        return (
            "lora changes weights inside a block (low-rank adapters on its linear maps), so its change to the "
            "residual depends on the input and is no single vector; export it as a peft adapter folder instead "
            "(saebasis export format=peft)."
        )

    def describe(self) -> dict:
        return {**super().describe(), "adapted": sorted(k.replace("-", ".") for k in self.adapters)}


def _rows(strength: Tensor, h: Tensor) -> Tensor:
    if strength.shape[0] != h.shape[0]:
        raise ValueError(f"per-row strength has {strength.shape[0]} entries for a batch of {h.shape[0]} rows.")
    return strength.to(device=h.device, dtype=h.dtype)[:, None, None]  # [batch, 1, 1]


def _parent(block: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (block.get_submodule(path) if path else block), leaf


def _block_kwargs(model: nn.Module, h: Tensor) -> dict:
    """What a decoder block needs besides the residual: rotary position embeddings for positions 0..T-1."""
    rotary = next((m for name, m in model.named_modules() if name.endswith("rotary_emb")), None)
    if rotary is None:
        return {}
    position_ids = torch.arange(h.shape[1], device=h.device)[None].expand(h.shape[0], -1)  # [batch, pos]
    return {"position_embeddings": rotary(h, position_ids)}
