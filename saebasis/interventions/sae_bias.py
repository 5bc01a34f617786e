"""SAE-basis steering bias."""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saebasis.interventions.base import Intervention, register
from saebasis.interventions.mahalanobis import AdditiveConfig, Mahalanobis
from saebasis.sae import SAEBasis


@dataclasses.dataclass
class SAEBiasConfig(AdditiveConfig):
    l1_coef: float = 1e-3
    """L1 penalty on the latent bias b (sparsity: few latents change)."""
    nonneg: bool = False
    """Only add to latents (b >= 0), never subtract: easier to read, as in feature steering."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.l1_coef < 0:
            raise ValueError(f"l1_coef must be >= 0, got {self.l1_coef}.")


@register("sae_bias")
class SAEBias(Mahalanobis, Intervention):
    """z' = z + s b  =>  h' = h + s (dec(b) - dec(0)) = h + s b W_dec.

    b in R^d_sae, L1-penalised, optionally >= 0. Because the SAE decoder is affine, the change folds
    into one residual vector v = b W_dec: applying it needs no SAE at inference.
    Mahalanobis option: penalise ||Sigma^{-1/2} s v||^2 or bound ||Sigma^{-1/2} s v|| <= max.
    """

    Config = SAEBiasConfig
    uses_sae = False  # needs the SAE to define b, but applies as the folded vector

    def __init__(self, cfg: SAEBiasConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        if sae is None:
            raise ValueError("Intervention 'sae_bias' is a bias on SAE latents and needs an SAE (set sae=...).")
        super().__init__(cfg, d_model, sae)
        self.b = nn.Parameter(torch.zeros(sae.d_sae))  # [d_sae]
        self._init_whitener(d_model, cfg)

    @property
    def bias(self) -> Float[Tensor, " d_sae"]:
        return self.b.clamp_min(0) if self.cfg.nonneg else self.b

    def folded(self) -> Float[Tensor, " d_model"]:
        """b W_dec; under a Mahalanobis bound, the bounded shift at this strength divided by it."""
        sae = self.sae
        v = sae.decode(self.bias) - sae.decode(torch.zeros_like(self.bias))  # [d_model]
        if self.whitener is None or self.whitener.max_norm <= 0 or self.strength == 0:
            return v
        return self.whitener.constrain(self.strength * v) / self.strength

    def steer(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return h + self.strength * self.folded_for_inference().to(h.dtype)

    def penalty(self) -> Tensor:
        l1 = self.cfg.l1_coef * self.bias.abs().sum()
        if self.whitener is None or self.whitener.coef <= 0:
            return l1
        return l1 + self.whitener.penalty(self.strength * self.folded())  # constant shift: no need to record deltas

    def latent_scores(self) -> Float[Tensor, " d_sae"]:
        return self.bias.detach().abs()
