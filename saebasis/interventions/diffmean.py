"""DiffMean (CAA / ActAdd): the mean difference of contrastive activations, added at the hook."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from saebasis.core.activations import example_means
from saebasis.core.sae import SAEBasis
from saebasis.interventions.base import FitData, Intervention, InterventionConfig, register


@dataclasses.dataclass
class VectorConfig(InterventionConfig):
    positions: Literal["completion", "all", "last"] = "completion"
    """Token positions whose activations are averaged when fitting (completion tokens, all, or the last)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.positions not in ("completion", "all", "last"):
            raise ValueError(f"positions must be completion | all | last, got '{self.positions}'.")


class FittedVector(Intervention):
    """h' = h + s v, with v fitted in closed form (a buffer, saved with the run)."""

    Config = VectorConfig
    kind = "fitted"

    def __init__(self, cfg: VectorConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        self.register_buffer("v", torch.zeros(d_model))  # [d_model]

    def steer(self, h: Float[Tensor, "batch pos d_model"], s: float | Tensor) -> Float[Tensor, "batch pos d_model"]:
        return h + s * self.v.to(h.dtype)

    @property
    def fit_positions(self) -> str:
        return self.cfg.positions

    def fit(self, data: FitData) -> FittedVector:
        """Fit v from the mean activation of each positive / negative example (at `cfg.positions`)."""
        return self.fit_means(example_means(data.positive), example_means(data.negative))

    def fit_means(self, pos_means: Tensor, neg_means: Tensor) -> FittedVector:
        raise NotImplementedError

    def folded(self) -> Float[Tensor, " d_model"]:
        return self.v

    def latent_scores(self) -> Float[Tensor, " d_sae"] | None:
        """|cos(v, W_dec[i])| for each latent i (the decoder direction v is most aligned with)."""
        if self.sae is None:
            return None
        return torch.nn.functional.cosine_similarity(self.sae.W_dec, self.v[None, :], dim=-1).abs()


@register("diffmean")
class DiffMean(FittedVector):
    """h' = h + s v,  v = mean_i(h_pos_i) - mean_i(h_neg_i)  (CAA / ActAdd; means over the chosen positions)."""

    def fit_means(self, pos_means: Float[Tensor, "n d_model"], neg_means: Float[Tensor, "n d_model"]) -> DiffMean:
        self.v.copy_(pos_means.mean(0) - neg_means.mean(0))
        return self
