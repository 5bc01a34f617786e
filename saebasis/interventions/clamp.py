"""Feature clamp / add: manual steering of chosen SAE latents (the sae-lens tutorial's recipe)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from saebasis.core.sae import SAEBasis
from saebasis.interventions.base import Intervention, InterventionConfig, register


@dataclasses.dataclass
class ClampConfig(InterventionConfig):
    latents: list[int] = dataclasses.field(default_factory=list)
    """Indices i of the SAE latents to steer."""
    values: list[float] = dataclasses.field(default_factory=list)
    """Value for each latent: the clamp target (mode=clamp) or the amount added (mode=add)."""
    mode: Literal["clamp", "add"] = "add"
    """add: z'_i = z_i + s v_i (folds to one vector);  clamp: z'_i = (1 - s) z_i + s v_i."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.latents) != len(self.values):
            raise ValueError(
                f"latents ({len(self.latents)}) and values ({len(self.values)}) must have the same length."
            )
        if self.mode not in ("clamp", "add"):
            raise ValueError(f"mode must be 'clamp' or 'add', got '{self.mode}'.")


@register("clamp")
class Clamp(Intervention):
    "add: z'_i = z_i + s v_i  (h' = h + s sum_i v_i W_dec[i]);  clamp: z'_i = (1-s) z_i + s v_i, h' = dec(z') + err(h)."

    Config = ClampConfig
    kind = "manual"
    uses_sae = True

    def __init__(self, cfg: ClampConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        for i in cfg.latents:
            if not 0 <= i < sae.d_sae:
                raise ValueError(f"latent index {i} is out of range for an SAE with d_sae={sae.d_sae}.")
        self.register_buffer("idx", torch.tensor(cfg.latents, dtype=torch.long))
        self.register_buffer("val", torch.tensor(cfg.values, dtype=torch.float32))

    def steer(self, h: Float[Tensor, "batch pos d_model"], s: float | Tensor) -> Float[Tensor, "batch pos d_model"]:
        if self.cfg.mode == "add":
            return h + s * self.folded_for_inference().to(h.dtype)
        z = self.sae.encode(h)
        z_new = z.clone()
        z_new[..., self.idx] = (1 - s) * z[..., self.idx] + s * self.val
        return self.sae.splice(h, z, z_new)

    def latent_change(self, h: Tensor, sae: SAEBasis, strength: float = 1.0) -> tuple[Tensor, str]:
        """add: z'_i - z_i = s v_i; clamp: s (v_i - z_i), on the chosen latents only (exact)."""
        if sae is not self.sae:
            return super().latent_change(h, sae, strength)
        z = sae.encode(h)  # [T, d_sae]
        dz = torch.zeros_like(z)
        dz[:, self.idx] = strength * self.val if self.cfg.mode == "add" else strength * (self.val - z[:, self.idx])
        return dz, "intervention"

    def describe(self) -> dict:
        return {
            **super().describe(),
            "latents_written": len(self.cfg.latents),
            "latents_read": len(self.cfg.latents) if self.cfg.mode == "clamp" else 0,
        }

    def folded(self) -> Float[Tensor, " d_model"] | None:
        if self.cfg.mode != "add":
            return None
        return self.val @ self.sae.W_dec[self.idx]  # [d_model]

    def unfolded_reason(self) -> str:
        return (
            "clamp with mode=clamp sets the chosen latents to values, "
            "a change that depends on their current activation "
            "(on h), so it is no constant vector; mode=add folds to sum_i v_i W_dec[i] and exports."
        )

    def latent_score_scale(self, sae: SAEBasis) -> Tensor:
        """latent_scores() are in latent units: x ||W_dec[i]|| gives the residual change along each row."""
        return sae.W_dec.detach().norm(dim=-1)

    def latent_scores(self) -> Float[Tensor, " d_sae"]:
        scores = torch.zeros(self.sae.d_sae, device=self.val.device)
        scores[self.idx] = self.val.abs()
        return scores
