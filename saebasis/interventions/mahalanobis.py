"""Mahalanobis (whitened) norm for additive interventions: keep steered activations high-likelihood.

Fit mean and covariance of hook activations with shrinkage, Sigma_l = Sigma + lambda I, and measure a
change delta by ||Sigma_l^{-1/2} delta|| instead of ||delta||: moving along directions the activations
rarely vary in costs more. Used as a penalty (coef * mean ||W delta||^2) or a hard constraint
(delta rescaled so ||W delta|| <= max_norm).
"""

from __future__ import annotations

import dataclasses
from collections import deque

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saebasis.core.activations import collect
from saebasis.interventions.base import InterventionConfig


def inverse_sqrt_cov(acts: Float[Tensor, "n d_model"], shrinkage: float) -> Float[Tensor, "d_model d_model"]:
    """Sigma_l^{-1/2} with Sigma_l = Cov(acts) + shrinkage * mean(diag Cov) * I."""
    x = acts.double() - acts.double().mean(0)
    cov = x.T @ x / max(1, x.shape[0] - 1)  # [d_model, d_model]
    cov = cov + shrinkage * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype)
    evals, evecs = torch.linalg.eigh(cov)
    return (evecs * evals.clamp_min(1e-12).rsqrt()) @ evecs.T


class Whitener(nn.Module):
    """Holds W = Sigma_l^{-1/2} (identity until fitted) and applies the penalty or the constraint."""

    def __init__(self, d_model: int, coef: float = 0.0, max_norm: float = 0.0, shrinkage: float = 0.1) -> None:
        super().__init__()
        self.coef, self.max_norm, self.shrinkage = coef, max_norm, shrinkage
        self.register_buffer("W", torch.eye(d_model))  # [d_model, d_model]

    def fit(self, acts: Float[Tensor, "n d_model"]) -> Whitener:
        self.W.copy_(inverse_sqrt_cov(acts, self.shrinkage).float())
        return self

    def norm(self, delta: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch"]:
        return (delta @ self.W).norm(dim=-1)

    def constrain(self, delta: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        if self.max_norm <= 0:
            return delta
        scale = (self.max_norm / self.norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        return delta * scale[..., None]

    def penalty(self, delta: Float[Tensor, "*batch d_model"]) -> Tensor:
        return self.coef * self.norm(delta).pow(2).mean()


def maybe_whitener(d_model: int, coef: float, max_norm: float, shrinkage: float) -> Whitener | None:
    return Whitener(d_model, coef, max_norm, shrinkage) if coef > 0 or max_norm > 0 else None


@dataclasses.dataclass
class AdditiveConfig(InterventionConfig):
    """Fields of every additive method (h' = h + delta): the Mahalanobis penalty / bound on delta."""

    mahalanobis_coef: float = 0.0
    """Penalty coef * mean ||Sigma^{-1/2} delta||^2 over steered tokens (0 = off)."""
    mahalanobis_max: float = 0.0
    """Hard bound: delta is rescaled per token so ||Sigma^{-1/2} delta|| <= max (0 = off)."""
    mahalanobis_shrinkage: float = 0.1
    """lambda in Sigma + lambda * mean(diag Sigma) * I (keeps the inverse well conditioned)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mahalanobis_coef < 0 or self.mahalanobis_max < 0:
            raise ValueError("mahalanobis_coef and mahalanobis_max must be >= 0 (0 turns each off).")
        if self.mahalanobis_shrinkage <= 0:
            raise ValueError(f"mahalanobis_shrinkage must be > 0, got {self.mahalanobis_shrinkage}.")


class Mahalanobis:
    """Mixin for additive interventions: `self.whitener` (None when both options are off), `_whiten(delta)`
    applies the bound and records delta for the penalty, `mahalanobis_penalty()` reads the recorded deltas.

    Deltas are kept only while the penalty is on, at most `KEEP` forwards (pos, neg, KL batches of one
    step); the training step calls `clear_penalty_state()` before its forwards.
    """

    KEEP = 8

    def _init_whitener(self, d_model: int, cfg: AdditiveConfig) -> None:
        self.whitener = maybe_whitener(d_model, cfg.mahalanobis_coef, cfg.mahalanobis_max, cfg.mahalanobis_shrinkage)
        self._deltas: deque[Tensor] = deque(maxlen=self.KEEP)

    def _whiten(self, delta: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        if self.whitener is None:
            return delta
        delta = self.whitener.constrain(delta)
        if self.whitener.coef > 0:
            self._deltas.append(delta)
        return delta

    def mahalanobis_penalty(self) -> Tensor | None:
        if self.whitener is None or self.whitener.coef <= 0 or not self._deltas:
            return None
        return torch.stack([self.whitener.penalty(d) for d in self._deltas]).mean()

    def clear_penalty_state(self) -> None:
        self._deltas.clear()

    def prepare(self, stack, concept, max_len: int) -> None:
        """Fit Sigma on activations at the hook (neutral prompts and the pairs' prompts), every text's first
        token left out: it carries the attention-sink activation (~100x the norm of the others), which would
        otherwise dominate Sigma and make every other direction look cheap."""
        super().prepare(stack, concept, max_len)
        if self.whitener is None:
            return
        acts = collect(
            stack.model,
            stack.tokenizer,
            stack.hook,
            list(concept.neutral) + [p.prompt for p in concept.pairs],
            positions="all",
            max_len=max_len,
            desc="covariance",
        )
        self.whitener.fit(torch.cat([a[1:] for a in acts if len(a) > 1]))

    def folded_shift(self, strength: float = 1.0) -> Tensor | None:
        """strength * folded() under the hard bound (mahalanobis_max), as `steer` applies it."""
        shift = super().folded_shift(strength)
        if shift is None or self.whitener is None:
            return shift
        return self.whitener.constrain(shift).detach()

    def extra_metrics(self, h: Tensor, delta: Tensor) -> dict[str, Tensor]:
        if self.whitener is None:
            return {}
        return {"resid_change_mahalanobis": self.whitener.norm(delta).mean()}
