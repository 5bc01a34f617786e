"""Residual-stream methods (no SAE while training), read through the SAE decoder afterwards."""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from saebasis.core.sae import SAEBasis
from saebasis.interventions.base import Intervention, register
from saebasis.interventions.mahalanobis import AdditiveConfig, Mahalanobis
from saebasis.interventions.sae_adaptor import ACTIVATIONS


@dataclasses.dataclass
class ResidualConfig(AdditiveConfig):
    rank: int = 4
    """r: columns of W_in [d_model, r] / rows of W_out [r, d_model] (residual_adaptor only)."""
    act: Literal["identity", "relu", "gelu", "tanh"] = "identity"
    """Nonlinearity of the adaptor (residual_adaptor only)."""
    init_std: float = 0.01
    """Std of W_in's random init; W_out, b_out (and v) start at zero: identity at init."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}.")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got '{self.act}'.")


class Pullback(NamedTuple):
    read_weights: Tensor | None  # [d_sae, r]: W_dec W_in
    read_bias: Tensor | None  # [r]: b_dec W_in + b_in
    write_cosine: Tensor  # [n_dirs, d_sae]: cos(direction_j, W_dec[i])
    write_codes: Tensor  # [n_dirs, d_sae]: matching-pursuit code of each direction in the unit-norm decoder dictionary
    directions: Tensor  # [n_dirs, d_model]: rows of W_out, then b_out (or v)


def sparse_code(directions: Tensor, dictionary: Tensor, k: int = 8) -> Tensor:
    """Matching pursuit: each direction ~ sum of k decoder rows (coefficients in the row-normalised dictionary)."""
    atoms = F.normalize(dictionary, dim=-1)  # [d_sae, d_model]
    codes = torch.zeros(directions.shape[0], dictionary.shape[0], device=directions.device)
    residual = directions.clone()
    for _ in range(k):
        corr = residual @ atoms.T  # [n, d_sae]
        best = corr.abs().argmax(-1)
        coef = corr.gather(1, best[:, None])[:, 0]
        codes[torch.arange(len(best)), best] += coef
        residual = residual - coef[:, None] * atoms[best]
    return codes


class _Residual(Mahalanobis, Intervention):
    Config = ResidualConfig

    def __init__(self, cfg: ResidualConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        self._init_whitener(d_model, cfg)

    def delta(self, h: Tensor) -> Tensor:
        raise NotImplementedError

    def steer(self, h: Float[Tensor, "batch pos d_model"], s: float | Tensor) -> Float[Tensor, "batch pos d_model"]:
        return h + self._whiten(s * self.delta(h)).to(h.dtype)

    def penalty(self) -> Tensor:
        maha = self.mahalanobis_penalty()
        return super().penalty() if maha is None else maha

    def write_directions(self) -> Tensor:
        raise NotImplementedError

    def pullback(self, sae: SAEBasis | None = None, k: int = 8) -> Pullback:
        sae = sae or self.sae
        if sae is None:
            raise ValueError("pullback needs an SAE: pass one, or load the run with its SAE.")
        dirs = self.write_directions().detach()  # [n_dirs, d_model]
        cos = F.cosine_similarity(dirs[:, None, :], sae.W_dec[None], dim=-1)  # [n_dirs, d_sae]
        return Pullback(*self._read(sae), cos, sparse_code(dirs, sae.W_dec, k), dirs)

    def _read(self, sae: SAEBasis) -> tuple[Tensor | None, Tensor | None]:
        return None, None

    def latent_scores(self, sae: SAEBasis | None = None) -> Float[Tensor, " d_sae"] | None:
        """Write side of the pullback: sum_j ||direction_j|| |cos(direction_j, W_dec[i])|, i.e. the size of
        each written direction's component along latent i's decoder row (None without an SAE)."""
        sae = sae or self.sae
        if sae is None:
            return None
        pb = self.pullback(sae)
        return (pb.write_cosine.abs() * pb.directions.norm(dim=-1, keepdim=True)).sum(0)  # [d_sae]


@register("residual_vector")
class ResidualVector(_Residual):
    """h' = h + s v  (a learned steering vector; v = 0 at init)."""

    def __init__(self, cfg: ResidualConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        self.v = nn.Parameter(torch.zeros(d_model))

    def delta(self, h: Tensor) -> Tensor:
        return self.v.expand_as(h)

    def folded(self) -> Tensor:
        """v: the shift at strength 1 before any Mahalanobis bound."""
        return self.v

    def write_directions(self) -> Tensor:
        return self.v[None]


@register("residual_adaptor")
class ResidualAdaptor(_Residual):
    """h' = h + s (act(h W_in + b_in) W_out + b_out);  W_in [d_model, r], W_out [r, d_model] (0 at init).

    Pullback through the SAE decoder: read-out weights W_dec W_in [d_sae, r] and bias b_dec W_in + b_in
    (what latent activity drives each of the r units); write side: rows of W_out and b_out against the
    decoder rows (cosine, and a matching-pursuit sparse code), naming each direction by its top latents.
    """

    def __init__(self, cfg: ResidualConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        self.W_in = nn.Parameter(torch.randn(d_model, cfg.rank) * cfg.init_std)
        self.b_in = nn.Parameter(torch.zeros(cfg.rank))
        self.W_out = nn.Parameter(torch.zeros(cfg.rank, d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.act = ACTIVATIONS[cfg.act]()

    def delta(self, h: Tensor) -> Tensor:
        x = h.to(self.W_in.dtype)  # a bf16 / fp16 model's residual is read in the adaptor's own (fp32) precision
        return self.act(x @ self.W_in + self.b_in) @ self.W_out + self.b_out  # [batch, pos, d_model]

    def write_directions(self) -> Tensor:
        return torch.cat([self.W_out, self.b_out[None]])  # [r + 1, d_model]

    def _read(self, sae: SAEBasis) -> tuple[Tensor, Tensor]:
        return (sae.W_dec @ self.W_in).detach(), (sae.b_dec @ self.W_in + self.b_in).detach()
