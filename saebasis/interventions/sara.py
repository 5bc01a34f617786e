"""SARA (Tlaie 2024, "Introducing SARA"; code: atlaie/ethical-llms sara/utils_sara.py).

Activation histories at block L's input (hook blocks.L.hook_resid_pre), each d_model x T:
X_o (the prompt being steered), X_a (attract), X_r (repel). k = min(T_o, T_a, T_r).
SVD X = U S V^T, reduced R(X) = U[:, :k] diag(S[:k]) (d_model x k, float32).
Per neuron i: s_a_i = cos(R(X_o)_i, R(X_a)_i) across the k components, s_r_i likewise,
Delta_i = s_a_i - s_r_i in [-2, 2]; steer every position: X'_o[i, t] = X_o[i, t] (1 + c Delta_i).

Sets of attract / repel examples (the concept's positive / negative completions) are STACKED along
time into one history each (X_a = [h_a1; h_a2; ...]), so R(X_a) keeps the dominant directions of the
whole set; averaging would blur examples of different lengths (and a per-example R(X) is only defined
up to sign, so averaging those would cancel). With one attract and one repel example this is exactly
the published method. By default every column of R(X_a), R(X_r) is stored (at most d_model), so k is
exactly min(T_o, T_a, T_r); `n_components` caps k (smaller run folders, no longer the published k
once T_o exceeds it).

Two modes:
- faithful: as published. Delta is recomputed from each forward call's own activations, so during
  cached generation every decode step has T_o = 1, hence k = 1 and Delta_i in {-2, 0, 2} (the cosine
  of two scalars is their sign agreement). SVD signs are torch.linalg.svd's (arbitrary). Batch size 1.
- stable: Delta is computed once per generation, on the prompt (the prefill call), with singular-vector
  signs fixed (largest-|.| entry of each U column positive, in X_o, X_a and X_r alike), applied unchanged
  at every decode step; batches with left padding work (pass the attention mask with `begin_generation`,
  which also starts a new generation; a call with more than one position does too).

What differs in practice (scripts/sara_modes.py shows one prompt): in faithful mode the prompt is
steered with a Delta built from its own k = min(T_o, ...) components, but every generated token x is
steered with Delta_i = sigma (sign(x_i a_i) - sign(x_i r_i)) (a_i, r_i: neuron i's entry of the top
column of R(X_a), R(X_r), each with the SVD's arbitrary sign; sigma = +-1, the sign torch.linalg.svd
gives the one-column X_o, +1 on CPU LAPACK), so each neuron is scaled by 1 + c {-2, 0, 2}; the decode
steps dominate a long generation. In stable mode the prompt's Delta is reused for every
generated token, so the scale of each neuron stays fixed and does not flip with SVD sign choices.
Measured on SmolLM2 at blocks.12.hook_resid_pre (16 sentiment pairs, c = 1): faithful decode steps
scaled ~16% of neurons by 3 or -1, agreeing in sign with the prompt's Delta only 50% of the time, and
the text fell into repetition; stable kept fluent text.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from saebasis.core.sae import SAEBasis
from saebasis.interventions.base import FitData, Intervention, InterventionConfig, register


@dataclasses.dataclass
class SARAConfig(InterventionConfig):
    mode: Literal["faithful", "stable"] = "stable"
    """faithful: as published (Delta per forward call, k=1 when decoding with a cache); stable: Delta once on the
    prompt."""
    n_components: int | None = None
    """Columns of R(X_a), R(X_r) kept after fitting (an upper bound on k); null = all (k as published)."""
    positions: Literal["completion", "all", "last"] = "completion"
    """Tokens of each attract / repel example in its history: `completion` keeps the prompt (shared by both, and
    its first token's attention-sink activation, ~100x the typical norm, would be the top component of both) out."""
    sink: Literal["exclude", "include"] = "exclude"
    """The steered prompt's own history X_o: `exclude` leaves each prompt's first token (the attention sink:
    norm ~25,000 against a median ~146 on SmolLM2, so it is X_o's first singular direction, |cos| = 1.000, with
    99.9% of its squared singular values) out of X_o, as X_a and X_r leave it out; `include` is the published
    code to the letter (every position of the forward call is in X_o). Steering still applies to every position."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("faithful", "stable"):
            raise ValueError(f"SARA mode must be 'faithful' or 'stable', got '{self.mode}'.")
        if self.n_components is not None and self.n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}.")
        if self.sink not in ("exclude", "include"):
            raise ValueError(f"SARA sink must be 'exclude' or 'include', got '{self.sink}'.")


def reduced(x: Float[Tensor, "T d_model"], k: int, align_signs: bool = False) -> Float[Tensor, "d_model k"]:
    """R(X) = U[:, :k] diag(S[:k]) for the history X = x^T (d_model x T)."""
    u, s, _ = torch.linalg.svd(x.T.float(), full_matrices=False)  # u [d_model, min(d_model, T)]
    u, s = u[:, :k], s[:k]
    if align_signs:
        idx = u.abs().argmax(0)  # [k]
        u = u * torch.sign(u[idx, torch.arange(u.shape[1])])[None, :]
    return u * s[None, :]


def sara_delta(r_o: Tensor, r_a: Tensor, r_r: Tensor) -> Float[Tensor, " d_model"]:
    """Delta_i = cos(R_o[i], R_a[i]) - cos(R_o[i], R_r[i]), rows compared across the k components."""
    k = min(r_o.shape[1], r_a.shape[1], r_r.shape[1])
    r_o, r_a, r_r = r_o[:, :k], r_a[:, :k], r_r[:, :k]
    return F.cosine_similarity(r_o, r_a, dim=1, eps=1e-12) - F.cosine_similarity(r_o, r_r, dim=1, eps=1e-12)


@register("sara")
class SARA(Intervention):
    """X'_o[i, t] = X_o[i, t] (1 + c Delta_i),  Delta_i = cos(R(X_o)_i, R(X_a)_i) - cos(R(X_o)_i, R(X_r)_i)."""

    Config = SARAConfig
    kind = "fitted"

    def __init__(self, cfg: SARAConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        n = min(cfg.n_components or d_model, d_model)
        self.register_buffer("r_attract", torch.zeros(d_model, n))  # R(X_a), zero-padded columns
        self.register_buffer("r_repel", torch.zeros(d_model, n))
        self.register_buffer("k_fitted", torch.zeros(2, dtype=torch.long))  # valid columns of r_attract, r_repel
        self.register_buffer("delta_ref", torch.zeros(d_model))  # Delta on neutral text (for interpretation)
        self.register_buffer("mean_ref", torch.zeros(d_model))  # mean neutral activation
        self._delta: Tensor | None = None  # stable mode: Delta of the current generation, [batch, d_model]
        self._prompt_mask: Tensor | None = None
        self.k_seen: list[int] = []  # k used by each forward call (for inspection / tests)

    @property
    def max_batch(self) -> int | None:
        return 1 if self.cfg.mode == "faithful" else None

    @property
    def fit_positions(self) -> str:
        return self.cfg.positions

    def fit(self, data: FitData) -> SARA:
        """X_a, X_r: the positive / negative examples' histories [T_i, d_model] at `positions`, stacked along
        time; the neutral histories (first token dropped) give Delta_ref and the mean for interpretation."""
        return self.fit_histories(data.positive, data.negative, data.neutral)

    def fit_histories(self, attract: list[Tensor], repel: list[Tensor], neutral: list[Tensor] | None = None) -> SARA:
        align = self.cfg.mode == "stable"
        for j, (name, hist) in enumerate((("r_attract", attract), ("r_repel", repel))):
            x = torch.cat(hist)  # [sum T, d_model]
            r = reduced(x, self.r_attract.shape[1], align)
            getattr(self, name).zero_()[:, : r.shape[1]] = r
            self.k_fitted[j] = r.shape[1]
        if neutral:
            x = torch.cat(neutral)
            self.delta_ref.copy_(self._delta_of(x, align))
            self.mean_ref.copy_(x.mean(0))
        return self

    def _delta_of(self, x_o: Tensor, align: bool) -> Tensor:
        k = min(x_o.shape[0], int(self.k_fitted[0]), int(self.k_fitted[1]))
        self.k_seen.append(k)
        return sara_delta(reduced(x_o, k, align), self.r_attract[:, :k], self.r_repel[:, :k])

    def begin_generation(self, attention_mask: Tensor | None) -> None:
        """Start a new generation; in stable mode, which prompt positions are real ([batch, pos], left padding)."""
        self._prompt_mask = attention_mask
        self._delta = None

    def steer(self, h: Float[Tensor, "batch pos d_model"], s: float | Tensor) -> Float[Tensor, "batch pos d_model"]:
        if self.cfg.mode == "faithful":
            if h.shape[0] != 1:
                raise ValueError(
                    "SARA mode=faithful is batch size 1 with no padding, as published; use mode=stable for batches."
                )
            delta = self._delta_of(self._own_history(h[0]), align=False)[None]  # [1, d_model]
        else:
            if self._delta is None or h.shape[1] > 1 or self._delta.shape[0] != h.shape[0]:
                self._delta = self._prompt_delta(h)
            delta = self._delta
        return h * (1 + s * delta[:, None, :].to(h.dtype))

    def _own_history(self, x: Tensor) -> Tensor:
        """X_o of one row [T, d_model]: without its first token (the sink) when sink=exclude and T > 1."""
        return x[1:] if self.cfg.sink == "exclude" and x.shape[0] > 1 else x

    def _prompt_delta(self, h: Tensor) -> Tensor:
        mask = self._prompt_mask
        rows = []
        for b in range(h.shape[0]):
            x = h[b] if mask is None or mask.shape != h.shape[:2] else h[b, mask[b].bool()]  # [T_b, d_model]
            rows.append(self._delta_of(self._own_history(x), align=True))
        return torch.stack(rows)  # [batch, d_model]

    def latent_scores(self) -> Float[Tensor, " d_sae"] | None:
        """|cos(W_dec[i], Delta_ref * mean_ref)|: the change SARA makes to a typical activation at c = 1
        (x' - x = c Delta * x, with x the mean and Delta the SARA Delta of neutral prompts, fitted by
        fit-baseline without each prompt's first token, the attention sink), read against each decoder direction."""
        if self.sae is None:
            return None
        change = self.delta_ref * self.mean_ref  # [d_model]
        return F.cosine_similarity(self.sae.W_dec, change[None, :], dim=-1).abs()
