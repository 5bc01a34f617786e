"""SAE-basis adaptor: a sparse and/or low-rank map on SAE latents, with a skip connection."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saebasis.interventions.base import Intervention, register
from saebasis.interventions.mahalanobis import AdditiveConfig, Mahalanobis
from saebasis.sae import SAEBasis

ACTIVATIONS = {"identity": nn.Identity, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclasses.dataclass
class SAEAdaptorConfig(AdditiveConfig):
    rank: int = 4
    """r: width of the bottleneck A [d_sae, r], B [r, d_sae] (low rank)."""
    act: Literal["identity", "relu", "gelu", "tanh"] = "identity"
    """Nonlinearity between A and B."""
    l1_coef: float = 0.0
    """L1 penalty on the entries of A and B (sparse adaptor)."""
    topk_entries: int = 0
    """Keep only the k largest-|.| entries of A and of B in the forward pass (0 = all)."""
    out_bias: bool = True
    """Learn the latent bias b (z' = z + f(z) + b)."""
    init_std: float = 0.01
    """Std of A's random init (B and b start at zero, so the adaptor is the identity at init)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}.")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got '{self.act}'.")
        if self.l1_coef < 0 or self.topk_entries < 0 or self.init_std < 0:
            raise ValueError("l1_coef, topk_entries and init_std must be >= 0.")


def topk_mask(w: Tensor, k: int) -> Tensor:
    """w with all but its k largest-|.| entries zeroed (gradients flow to the kept entries)."""
    if k <= 0 or k >= w.numel():
        return w
    threshold = w.detach().abs().flatten().topk(k).values[-1]
    return w * (w.detach().abs() >= threshold)


@register("sae_adaptor")
class SAEAdaptor(Mahalanobis, Intervention):
    """z' = z + s (act(z A + a) B + b),  h' = dec(z') + err(h) = h + dec(z') - dec(z).

    A [d_sae, r], B [r, d_sae]; B = 0 and b = 0 at init, so the adaptor is the identity until trained.
    Penalties: L1 on the entries of A and B (sparse), the rank r (low rank), optional top-k entry masks;
    Mahalanobis option on the residual change delta = dec(z') - dec(z) (penalty or per-token bound).
    """

    Config = SAEAdaptorConfig
    uses_sae = True

    def __init__(self, cfg: SAEAdaptorConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        d_sae = sae.d_sae
        self.A = nn.Parameter(torch.randn(d_sae, cfg.rank) * cfg.init_std)  # [d_sae, r]
        self.a = nn.Parameter(torch.zeros(cfg.rank))  # [r]
        self.B = nn.Parameter(torch.zeros(cfg.rank, d_sae))  # [r, d_sae]
        self.b = nn.Parameter(torch.zeros(d_sae), requires_grad=cfg.out_bias)  # [d_sae]
        self.act = ACTIVATIONS[cfg.act]()
        self._init_whitener(d_model, cfg)

    def weights(self) -> tuple[Tensor, Tensor]:
        return topk_mask(self.A, self.cfg.topk_entries), topk_mask(self.B, self.cfg.topk_entries)

    def latent_delta(self, z: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_sae"]:
        A, B = self.weights()
        return self.act(z @ A + self.a) @ B + self.b

    def steer(self, h: Float[Tensor, "batch pos d_model"], s: float | Tensor) -> Float[Tensor, "batch pos d_model"]:
        z = self.sae.encode(h)  # [batch, pos, d_sae]
        if self.whitener is None:
            return self.sae.splice(h, z, z + s * self.latent_delta(z))
        delta = self.sae.decode(z + s * self.latent_delta(z)) - self.sae.decode(z)  # [batch, pos, d_model]
        return h + self._whiten(delta).to(h.dtype)

    def latent_change(self, h: Tensor, sae: SAEBasis, strength: float = 1.0) -> tuple[Tensor, str]:
        """z' - z = s f(z) (exact, in the method's own basis)."""
        if sae is not self.sae:
            return super().latent_change(h, sae, strength)
        return strength * self.latent_delta(sae.encode(h)).detach(), "intervention"

    def describe(self) -> dict:
        A, B = self.weights()
        read = int((A.detach().abs().sum(1) > 0).sum())
        written = int(((B.detach().abs().sum(0) + self.b.detach().abs()) > 0).sum())
        return {**super().describe(), "latents_read": read, "latents_written": written}

    def penalty(self) -> Tensor:
        l1 = self.cfg.l1_coef * (self.A.abs().sum() + self.B.abs().sum())
        maha = self.mahalanobis_penalty()
        return l1 if maha is None else l1 + maha

    def latent_score_scale(self, sae: SAEBasis) -> Tensor:
        """latent_scores() are in latent units: x ||W_dec[i]|| gives the residual change along each row."""
        return sae.W_dec.detach().norm(dim=-1)

    def latent_scores(self) -> Float[Tensor, " d_sae"]:
        """Write-side weight of each latent: ||B[:, i]|| + |b_i| (how much the adaptor can move latent i)."""
        _, B = self.weights()
        return (B.detach().norm(dim=0) + self.b.detach().abs())
