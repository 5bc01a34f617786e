"""Which SAE latents an intervention acts on, and how much of its change the top-k of them explain.

Scores come from the Intervention interface: `latent_scores()` ([d_sae]; |b| for the SAE bias, write-side
weights for the SAE adaptor, decoder pullback for residual methods / DiffMean / PCA / SARA). When a method
returns None there, the fallback is |cos(folded(), W_dec[i])|: how well each decoder direction lines up with
the one residual vector the method adds.

Two "norm explained" curves over k (latents taken in ranking order):
  weight share    sum_{i<=k} s_(i)^2 / sum_i s_i^2  of the score vector s (for the SAE bias: the share of
                  ||b||^2 carried by the k largest |b_i|; exactly 1 at k = d_sae).
  residual share  ||P_k v||^2 / ||v||^2, v = folded() (the residual change), P_k the orthogonal projection
                  onto the span of the top-k decoder rows. Monotone (nested subspaces); 1 once the span holds
                  v, so at k = d_sae for any pure latent-space bias (v = b W_dec).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from saebasis.interpret.threads import one_thread

FALLBACK = "|cos(folded(), W_dec[i])|"


class Ranking(NamedTuple):
    indices: Int[Tensor, " k"]  # the top-k latents, strongest first
    scores: Float[Tensor, " d_sae"]  # the score of every latent
    source: str  # where the scores came from: "latent_scores()" or FALLBACK


def scores_of(intervention, sae) -> tuple[Float[Tensor, " d_sae"], str]:
    """Per-latent scores of `intervention` read through `sae` (see the module docstring)."""
    scores = intervention.latent_scores()
    source = f"{type(intervention).__name__}.latent_scores()"
    if scores is None:
        v = intervention.folded()
        if v is None:
            raise ValueError(
                f"Intervention '{intervention.method}' gives neither latent_scores() nor a folded() residual vector, "
                "so its latents cannot be ranked. "
                f"Implement latent_scores() -> [d_sae] on {type(intervention).__name__}."
            )
        scores = F.cosine_similarity(sae.W_dec.float(), v.detach().float()[None, :], dim=-1).abs()
        source = FALLBACK
    scores = scores.detach().float().cpu()
    if scores.shape != (sae.d_sae,):
        raise ValueError(
            f"latent_scores() of '{intervention.method}' has shape {tuple(scores.shape)}; "
            f"expected ({sae.d_sae},) = [d_sae]."
        )
    if not torch.isfinite(scores).all():
        raise ValueError(
            f"latent_scores() of '{intervention.method}' has NaN/inf entries; "
            "the run's weights are broken. Re-train it."
        )
    return scores, source


def rank_latents(intervention, sae, k: int = 10) -> Ranking:
    """The k latents the intervention acts on most (ties broken by the lower index)."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}.")
    scores, source = scores_of(intervention, sae)
    order = order_of(scores)
    return Ranking(order[: min(k, scores.numel())], scores, source)


def order_of(scores: Float[Tensor, " d_sae"]) -> Int[Tensor, " d_sae"]:
    """All latents by descending score; a stable sort, so equal scores keep index order."""
    return torch.sort(scores, descending=True, stable=True).indices


def weight_share(scores: Float[Tensor, " d_sae"]) -> Float[Tensor, " d_sae"]:
    """Cumulative share of sum(scores^2) in the top-k scores, for k = 1 .. d_sae (all zeros if scores are 0)."""
    cum = scores.double().pow(2).sort(descending=True).values.cumsum(0)
    if cum[-1] == 0:
        return torch.zeros_like(cum)
    return cum / cum[-1]  # dividing by the last partial sum makes k = d_sae exactly 1


@torch.no_grad()
def residual_share(
    v: Float[Tensor, " d_model"], W_dec: Float[Tensor, "d_sae d_model"], order: Int[Tensor, " n"], tol: float = 1e-8
) -> Float[Tensor, " n"]:
    """||P_k v||^2 / ||v||^2 for the span of W_dec[order[:k]], k = 1 .. len(order).

    Gram-Schmidt (twice, for stability) in float64; a row already in the span adds nothing. Once the basis
    spans all of R^d_model the curve is flat, so the loop stops there.
    """
    v = v.detach().double().cpu()
    rows = W_dec.detach().double().cpu()[order]  # [n, d_model]
    total = v.pow(2).sum()
    gains = torch.zeros(len(order), dtype=torch.float64)
    if total == 0:
        return gains
    basis = torch.zeros(v.numel(), v.numel(), dtype=torch.float64)  # [d_model, d_model]; rows < rank are orthonormal
    rank = 0
    with one_thread():
        for j, row in enumerate(rows):
            if rank == v.numel():
                break
            q = basis[:rank]  # [rank, d_model]
            for _ in range(2):
                row = row - q.T @ (q @ row)
            norm = row.norm()
            if norm > tol * max(1.0, float(rows[j].norm())):
                basis[rank] = row / norm
                gains[j] = (basis[rank] @ v) ** 2
                rank += 1
    return (gains.cumsum(0) / total).clamp(max=1.0)


def norm_explained(intervention, sae, ranking: Ranking, max_k: int | None = None) -> dict:
    """Both curves (lists, index k-1 = top-k) up to max_k latents (None = all d_sae)."""
    n = sae.d_sae if max_k is None else min(max_k, sae.d_sae)
    order = order_of(ranking.scores)[:n]
    v = intervention.folded()
    return {
        "k": list(range(1, n + 1)),
        "weight_share": weight_share(ranking.scores)[:n].tolist(),
        "residual_share": residual_share(v, sae.W_dec, order).tolist() if v is not None else None,
    }
