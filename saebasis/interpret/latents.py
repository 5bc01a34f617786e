"""Which SAE latents an intervention changed, and the evidence about each latent.

- rank_latents: intervention.latent_scores() (|b| for the SAE bias, adaptor write weights, decoder
  pullback for residual methods / DiffMean / PCA / SARA), falling back to |cos(folded(), W_dec[i])|.
- norm_explained: fraction of the score vector's squared norm carried by its top-k latents, over k
  (for the SAE bias this is the share of ||b||^2; it reaches 1 at k = d_sae).
- LatentCache: SAE activations over a corpus, computed once and cached on disk as sparse COO
  safetensors (token index, latent index, value), keyed by model + SAE + corpus hash.
- logit_lens: tokens each decoder direction promotes / suppresses, W_dec[i] W_U (no final norm: the
  norm's per-channel weight is applied, its data-dependent scale is not).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from saebasis import hooks
from saebasis.models import cache_root


def rank_latents(intervention, sae, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, scores) of the top-k latents by how strongly the intervention acts on them."""
    scores = intervention.latent_scores()
    if scores is None:
        v = intervention.folded()
        if v is None:
            raise ValueError(f"'{intervention.method}' has neither latent_scores() nor a folded vector to rank latents by.")
        scores = F.cosine_similarity(sae.W_dec, v[None, :].to(sae.W_dec.dtype), dim=-1).abs()
    scores = scores.detach().float().cpu()
    top = scores.topk(min(k, scores.numel()))
    return top.indices, scores


def norm_explained(scores: torch.Tensor) -> list[float]:
    """cumsum of sorted squared scores / total, for k = 1 .. d_sae."""
    sq = scores.float().pow(2).sort(descending=True).values
    total = sq.sum()
    if total == 0:
        return [0.0] * len(sq)
    return (sq.cumsum(0) / total).clamp(max=1.0).tolist()


class Corpus(NamedTuple):
    tokens: list[list[str]]  # per document, the token strings
    doc: torch.Tensor  # [n_tokens] document of each flat token
    pos: torch.Tensor  # [n_tokens] position within its document


class LatentCache:
    """Sparse SAE activations over a corpus: values[i] at (token_idx[i], latent_idx[i])."""

    def __init__(self, token_idx, latent_idx, values, n_tokens: int, corpus: Corpus) -> None:
        self.token_idx, self.latent_idx, self.values, self.n_tokens, self.corpus = token_idx, latent_idx, values, n_tokens, corpus

    def column(self, latent: int) -> torch.Tensor:
        """Dense activations of one latent over all corpus tokens, [n_tokens]."""
        sel = self.latent_idx == latent
        col = torch.zeros(self.n_tokens)
        col[self.token_idx[sel]] = self.values[sel]
        return col

    def density(self, latent: int) -> float:
        return float((self.latent_idx == latent).sum()) / max(1, self.n_tokens)


def cache_key(model_name: str, sae_source: str, hook: str, texts: list[str]) -> str:
    h = hashlib.sha256(json.dumps([model_name, sae_source, hook, texts]).encode()).hexdigest()
    return h[:16]


@torch.no_grad()
def latent_cache(model, tokenizer, sae, texts: list[str], model_name: str, max_len: int = 128,
                 cache_dir: Path | None = None) -> tuple[LatentCache, bool]:
    """Load the cached activations for this (model, SAE, corpus), or compute and save them. Returns
    (cache, loaded_from_disk)."""
    folder = (cache_dir or cache_root() / "latents") / cache_key(model_name, sae.source, sae.hook, texts)
    tokens = [tokenizer.convert_ids_to_tokens(tokenizer(t, add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"]) for t in texts]
    doc = torch.cat([torch.full((len(t),), i) for i, t in enumerate(tokens)])
    pos = torch.cat([torch.arange(len(t)) for t in tokens])
    corpus = Corpus(tokens, doc, pos)
    if (folder / "latents.safetensors").exists():
        t = load_file(folder / "latents.safetensors")
        return LatentCache(t["token_idx"], t["latent_idx"], t["values"], len(doc), corpus), True
    rows, start = [], 0
    for text in tqdm(texts, desc="SAE latents over corpus", leave=False):
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_len, return_tensors="pt")["input_ids"]
        h = hooks.run_to_hook(model, sae.hook, input_ids=ids)[0]  # [pos, d_model]
        z = sae.encode(h)  # [pos, d_sae]
        nz = z.nonzero()
        rows.append((nz[:, 0] + start, nz[:, 1], z[nz[:, 0], nz[:, 1]]))
        start += ids.shape[1]
    tensors = {"token_idx": torch.cat([r[0] for r in rows]), "latent_idx": torch.cat([r[1] for r in rows]),
               "values": torch.cat([r[2] for r in rows]).float()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "latents.safetensors")
    return LatentCache(tensors["token_idx"], tensors["latent_idx"], tensors["values"], len(doc), corpus), False


def max_contexts(cache: LatentCache, latent: int, n: int = 5, window: int = 12) -> list[dict]:
    """The n strongest activations of a latent (one per document), each with its token window and
    per-token activations (for highlighting)."""
    col = cache.column(latent)
    out, seen = [], set()
    for idx in col.argsort(descending=True).tolist():
        if col[idx] <= 0 or len(out) >= n:
            break
        d, p = int(cache.corpus.doc[idx]), int(cache.corpus.pos[idx])
        if d in seen:
            continue
        seen.add(d)
        lo = p - min(p, window)
        doc_idx = (cache.corpus.doc == d).nonzero()[:, 0]
        acts = col[doc_idx][lo : p + 4].tolist()
        out.append({"doc": d, "pos": p, "max": float(col[idx]), "tokens": cache.corpus.tokens[d][lo : p + 4], "acts": acts})
    return out


@torch.no_grad()
def logit_lens(model, tokenizer, sae, latent: int, k: int = 8) -> dict[str, list[str]]:
    """Top promoted / suppressed tokens of decoder direction i: W_dec[i] (* final-norm weight) @ W_U^T."""
    direction = sae.W_dec[latent].float()
    norm = getattr(getattr(model, "model", None), "norm", None)
    if norm is not None and getattr(norm, "weight", None) is not None:
        direction = direction * norm.weight.float()
    logits = model.get_output_embeddings().weight.float() @ direction  # [vocab]
    fix = lambda ids: [tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(ids)]  # noqa: E731
    return {"promoted": fix(logits.topk(k).indices.tolist()), "suppressed": fix((-logits).topk(k).indices.tolist())}
