"""SAE latent steering (AxBench's "SAE" row): add the decoder direction of the latent(s) the concept turns on.

AxBench steers with one SAE feature picked by its label and scaled by hand; here the latent is picked from the
concept's own pairs (the k latents whose mean activation rises most from negative to positive completions), so the
row runs on any concept with no human in the loop, and the strength search scales it like every other method.
"""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Float
from torch import Tensor

from saebasis.interventions.base import FitData, register
from saebasis.interventions.diffmean import FittedVector, VectorConfig
from saebasis.core.sae import SAEBasis


@dataclasses.dataclass
class SAELatentConfig(VectorConfig):
    k: int = 1
    """How many latents steer: those with the largest mean activation difference (positive minus negative)."""
    chunk: int = 4096
    """Tokens encoded at a time while fitting (memory only)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1 or self.chunk < 1:
            raise ValueError(f"k and chunk must be >= 1, got k={self.k}, chunk={self.chunk}.")


@register("sae_latent")
class SAELatent(FittedVector):
    """h' = h + s v,  v = sum_{i in top_k(D)} D_i W_dec[i],  D = mean_t enc(h_pos,t) - mean_t enc(h_neg,t)

    (per-token SAE codes pooled over every pair's positions; D_i in latent units, so s = 1 adds each chosen latent
    at its average rise). The change lives on k decoder rows: read it by the latents' contexts alone.
    """

    Config = SAELatentConfig
    uses_sae = True

    def __init__(self, cfg: SAELatentConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        self.register_buffer("latents", torch.full((cfg.k,), -1, dtype=torch.long))  # [k] chosen latent ids
        self.register_buffer("gains", torch.zeros(cfg.k))  # [k] their mean activation differences D_i

    def fit(self, data: FitData) -> "SAELatent":
        diff = self._mean_code(data.positive) - self._mean_code(data.negative)  # [d_sae]
        gains, idx = diff.topk(self.cfg.k)  # [k], [k]
        if not bool((gains > 0).all()):
            raise ValueError(f"sae_latent: only {int((gains > 0).sum())} SAE latents are more active on the positive "
                             f"completions than on the negative ones, k={self.cfg.k}. Use a smaller k, or check the pairs "
                             "(positive and negative swapped?) and that the SAE reads this hook.")
        self.latents.copy_(idx)
        self.gains.copy_(gains)
        self.v.copy_(gains.to(self.sae.W_dec.dtype) @ self.sae.W_dec.detach()[idx])  # [k] @ [k, d_model]
        return self

    @torch.no_grad()
    def _mean_code(self, acts: list[Tensor]) -> Float[Tensor, " d_sae"]:
        tokens = torch.cat(acts).to(self.sae.W_dec.device)  # [T, d_model]
        return self.sae.encode_chunked(tokens, self.cfg.chunk).mean(0).cpu()  # [d_sae]

    def latent_scores(self) -> Float[Tensor, " d_sae"]:
        """|D_i| at the chosen latents, 0 elsewhere (latent units)."""
        scores = torch.zeros(self.sae.d_sae, device=self.gains.device)
        chosen = self.latents >= 0
        scores[self.latents[chosen]] = self.gains[chosen].abs()
        return scores

    def latent_score_scale(self, sae: SAEBasis) -> Tensor:
        return sae.W_dec.detach().norm(dim=-1)

    def latent_change(self, h: Tensor, sae: SAEBasis, strength: float = 1.0) -> tuple[Tensor, str]:
        """z' - z = s D on the k chosen latents at every token (exact, in the method's own basis)."""
        if sae is not self.sae:
            return super().latent_change(h, sae, strength)
        change = torch.zeros(h.shape[0], sae.d_sae, device=h.device)
        chosen = self.latents >= 0
        change[:, self.latents[chosen]] = strength * self.gains[chosen].to(h.device)
        return change, "intervention"

    def describe(self) -> dict:
        return {**super().describe(), "latents_written": int((self.latents >= 0).sum()), "latents_read": 0,
                "latents": self.latents.tolist(), "gains": [round(float(g), 4) for g in self.gains]}
