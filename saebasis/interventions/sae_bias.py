"""SAE-basis steering bias."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from saebasis.interventions.base import Intervention, register
from saebasis.interventions.mahalanobis import AdditiveConfig, Mahalanobis
from saebasis.sae import SAEBasis


@dataclasses.dataclass
class SAEBiasConfig(AdditiveConfig):
    l1_coef: float = 3e-3
    """L1 penalty on the latent bias b (sparsity: few latents change)."""
    nonneg: bool = False
    """Only add to latents (b >= 0), never subtract: easier to read, as in feature steering."""
    l1_mode: Literal["proximal", "penalty"] = "proximal"
    """proximal: after each optimizer step b is soft-thresholded by lr * l1_coef in the optimizer's own
    metric (Adam: divided by sqrt(v_hat) + eps), so every latent whose loss gradient stays below l1_coef
    is exactly 0 -- a sparse bias that reads as a short list of latents. penalty: l1_coef * |b|_1 is added
    to the loss; Adam's normalised steps then move every latent by ~lr per step and b ends dense."""
    alive_only: bool = False
    """Restrict b to latents that fire on the concept's own texts (pairs and neutral prompts, attention-sink
    token excluded), found before training. A bias may otherwise lean on dead latents: decoder directions
    that never activate, so no context can say what they mean."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.l1_coef < 0:
            raise ValueError(f"l1_coef must be >= 0, got {self.l1_coef}.")
        if self.l1_mode not in ("proximal", "penalty"):
            raise ValueError(f"l1_mode must be 'proximal' or 'penalty', got {self.l1_mode!r}.")


@register("sae_bias")
class SAEBias(Mahalanobis, Intervention):
    """z' = z + s b  =>  h' = h + s (dec(b) - dec(0)) = h + s b W_dec.

    b in R^d_sae, L1-penalised (by default as a proximal step: unused latents are exactly 0), optionally >= 0.
    Because the SAE decoder is affine, the change folds into one residual vector v = b W_dec: applying it
    needs no SAE at inference.
    Mahalanobis option: penalise ||Sigma^{-1/2} s v||^2 or bound ||Sigma^{-1/2} s v|| <= max.
    """

    Config = SAEBiasConfig
    uses_sae = False  # needs the SAE to define b, but applies as the folded vector

    def __init__(self, cfg: SAEBiasConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        if sae is None:
            raise ValueError("Intervention 'sae_bias' is a bias on SAE latents and needs an SAE (set sae=...).")
        super().__init__(cfg, d_model, sae)
        self.b = nn.Parameter(torch.zeros(sae.d_sae))  # [d_sae]
        self.register_buffer("allowed", None, persistent=False)  # [d_sae] bool, set by restrict_to (alive_only)
        self._init_whitener(d_model, cfg)

    def restrict_to(self, allowed: Bool[Tensor, " d_sae"]) -> None:
        """Train b only on these latents: the others are held at exactly 0 after every optimizer step."""
        if allowed.shape != self.b.shape or allowed.dtype != torch.bool:
            raise ValueError(f"restrict_to needs a bool mask of shape {tuple(self.b.shape)}, got {allowed.dtype} {tuple(allowed.shape)}.")
        self.allowed = allowed.to(self.b.device)
        with torch.no_grad():
            self.b.masked_fill_(~self.allowed, 0.0)

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
        if self.cfg.l1_mode == "proximal":
            l1 = l1.detach()  # reported in the loss, applied by proximal_step (no gradient)
        if self.whitener is None or self.whitener.coef <= 0:
            return l1
        return l1 + self.whitener.penalty(self.strength * self.folded())  # constant shift: no need to record deltas

    def latent_scores(self) -> Float[Tensor, " d_sae"]:
        return self.bias.detach().abs()

    @torch.no_grad()
    def proximal_step(self, optimizer: torch.optim.Optimizer) -> None:
        """b <- sign(b) max(|b| - tau, 0) (with nonneg: max(b - tau, 0)), tau = lr * l1_coef / D,
        D = sqrt(v_hat) + eps for Adam / AdamW (the metric of its step), 1 otherwise (ISTA); then the
        latents outside `allowed` (alive_only) are set back to 0 (the projection onto that subspace)."""
        self._soft_threshold(optimizer)
        if self.allowed is not None:
            self.b.masked_fill_(~self.allowed, 0.0)

    def _soft_threshold(self, optimizer: torch.optim.Optimizer) -> None:
        if self.cfg.l1_mode != "proximal" or self.cfg.l1_coef == 0:
            return
        opt = getattr(optimizer, "optimizer", optimizer)  # Lightning wraps the torch optimizer
        group = next((g for g in opt.param_groups if any(p is self.b for p in g["params"])), None)
        state = opt.state.get(self.b, {})
        if group is None or not state:
            return
        tau = group["lr"] * self.cfg.l1_coef
        if "exp_avg_sq" in state:
            v_hat = state["exp_avg_sq"] / (1 - group["betas"][1] ** float(state["step"]))
            tau = tau / (v_hat.sqrt() + group["eps"])  # [d_sae]
        shrunk = self.b - tau if self.cfg.nonneg else self.b.abs() - tau
        self.b.copy_(shrunk.clamp_min(0) if self.cfg.nonneg else self.b.sign() * shrunk.clamp_min(0))
