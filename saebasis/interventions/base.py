"""One interface for every method: residual in, residual out, at one hook.

Every intervention (learned, baseline, manual) is an `nn.Module` whose `forward(h)` maps the residual
[batch, pos, d_model] to a steered residual of the same shape, scaled by `strength`. Strength 0 returns
the input tensor itself, so an unsteered run is bit-identical. Subclasses register under a name, state
their equation in the class docstring, and keep a typed dataclass config (`Config`).

The SAE (when a method uses one) is held as a plain attribute, not a submodule: it is a frozen basis,
never trained and never saved with the intervention.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saebasis.sae import SAEBasis

REGISTRY: dict[str, type["Intervention"]] = {}


def register(name: str):
    def wrap(cls: type[Intervention]) -> type[Intervention]:
        cls.method = name
        REGISTRY[name] = cls
        return cls

    return wrap


@dataclasses.dataclass
class InterventionConfig:
    """Fields every method shares."""

    strength: float = 1.0
    """Multiplier of the learned change; 0 leaves the model unchanged (bit-identical)."""

    def __post_init__(self) -> None:
        if not isinstance(self.strength, (int, float)) or self.strength != self.strength:
            raise ValueError(f"intervention.strength must be a finite number, got {self.strength!r}.")


class Intervention(nn.Module, ABC):
    """h' = steer(h; strength). Subclasses implement `steer`; `forward` handles strength 0."""

    method: ClassVar[str] = "base"
    Config: ClassVar[type[InterventionConfig]] = InterventionConfig
    uses_sae: ClassVar[bool] = False
    """True when the intervention needs the SAE at inference (not only to read it)."""
    trainable: ClassVar[bool] = True
    """False for methods fitted in closed form (baselines, manual clamps)."""

    def __init__(self, cfg: InterventionConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__()
        if self.uses_sae and sae is None:
            raise ValueError(f"Intervention '{self.method}' works in the SAE basis and needs an SAE (set sae=...).")
        if sae is not None:
            sae.check_width(d_model)
        self.cfg = cfg
        self.d_model = d_model
        self.strength = float(cfg.strength)
        object.__setattr__(self, "sae", sae)  # frozen basis: not a submodule, not in state_dict

    def forward(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if self.strength == 0:
            return h
        return self.steer(h)

    @abstractmethod
    def steer(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        """The steered residual at the current `strength` (never called with strength 0)."""

    def penalty(self) -> Tensor:
        """Regularisers added to the training loss (L1, Mahalanobis, ...); 0 by default."""
        return torch.zeros((), device=self._device())

    def latent_scores(self) -> Float[Tensor, " d_sae"] | None:
        """How strongly the intervention acts on each SAE latent (for ranking in `interpret`)."""
        return None

    def proximal_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called after every optimizer step while training: a penalty handled proximally (exact zeros)
        is applied here. Nothing by default."""

    def folded(self) -> Float[Tensor, " d_model"] | None:
        """The single residual vector this intervention adds, when it is a constant shift."""
        return None

    def folded_for_inference(self) -> Float[Tensor, " d_model"] | None:
        """`folded()`, computed once and reused while no gradient is recorded (generation): a method that
        folds then costs one vector add per step. Recomputed whenever strength or any parameter / buffer
        changes (an optimizer step or load_state_dict bumps the tensor's version)."""
        if torch.is_grad_enabled():
            return self.folded()
        key = (self.strength, id(self.sae), *((t.data_ptr(), t._version) for t in [*self.parameters(), *self.buffers()]))
        memo = self.__dict__.get("_folded_memo")
        if memo is None or memo[0] != key:
            vector = self.folded()
            memo = (key, None if vector is None else vector.detach())
            self.__dict__["_folded_memo"] = memo
        return memo[1]

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    def _device(self) -> torch.device:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")


def build(method: str, cfg: dict[str, Any] | None, d_model: int, sae: SAEBasis | None = None) -> Intervention:
    """Construct a registered intervention from a plain dict config (as Hydra / cfg.json hold it)."""
    import saebasis.interventions  # noqa: F401  (fills REGISTRY)

    if method not in REGISTRY:
        raise ValueError(f"Unknown intervention '{method}'. Choose one of: {sorted(REGISTRY)}.")
    cls = REGISTRY[method]
    cfg = dict(cfg or {})
    cfg.pop("method", None)
    known = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"Unknown field(s) {unknown} for intervention '{method}'. Valid fields: {sorted(known)}.")
    return cls(cls.Config(**cfg), d_model=d_model, sae=sae)
