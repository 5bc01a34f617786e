"""What the method did on the corpus, measured: the change of every SAE latent, and each document's peaks.

change_i = mean over tokens t of |enc(h'_t) - enc(h_t)|_i at strength 1 (`Intervention.latent_change`: the
method's own exact change for SAE-basis methods, the SAE encoding of the steered residual otherwise), over
the encoded tokens of the first `n_docs` corpus documents (first position and special tokens left out, as in
the table). Jordan Taylor's "most-changed features".

Units. A latent's change moves the residual by dz_i W_dec[i], so `residual_units` multiplies latent-unit
scores by the decoder row norms ||W_dec[i]||: scores of latents with rows of different norms become
comparable (an SAE with unit-norm rows is unchanged). Weight-based scores are put in the same units through
`Intervention.latent_score_scale(sae)` (None: already residual-side or scale-free, e.g. cosines).

Rank agreement of two score vectors: overlap of their top-k sets, and Spearman rho / Kendall tau-b of the two
scores over the union of the top-k sets (None when undefined, e.g. a constant score). Latents scored 0 are not
ranked (a method that touches 3 latents has a top 3, not a top 10).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from saebasis.core import hooks
from saebasis.core.activations import right_padded


class Measured(NamedTuple):
    change: Float[Tensor, " d_sae"]  # mean |dz| per token (latent units)
    basis: str  # how dz was obtained: "intervention" (exact) or "sae_encoding"
    doc_peak: Float[Tensor, "n_docs d_sae"]  # max enc(h) of each latent in each document (unsteered)
    doc_peak_pos: Int[Tensor, "n_docs d_sae"]  # position of that max within the document
    n_tokens: int  # tokens averaged over


@torch.no_grad()
def measure(
    model, sae, intervention, docs: list[list[int]], valid: Tensor, pad_id: int, batch_size: int = 8
) -> Measured:
    """One pass of the model over `docs` (right-padded batches): latent change and per-document peaks."""
    device = next(model.parameters()).device
    lengths = torch.tensor([len(d) for d in docs])
    starts = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    total = torch.zeros(sae.d_sae, dtype=torch.float64)
    peak = torch.zeros(len(docs), sae.d_sae)
    peak_pos = torch.zeros(len(docs), sae.d_sae, dtype=torch.long)
    n, basis = 0, "none"
    for lo in tqdm(
        range(0, len(docs), batch_size), desc="measuring the run's latent change", unit="batch", leave=False
    ):
        ids = list(range(lo, min(lo + batch_size, len(docs))))
        batch, mask = right_padded([docs[d] for d in ids], pad_id)  # [batch, pos]
        h = hooks.run_to_hook(
            model, sae.hook, input_ids=batch.to(device), attention_mask=mask.to(device)
        )  # [batch, pos, d_model]
        for row, d in enumerate(ids):
            keep = valid[starts[d] : starts[d + 1]].to(h.device)  # [T]
            if not bool(keep.any()):
                continue
            x = h[row, : len(docs[d])]  # [T, d_model]
            dz, basis = intervention.latent_change(x, sae, 1.0)  # [T, d_sae]
            total += dz[keep].abs().sum(0).double().cpu()
            n += int(keep.sum())
            z = torch.where(keep[:, None], sae.encode(x).float(), 0.0)  # [T, d_sae]
            best = z.max(0)
            peak[d], peak_pos[d] = best.values.cpu(), best.indices.cpu()
    return Measured((total / max(1, n)).float(), basis, peak, peak_pos, n)


def residual_units(scores: Float[Tensor, " d_sae"], scale: Tensor | None) -> Float[Tensor, " d_sae"]:
    """scores x scale (per-latent factor, e.g. ||W_dec[i]||), or scores unchanged when scale is None."""
    return scores if scale is None else scores * scale.detach().float().cpu()


def _ranks(x: Tensor) -> Tensor:
    """Average ranks (ties share their mean rank), 1-based."""
    order = x.argsort()
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    for value in x.unique():
        tie = x == value
        ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a: Tensor, b: Tensor) -> float | None:
    ra, rb = _ranks(a.double()), _ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return None if denom == 0 else float(ra @ rb) / denom


def kendall(a: Tensor, b: Tensor) -> float | None:
    """Kendall tau-b (ties in either vector handled)."""
    da = torch.sign(a.double()[:, None] - a.double()[None])
    db = torch.sign(b.double()[:, None] - b.double()[None])
    upper = torch.triu(torch.ones_like(da, dtype=torch.bool), diagonal=1)
    concordance, na, nb = float((da * db)[upper].sum()), float((da != 0)[upper].sum()), float((db != 0)[upper].sum())
    return None if na == 0 or nb == 0 else concordance / (na * nb) ** 0.5


def agreement(a: Float[Tensor, " d_sae"], b: Float[Tensor, " d_sae"], k: int = 10) -> dict:
    """How two rankings of the latents agree (see the module docstring); the top-k of each, strongest first."""
    top_a = [
        i for i in torch.sort(a, descending=True, stable=True).indices[:k].tolist() if a[i] > 0
    ]  # zero scores: not ranked
    top_b = [i for i in torch.sort(b, descending=True, stable=True).indices[:k].tolist() if b[i] > 0]
    union = sorted(set(top_a) | set(top_b))
    if len(union) < 2:
        return {
            "top_a": top_a,
            "top_b": top_b,
            "overlap": len(set(top_a) & set(top_b)),
            "k": k,
            "union": union,
            "spearman": None,
            "kendall": None,
        }
    idx = torch.tensor(union)
    return {
        "top_a": top_a,
        "top_b": top_b,
        "overlap": len(set(top_a) & set(top_b)),
        "k": k,
        "union": union,
        "spearman": spearman(a[idx], b[idx]),
        "kendall": kendall(a[idx], b[idx]),
    }
