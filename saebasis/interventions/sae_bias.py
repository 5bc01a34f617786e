"""SAE-basis steering bias."""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saebasis.interventions.base import Intervention, InterventionConfig, register
from saebasis.sae import SAEBasis


@dataclasses.dataclass
class SAEBiasConfig(InterventionConfig):
    l1_coef: float = 1e-3
    """L1 penalty on the latent bias b (sparsity: few latents change)."""
    nonneg: bool = False
    """Only add to latents (b >= 0), never subtract: easier to read, as in feature steering."""


@register("sae_bias")
class SAEBias(Intervention):
    """z' = z + s b  =>  h' = h + s (dec(b) - dec(0)) = h + s b W_dec.

    b in R^d_sae, L1-penalised, optionally >= 0. Because the SAE decoder is affine, the change folds
    into one residual vector v = b W_dec: applying it needs no SAE at inference.
    """

    Config = SAEBiasConfig
    uses_sae = False  # needs the SAE to define b, but applies as the folded vector

    def __init__(self, cfg: SAEBiasConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        if sae is None:
            raise ValueError("Intervention 'sae_bias' is a bias on SAE latents and needs an SAE (set sae=...).")
        super().__init__(cfg, d_model, sae)
        self.b = nn.Parameter(torch.zeros(sae.d_sae))  # [d_sae]

    @property
    def bias(self) -> Float[Tensor, " d_sae"]:
        return self.b.clamp_min(0) if self.cfg.nonneg else self.b

    def folded(self) -> Float[Tensor, " d_model"]:
        sae = self.sae
        return sae.decode(self.bias) - sae.decode(torch.zeros_like(self.bias))  # [d_model]

    def steer(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return h + self.strength * self.folded().to(h.dtype)

    def penalty(self) -> Tensor:
        return self.cfg.l1_coef * self.bias.abs().sum()

    def latent_scores(self) -> Float[Tensor, " d_sae"]:
        return self.bias.detach().abs()
