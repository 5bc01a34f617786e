"""Activation patterns of a set of latents over contexts: truncated SVD and non-negative factorisation."""

from __future__ import annotations

import torch


def pattern_matrix(cache, latents: list[int]) -> torch.Tensor:
    """[n_docs, n_latents]: each latent's max activation in each document."""
    n_docs = int(cache.corpus.doc.max()) + 1 if cache.n_tokens else 0
    out = torch.zeros(n_docs, len(latents))
    for j, latent in enumerate(latents):
        out[:, j] = torch.zeros(n_docs).scatter_reduce(0, cache.corpus.doc, cache.column(latent), reduce="amax")
    return out


def truncated_svd(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """X ~ U_k diag(S_k) V_k^T; returns (U_k S_k [n, k], S_k, V_k [n_latents, k])."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(k, s.numel())
    return u[:, :k] * s[:k], s[:k], vh[:k].T


def nmf(x: torch.Tensor, k: int, iters: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """X ~ W H with W, H >= 0 (Lee-Seung multiplicative updates, Frobenius loss). W [n, k], H [k, m]."""
    gen = torch.Generator().manual_seed(seed)
    n, m = x.shape
    scale = (x.mean() / k).clamp_min(1e-6).sqrt()
    w = torch.rand(n, k, generator=gen) * scale
    h = torch.rand(k, m, generator=gen) * scale
    for _ in range(iters):
        h = h * (w.T @ x) / (w.T @ w @ h).clamp_min(1e-12)
        w = w * (x @ h.T) / (w @ h @ h.T).clamp_min(1e-12)
    return w, h
