"""Activation pattern of a set of latents over contexts, factorised two ways.

X [n_contexts, n_latents]: each latent's peak activation in each corpus document (documents where none of
the latents fires are dropped), each column scaled to max 1 when `normalize` (so a latent with large raw
activations does not dominate). Then:
  truncated SVD  X ~ U_k S_k V_k^T  -- signed components; the sign of each is fixed so its largest loading is
                 positive. Best rank-k fit, but parts may cancel each other.
  NMF            X ~ W H, W, H >= 0 (Lee-Seung multiplicative updates, Frobenius loss) -- additive parts
                 ("these latents fire together"), easier to read, not unique.
  identity       the latents themselves, sorted by their share of ||X||^2: the baseline both must beat.
Two numbers per method (`compare_bases`):
  components_90  fewest components whose fit explains >= 90% of ||X||_F^2 (SVD: top singular values; NMF:
                 the best of k-part fits, 1 - ||X - W H||^2 / ||X||^2; identity: the largest columns kept);
                 None when even all m components (NMF's iterative fit) fall short.
  concentration  mean over those components of the share of a component's squared weight on its top-3
                 latents (1 = each component is about three latents or fewer; identity is 1 by construction).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from saebasis.interpret.threads import one_thread


def pattern_matrix(
    doc_peak: Float[Tensor, "n_docs d_sae"], latents: list[int], normalize: bool = True
) -> tuple[Float[Tensor, "n n_latents"], list[int]]:
    """(X, the corpus document of each row): peak activation of each latent in each document (measure.py)."""
    x = doc_peak[:, latents].float().clamp_min(0)  # [n_docs, n_latents]
    rows = (x > 0).any(1).nonzero()[:, 0]
    x = x[rows]
    if normalize and x.shape[0]:
        x = x / x.amax(0, keepdim=True).clamp_min(1e-12)
    return x, rows.tolist()


def truncated_svd(x: Float[Tensor, "n m"], k: int) -> tuple[Tensor, Tensor, Tensor]:
    """(U_k S_k [n, k], S_k [k], V_k [m, k]) with X ~ (U_k S_k) V_k^T; signs fixed as in the module docstring."""
    u, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    k = min(k, s.numel())
    u, s, v = u[:, :k], s[:k], vh[:k].T
    sign = torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))  # [1, k]
    sign[sign == 0] = 1
    return (u * s * sign).float(), s.float(), (v * sign).float()


def nmf(x: Float[Tensor, "n m"], k: int, iters: int = 500, seed: int = 0, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """W [n, k], H [k, m] >= 0 minimising ||X - W H||_F (multiplicative updates); rows of H scaled to max 1."""
    if (x < 0).any():
        raise ValueError("NMF needs a non-negative matrix; SAE activations are >= 0, so check the input.")
    gen = torch.Generator().manual_seed(seed)
    x = x.double()
    n, m = x.shape
    scale = (x.mean() / k).clamp_min(eps).sqrt()
    w = torch.rand(n, k, generator=gen, dtype=torch.float64) * scale
    h = torch.rand(k, m, generator=gen, dtype=torch.float64) * scale
    with one_thread():
        for _ in range(iters):
            h = h * (w.T @ x) / (w.T @ w @ h).clamp_min(eps)
            w = w * (x @ h.T) / (w @ h @ h.T).clamp_min(eps)
    peak = h.amax(1, keepdim=True).clamp_min(eps)  # [k, 1]
    return (w * peak.T).float(), (h / peak).float()


def factorize(x: Float[Tensor, "n m"], k: int, iters: int = 500) -> dict:
    """Both factorisations of X with their fit: SVD share of ||X||^2 and NMF relative error."""
    k = max(1, min(k, *x.shape))
    us, s, v = truncated_svd(x, k)
    w, h = nmf(x, k, iters)
    total = x.double().pow(2).sum().clamp_min(1e-12)
    return {
        "svd_loadings": v.T.tolist(),  # [k, n_latents]
        "svd_scores": us.tolist(),  # [n_contexts, k]
        "svd_energy": float(s.double().pow(2).sum() / total),
        "nmf_parts": h.tolist(),  # [k, n_latents]
        "nmf_weights": w.tolist(),  # [n_contexts, k]
        "nmf_rel_error": float((x.double() - w.double() @ h.double()).norm() / total.sqrt()),
    }


def explained_curves(x: Float[Tensor, "n m"], iters: int = 300) -> dict[str, list[float]]:
    """Share of ||X||_F^2 explained with k = 1..m components, for SVD, NMF and the identity baseline."""
    x = x.double()
    total = x.pow(2).sum().clamp_min(1e-300)
    m = x.shape[1]
    svd = (torch.linalg.svdvals(x).pow(2).cumsum(0) / total).tolist()
    svd += [svd[-1]] * (m - len(svd))
    ident = (x.pow(2).sum(0).sort(descending=True).values.cumsum(0) / total).tolist()
    fits = []
    for k in range(1, m + 1):
        w, h = nmf(x.float(), k, iters)
        fits.append(float(1 - (x - w.double() @ h.double()).pow(2).sum() / total))
    return {"svd": [min(1.0, v) for v in svd], "nmf": fits, "identity": [min(1.0, v) for v in ident]}


def components_needed(curve: list[float], target: float = 0.9) -> int | None:
    return next((k for k, v in enumerate(curve, 1) if v >= target - 1e-9), None)


def concentration(components: Float[Tensor, "k m"], top: int = 3) -> float:
    """Mean over components (rows) of the share of squared weight on the `top` largest entries."""
    sq = components.double().pow(2)
    return float((sq.sort(-1, descending=True).values[:, :top].sum(-1) / sq.sum(-1).clamp_min(1e-300)).mean())


def compare_bases(x: Float[Tensor, "n m"], target: float = 0.9, top: int = 3, iters: int = 300) -> dict:
    """components_90 and concentration of SVD, NMF and the identity (see the module docstring)."""
    curves = explained_curves(x, iters)
    out = {}
    for name, curve in curves.items():
        k = components_needed(curve, target)
        kk = k or x.shape[1]
        if name == "svd":
            comps = torch.linalg.svd(x.double(), full_matrices=False).Vh[:kk]
        elif name == "nmf":
            comps = nmf(x, kk, iters)[1]
        else:
            comps = torch.eye(x.shape[1])[:kk]
        out[name] = {"components_90": k, "concentration": concentration(comps, top), "explained": curve}
    return {"target": target, "top": top, **out}


def component_examples(
    docs: list[list[int]], peak_pos: Tensor, tokenizer, result: dict, n: int = 3, before: int = 10, after: int = 3
) -> list[dict]:
    """For each NMF part: its main latent (the one whose weight lies most in this part) and the contexts that
    load on the part most (text around that latent's peak in each)."""
    weights, parts = (
        torch.tensor(result["nmf_weights"]),
        torch.tensor(result["nmf_parts"]),
    )  # [n_ctx, k], [k, n_latents]
    specific = parts / parts.sum(0, keepdim=True).clamp_min(1e-12)  # share of each latent's weight in each part
    out = []
    for c in range(parts.shape[0]):
        j = int((specific[c] + 1e-6 * parts[c]).argmax())  # the latent most specific to part c (ties: the larger)
        latent = result["latents"][j]
        examples: list[dict] = []
        for row in weights[:, c].argsort(descending=True).tolist():
            if weights[row, c] <= 0 or len(examples) == n:
                break
            doc = result["docs"][row]
            peak = int(peak_pos[doc, latent])
            ids = docs[doc][max(0, peak - before) : peak + after + 1]
            text = " ".join(tokenizer.decode(ids).split())
            if all(text != e["text"] for e in examples):  # repeated boilerplate shown once
                examples.append({"doc": doc, "text": text})
        out.append({"part": c, "main_latent": latent, "examples": examples})
    return out
