"""Activation pattern of a set of latents over contexts, factorised two ways.

X [n_contexts, n_latents]: each latent's peak activation in each corpus document (documents where none of
the latents fires are dropped), each column scaled to max 1 when `normalize` (so a latent with large raw
activations does not dominate). Then:
  truncated SVD  X ~ U_k S_k V_k^T  -- signed components; the sign of each is fixed so its largest loading is
                 positive. Best rank-k fit, but parts may cancel each other.
  NMF            X ~ W H, W, H >= 0 (Lee-Seung multiplicative updates, Frobenius loss) -- additive parts
                 ("these latents fire together"), easier to read, not unique.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from saebasis.interpret.cache import LatentCache
from saebasis.interpret.contexts import doc_peaks
from saebasis.interpret.threads import one_thread


def pattern_matrix(cache: LatentCache, latents: list[int], normalize: bool = True) -> tuple[Float[Tensor, "n_docs n_latents"], list[int]]:
    """(X, the corpus document of each row): peak activation of each latent in each document."""
    x = torch.zeros(cache.n_docs, len(latents))  # [n_docs, n_latents]
    for j, latent in enumerate(latents):
        docs, _, values = doc_peaks(cache, latent)
        x[docs, j] = values
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


def component_examples(cache: LatentCache, tokenizer, result: dict, n: int = 3, before: int = 10, after: int = 3) -> list[dict]:
    """For each NMF part: its main latent (the one whose weight lies most in this part) and the contexts that
    load on the part most (text around that latent's peak in each)."""
    weights, parts = torch.tensor(result["nmf_weights"]), torch.tensor(result["nmf_parts"])  # [n_ctx, k], [k, n_latents]
    specific = parts / parts.sum(0, keepdim=True).clamp_min(1e-12)  # share of each latent's weight in each part
    out = []
    for c in range(parts.shape[0]):
        j = int((specific[c] + 1e-6 * parts[c]).argmax())  # the latent most specific to part c (ties: the larger)
        latent = result["latents"][j]
        column = cache.column(latent)
        examples: list[dict] = []
        for row in weights[:, c].argsort(descending=True).tolist():
            if weights[row, c] <= 0 or len(examples) == n:
                break
            doc = result["docs"][row]
            start, end = int(cache.doc_ptr[doc]), int(cache.doc_ptr[doc + 1])
            peak = start + int(column[start:end].argmax())
            ids = cache.input_ids[max(start, peak - before) : min(end, peak + after + 1)].tolist()
            text = " ".join(tokenizer.decode(ids).split())
            if all(text != e["text"] for e in examples):  # repeated boilerplate shown once
                examples.append({"doc": doc, "text": text})
        out.append({"part": c, "main_latent": latent, "examples": examples})
    return out
