"""One contract for every method: residual in, residual out, at one hook, at a strength given per call.

Every intervention (learned, baseline, manual, peer) is an `nn.Module` with
    forward(h, strength) -> h'        h [batch, pos, d_model]; strength a number or a [batch] tensor
Strength is an argument, never state: 0 returns the input tensor itself (bit-identical), and a [batch]
tensor steers each row at its own strength (a whole strength grid in one batched generate call; rows at
0 are returned unchanged). `check_strength` is the one validation rule.

What the code that runs methods may rely on (and it never branches on a method's name):
- `kind`: "trained" (gradient training, `saebasis train`), "fitted" (closed form, `fit(data)`), "manual" (set
  by hand from its config, e.g. clamp);
- `uses_sae`: the method needs an SAE (checked here, once, at construction);
- `prepare(stack, concept, max_len)`: data-dependent set-up before training or fitting (alive latents, covariance;
  a peer that reads activations through its own library keeps the model here);
- `check_can_train(cfg)` (before any heavy work) and `train_own(stack, concept, cfg)`: a peer trained by its own
  library in its own process (LoReFT in pyreft's venv) says what it needs, then trains instead of Lightning;
- `fit(data: FitData)`: the closed-form fit of "fitted" methods;
- `begin_generation(attention_mask)`: called before each batch of prompts (SARA reads the prompt);
- `max_batch`: None, or the largest batch the method supports (SARA as published: 1);
- `latent_change(h, sae, strength)`: the measured change of SAE latents enc(h') - enc(h) per token (or the
  method's own exact change when it works in the SAE basis), used by metrics and interpretation;
- `latent_scores()`, `folded()`, `penalty()`, `proximal_step()`, `describe()` (what a run reports about itself);
- `folded_shift(strength)` / `unfolded_reason()`: the one residual vector added at a strength (export), or why none;
- `latent_score_scale(sae)`: the factor that puts `latent_scores()` in residual units (None: already there);
- `pullback(sae)`: how a residual method reads and writes through the SAE decoder (None for the others).

The SAE (when a method uses one) is held as a plain attribute, not a submodule: it is a frozen basis,
never trained and never saved with the intervention.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saebasis.core import hooks
from saebasis.core.sae import SAEBasis

REGISTRY: dict[str, type[Intervention]] = {}

Strength = float | Tensor
"""A number (every row) or a 1-D tensor [batch] (one strength per row)."""


def register(name: str):
    def wrap(cls: type[Intervention]) -> type[Intervention]:
        cls.method = name
        REGISTRY[name] = cls
        return cls

    return wrap


def check_strength(strength: Any, field: str = "strength") -> float | Tensor:
    """The one rule: a finite real number (not a bool), or a 1-D float tensor of finite values."""
    if isinstance(strength, Tensor):
        if strength.ndim != 1 or not strength.is_floating_point() or not bool(torch.isfinite(strength).all()):
            raise ValueError(
                f"{field} as a tensor must be 1-D [batch], floating point and finite; got {strength.dtype} "
                f"{tuple(strength.shape)}. Use a number for every row or one finite value per row."
            )
        return strength
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise ValueError(
            f"{field} must be a finite number, got {strength!r}. Use e.g. {field}=1.0 (0 disables steering)."
        )
    return float(strength)


def strength_factor(strength: float | Tensor, h: Tensor) -> float | Tensor:
    """A number, or a per-row tensor shaped to broadcast over h [batch, pos, d_model] -> [batch, 1, 1]."""
    if isinstance(strength, Tensor):
        if strength.shape[0] != h.shape[0]:
            raise ValueError(f"per-row strength has {strength.shape[0]} entries for a batch of {h.shape[0]} rows.")
        return strength.to(device=h.device, dtype=h.dtype)[:, None, None]
    return strength


def is_zero(strength: float | Tensor) -> bool:
    return bool((strength == 0).all()) if isinstance(strength, Tensor) else strength == 0


class FitData(NamedTuple):
    """What a closed-form method is fitted on, at its hook (each entry one example's [T, d_model] history)."""

    positive: list[Tensor]
    negative: list[Tensor]
    neutral: list[Tensor]
    """Neutral prompts, every token but the first (the attention sink)."""


@dataclasses.dataclass
class InterventionConfig:
    """Fields every method shares (none today: strength is an argument, not configuration)."""

    def __post_init__(self) -> None:
        """Subclasses validate their fields here (and call super().__post_init__())."""


class Intervention(nn.Module, ABC):
    """h' = steer(h, s). Subclasses implement `steer`; `forward` validates s and handles s = 0."""

    method: ClassVar[str] = "base"
    Config: ClassVar[type[InterventionConfig]] = InterventionConfig
    kind: ClassVar[Literal["trained", "fitted", "manual"]] = "trained"
    uses_sae: ClassVar[bool] = False
    """True when the method needs an SAE (to define or to apply it); checked once, here."""

    def __init__(self, cfg: InterventionConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__()
        if self.uses_sae and sae is None:
            raise ValueError(f"Intervention '{self.method}' works in the SAE basis and needs an SAE (set sae=...).")
        if sae is not None:
            sae.check_width(d_model)
        self.cfg = cfg
        self.d_model = d_model
        object.__setattr__(self, "sae", sae)  # frozen basis: not a submodule, not in state_dict

    @property
    def trainable(self) -> bool:
        return self.kind == "trained"

    @property
    def fit_positions(self) -> str:
        """Positions of the pairs' activations that `fit` receives: completion | all | last."""
        return "completion"

    @property
    def max_batch(self) -> int | None:
        """The largest batch the method supports (None: any)."""
        return None

    def forward(
        self, h: Float[Tensor, "batch pos d_model"], strength: Strength = 1.0
    ) -> Float[Tensor, "batch pos d_model"]:
        strength = check_strength(strength)
        if is_zero(strength):
            return h
        out = self.steer(h, strength_factor(strength, h))
        if isinstance(strength, Tensor) and bool((strength == 0).any()):
            out = torch.where((strength == 0).to(h.device)[:, None, None], h, out)  # rows at 0: exactly h
        return out

    @abstractmethod
    def steer(self, h: Float[Tensor, "batch pos d_model"], s: float | Tensor) -> Float[Tensor, "batch pos d_model"]:
        """The steered residual at strength s (a number or [batch, 1, 1]; never all zero)."""

    def attach_to(self, model: nn.Module, hook: str, strength: Strength = 1.0, positions=None):
        """Context manager that applies the method to `model` at `hook` (default: `forward` as a hook on the
        residual). A method that acts elsewhere (e.g. a peer's LoRA inside a block) overrides this."""
        return hooks.attach(model, hook, lambda h: self(h, strength), positions)

    # -- set-up -------------------------------------------------------------------------------------
    @classmethod
    def check_can_train(cls, cfg: dict) -> None:
        """Raise, naming the set-up command, when training this method needs something missing (a peer's own venv) or
        cfg asks for what it cannot do; `train` calls it before any heavy work. Nothing by default."""

    def prepare(self, stack, concept, max_len: int) -> None:
        """Data-dependent set-up before training or a closed-form fit (e.g. alive latents, a covariance, or the
        model for a peer that reads activations itself). Nothing by default."""

    def fit(self, data: FitData) -> Intervention:
        raise ValueError(f"'{self.method}' is not fitted in closed form (its kind is '{self.kind}').")

    def begin_generation(self, attention_mask: Tensor | None) -> None:
        """A new batch of prompts starts ([batch, pos] mask, left padding). Nothing by default."""

    # -- training -----------------------------------------------------------------------------------
    def train_own(self, stack, concept, cfg: dict) -> dict | None:
        """A method trained by its own library (in its own process or venv) trains here, on `concept` at `stack.hook`
        with cfg's optimisation fields, sets its parameters and returns its metrics (train_time_s, steps, losses).
        None (default): saebasis' Lightning trainer trains it."""
        return None

    def penalty(self) -> Tensor:
        """Regularisers added to the training loss (L1, Mahalanobis, ...); 0 by default."""
        return torch.zeros((), device=self._device())

    def clear_penalty_state(self) -> None:
        """Forget per-forward state a penalty reads (called at the start of each training step)."""

    def proximal_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called after every optimizer step while training: a penalty handled proximally (exact zeros)
        is applied here. Nothing by default."""

    def extra_metrics(self, h: Tensor, delta: Tensor) -> dict[str, Tensor]:
        """Method-specific validation metrics of a residual change delta at activations h (e.g. Mahalanobis norm)."""
        return {}

    # -- reading ------------------------------------------------------------------------------------
    def latent_scores(self) -> Float[Tensor, " d_sae"] | None:
        """How strongly the intervention acts on each SAE latent, from its weights (for ranking)."""
        return None

    def latent_score_scale(self, sae: SAEBasis) -> Float[Tensor, " d_sae"] | None:
        """Per-latent factor that turns `latent_scores()` into the size of the residual change along W_dec[i].
        None (default): the scores are read in the residual already, or are scale-free (cosines). Methods whose
        scores are in latent units (a change dz_i moves the residual by dz_i W_dec[i]) return ||W_dec[i]||."""
        return None

    def pullback(self, sae: SAEBasis | None = None):
        """Residual methods: their read weights (W_dec W_in) and written directions read through `sae`'s
        decoder (a `residual.Pullback`). None (default): the method has no such reading."""
        return

    def latent_change(
        self, h: Float[Tensor, "T d_model"], sae: SAEBasis, strength: float = 1.0
    ) -> tuple[Float[Tensor, "T d_sae"], str]:
        """z' - z per token and how it was obtained. Default: "sae_encoding", enc(h') - enc(h) for the steered
        h' (any method); SAE-basis methods override it with their exact change ("intervention")."""
        self.begin_generation(torch.ones(1, h.shape[0], dtype=torch.long, device=h.device))
        return sae.encode(self(h[None], strength)[0]) - sae.encode(h), "sae_encoding"

    def folded(self) -> Float[Tensor, " d_model"] | None:
        """The single residual vector this intervention adds at strength 1, when it is a constant shift."""
        return None

    def folded_for_inference(self) -> Float[Tensor, " d_model"] | None:
        """`folded()`, computed once and reused while no gradient is recorded (generation): a method that
        folds then costs one vector add per step. Recomputed whenever any parameter / buffer changes (an
        optimizer step or load_state_dict bumps the tensor's version)."""
        if torch.is_grad_enabled():
            return self.folded()
        key = (id(self.sae), *((t.data_ptr(), t._version) for t in [*self.parameters(), *self.buffers()]))
        memo = self.__dict__.get("_folded_memo")
        if memo is None or memo[0] != key:
            vector = self.folded()
            memo = (key, None if vector is None else vector.detach())
            self.__dict__["_folded_memo"] = memo
        return memo[1]

    def folded_shift(self, strength: float = 1.0) -> Float[Tensor, " d_model"] | None:
        """The constant residual vector the method adds at `strength` (the same at every token of every input),
        or None when its change depends on the residual. What `saebasis export` writes (one vector, one layer).
        Default: strength * folded(); a method whose shift is not linear in strength (a norm bound) overrides it."""
        vector = self.folded()
        return None if vector is None else strength * vector.detach()

    def unfolded_reason(self) -> str:
        """Why `folded_shift` is None: what `saebasis export` says when it refuses the method."""
        return (
            f"'{self.method}' changes the residual by an amount that depends on the residual itself (a function of h), "
            "not by one constant vector at one layer, so no control vector can carry it."
        )

    def peft_adapter(self, hook: str, strength: float, blocks_path: str) -> tuple[dict, dict[str, Tensor]] | None:
        """(adapter_config, tensors) of a peft LoRA adapter folder that applies the method at `strength` when the
        method is such an adapter (`blocks_path`: where the model keeps its blocks, e.g. model.layers); None here."""
        return None

    def describe(self) -> dict[str, Any]:
        """What a run reports about the method itself (parameters; subclasses add e.g. latents written)."""
        return {"n_params": sum(p.numel() for p in self.parameters() if p.requires_grad)}

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    def _device(self) -> torch.device:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")


def config_fields(method: str) -> set[str]:
    return {f.name for f in dataclasses.fields(get(method).Config)}


def get(method: str) -> type[Intervention]:
    # REGISTRY is full: importing this module first ran saebasis/interventions/__init__.py, which imports every method.
    if method not in REGISTRY:
        raise ValueError(f"Unknown intervention '{method}'. Choose one of: {sorted(REGISTRY)}.")
    return REGISTRY[method]


def build(method: str, cfg: dict[str, Any] | None, d_model: int, sae: SAEBasis | None = None) -> Intervention:
    """Construct a registered intervention from a plain dict config (as Hydra / cfg.json hold it).

    The one home of the unknown-field check. `strength` (configuration in older runs) is dropped: it is an
    argument of every call now."""
    cls = get(method)
    cfg = dict(cfg or {})
    cfg.pop("method", None)
    cfg.pop("strength", None)
    known = config_fields(method)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"Unknown field(s) {unknown} for intervention '{method}'. Valid fields: {sorted(known)}.")
    return cls(cls.Config(**cfg), d_model=d_model, sae=sae)
