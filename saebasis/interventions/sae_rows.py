"""The weights of an SAE support: encode only the latents a method reads, decode only those it writes.

Write side (exact for any affine decoder): dec(z + dz) - dec(z) = dz W_eff, where row i of W_eff is
dec(e_i) - dec(0) (sae-lens' TopK SAE with rescale_acts_by_decoder_norm decodes with W_dec / ||W_dec[i]||, so
W_eff is not W_dec in general). A change on the write set W costs (s dz_W) @ W_eff[W]: [k_out, d_model].

Read side: whether z_R (the latents in the read set R) can be computed without the other latents depends
on the SAE's activation:
- standard (ReLU) and JumpReLU: z_i depends only on its own pre-activation, so z_R = act(x W_enc[:, R] + b_enc[R])
  is exact and costs [d_model, k_in];
- TopK: z_i = relu(pre_i) only when pre_i ranks among the k largest of *all* d_sae pre-activations, so the
  full pre-activation (one [d_model, d_sae] matmul) is needed to know the k-th value; it is computed, the
  threshold kept, and the dense z is never built or decoded (exact up to ties at the k-th value, which TopK breaks
  arbitrarily too);
- anything else (or activation normalisation other than "none", whose output rescaling makes the decoder
  depend on the input): the dense encode / decode, indexed (exact by construction).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saebasis.core.sae import SAEBasis

PER_LATENT = ("standard", "jumprelu")


def architecture(sae: SAEBasis) -> str:
    return sae.sae.cfg.architecture()


def affine(sae: SAEBasis) -> bool:
    """The decoder is a fixed affine map (so the splice identity holds and W_eff exists)."""
    return getattr(sae.sae.cfg, "normalize_activations", "none") == "none"


class SupportCache:
    """Sliced / rescaled SAE weights for fixed index sets, rebuilt when an index buffer changes."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[tuple, tuple[Tensor, ...]]] = {}

    def get(self, name: str, key: tuple, build) -> tuple[Tensor, ...]:
        hit = self._memo.get(name)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = (key, build())
            self._memo[name] = hit
        return hit[1]


def _key(sae: SAEBasis, idx: Tensor | None) -> tuple:
    return (id(sae), sae.W_dec.device) if idx is None else (id(sae), idx.data_ptr(), idx._version, idx.device)


def write_rows(sae: SAEBasis, idx: Int[Tensor, " k"] | None, cache: SupportCache) -> Float[Tensor, "k d_model"]:
    """W_eff[idx] = dec(e_i) - dec(0) for each written latent i (None: every latent)."""

    def build():
        n = sae.d_sae if idx is None else idx.numel()
        onehot = torch.zeros(n, sae.d_sae, device=sae.W_dec.device, dtype=sae.W_dec.dtype)  # [k, d_sae]
        onehot[torch.arange(n), torch.arange(n) if idx is None else idx] = 1.0
        return (sae.decode(onehot) - sae.decode(torch.zeros_like(onehot[:1])),)

    return cache.get("write", _key(sae, idx), build)[0]


def read_latents(
    sae: SAEBasis, h: Float[Tensor, "*batch d_model"], idx: Int[Tensor, " k"], cache: SupportCache
) -> Float[Tensor, "*batch k"]:
    """z[..., idx] = enc(h)[..., idx], computing as little of enc(h) as the architecture allows (module doc)."""
    inner, arch = sae.sae, architecture(sae)
    if not affine(sae) or arch not in (*PER_LATENT, "topk"):
        return sae.encode(h)[..., idx]
    x = inner.process_sae_in(h)  # [*batch, d_model]: dtype, input hooks, minus b_dec if the SAE does that
    if arch in PER_LATENT:
        W, b, thr = cache.get(
            "read",
            _key(sae, idx),
            lambda: (inner.W_enc[:, idx], inner.b_enc[idx], getattr(inner, "threshold", inner.b_enc)[idx]),
        )
        pre = x @ W + b  # [*batch, k]
        z = inner.activation_fn(pre)
        return z * (pre > thr) if arch == "jumprelu" else z
    (norm,) = cache.get("read_topk", _key(sae, None), lambda: (inner.W_dec.norm(dim=-1),))  # [d_sae]
    pre = x @ inner.W_enc + inner.b_enc  # [*batch, d_sae]: every latent's rank counts (sae-lens' own order of ops)
    if getattr(inner.cfg, "rescale_acts_by_decoder_norm", False):
        pre = pre * norm
    kth = pre.topk(inner.cfg.k, dim=-1, sorted=False).values.min(-1, keepdim=True).values  # [*batch, 1]
    pre_r = pre[..., idx]  # [*batch, k]
    return torch.where(pre_r >= kth, pre_r.relu(), torch.zeros_like(pre_r))
