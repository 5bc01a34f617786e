"""SAE latent activations over a corpus, computed once and cached on disk as sparse safetensors.

Layout (one file, `latents.safetensors`, plus a readable `info.json`): every corpus token id (`input_ids`,
documents concatenated, split by `doc_ptr`), which tokens were encoded (`valid`), and the non-zero
activations in compressed-sparse-column form -- latent i's entries are `token_idx[col_ptr[i]:col_ptr[i+1]]`
with `values` alongside -- so one latent's column is a slice, not a scan.

Skipped tokens (never encoded, activation 0): the first `skip_first` positions of each document (in
Llama-family models they carry the attention-sink activation, far outside what the SAE was trained on) and,
with `skip_special`, the tokenizer's special tokens (chat-template markers), as `saebasis train-sae` does, and the
chat template's shared opening (SmolLM2's default system prompt "You are a helpful AI assistant named SmolLM ..."
and the user-turn marker) wherever a document starts with it: every model-written corpus document does, and those
~25 identical tokens would otherwise fill the token statistics of the latents that fire on them.

The cache key hashes everything the numbers depend on: the model (config + a strided sample of every
weight), the SAE (hook + a strided sample of its weights), the corpus token ids and the settings. A retrained
SAE at the same path, another tokenizer or another max_len gives a new key, never stale activations.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from saebasis.core import hooks
from saebasis.core.activations import right_padded
from saebasis.core.models import cache_root
from saebasis.corpus.acts import special_ids, template_prefix

FORMAT = 1
FILE = "latents.safetensors"


@dataclass
class LatentCache:
    input_ids: Int[Tensor, " n_tokens"]  # every corpus token, documents concatenated
    doc_ptr: Int[Tensor, " n_docs_plus_1"]  # document d = tokens doc_ptr[d] : doc_ptr[d + 1]
    valid: Bool[Tensor, " n_tokens"]  # tokens whose latents were encoded
    col_ptr: Int[Tensor, " d_sae_plus_1"]  # latent i = entries col_ptr[i] : col_ptr[i + 1]
    token_idx: Int[Tensor, " nnz"]  # flat token index of each stored activation
    values: Float[Tensor, " nnz"]
    exact: bool  # False when only the top `max_per_token` latents of each token were kept

    @property
    def n_tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def n_docs(self) -> int:
        return self.doc_ptr.numel() - 1

    @property
    def d_sae(self) -> int:
        return self.col_ptr.numel() - 1

    def column(self, latent: int) -> Float[Tensor, " n_tokens"]:
        """Dense activations of one latent over every corpus token (0 where inactive or skipped)."""
        lo, hi = int(self.col_ptr[latent]), int(self.col_ptr[latent + 1])
        return torch.zeros(self.n_tokens).index_put_((self.token_idx[lo:hi].long(),), self.values[lo:hi])

    def density(self, latent: int) -> float:
        """Fraction of encoded tokens on which the latent is active."""
        return int(self.col_ptr[latent + 1] - self.col_ptr[latent]) / max(1, int(self.valid.sum()))

    def doc_of(self, token: Tensor) -> Tensor:
        return torch.searchsorted(self.doc_ptr, token, right=True) - 1

    def tensors(self) -> dict[str, Tensor]:
        names = ("input_ids", "doc_ptr", "valid", "col_ptr", "token_idx", "values")
        return {name: getattr(self, name).contiguous() for name in names}


def _sample_bytes(tensor: Tensor, n: int = 4096) -> bytes:
    flat = tensor.detach().flatten()
    return flat[:: max(1, flat.numel() // n)].float().cpu().numpy().tobytes()


def fingerprint(named: Iterable[tuple[str, Tensor]], extra: str = "") -> str:
    """sha256 of names, shapes and a strided sample of each tensor's values."""
    digest = hashlib.sha256(extra.encode())
    for name, tensor in named:
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(_sample_bytes(tensor))
    return digest.hexdigest()


def cache_key(model, sae, docs: list[list[int]], settings: dict) -> str:
    config = {k: v for k, v in model.config.to_dict().items() if k != "transformers_version"}
    parts = [
        fingerprint(model.named_parameters(), json.dumps(config, sort_keys=True, default=str)),
        fingerprint(sae.sae.state_dict().items(), f"{type(sae.sae).__name__}|{sae.hook}"),
        hashlib.sha256(json.dumps(docs).encode()).hexdigest(),
        json.dumps({**settings, "format": FORMAT}, sort_keys=True),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def tokenize(tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Token ids of each text, truncated to max_len; empty encodings are an error."""
    docs = [tokenizer(t, truncation=True, max_length=max_len)["input_ids"] for t in texts]
    empty = [i for i, d in enumerate(docs) if not d]
    if empty:
        raise ValueError(f"corpus texts {empty[:5]} tokenize to nothing; remove empty texts from the corpus.")
    return docs


def valid_mask(tokenizer, docs: list[list[int]], skip_first: int, skip_special: bool) -> Bool[Tensor, " n_tokens"]:
    special = special_ids(tokenizer) if skip_special else torch.tensor([], dtype=torch.long)
    prefix = template_prefix(tokenizer) if skip_special else []
    parts = []
    for ids in docs:
        keep = torch.arange(len(ids)) >= skip_first
        if prefix and ids[: len(prefix)] == prefix:
            keep[: len(prefix)] = False  # the shared chat-template opening (system prompt)
        parts.append(keep & ~torch.isin(torch.tensor(ids), special))
    return torch.cat(parts)


@torch.no_grad()
def encode_corpus(
    model, sae, docs: list[list[int]], valid: Tensor, pad_id: int, batch_size: int = 8, max_per_token: int | None = None
) -> LatentCache:
    """Run the model to the SAE's hook on every document (right-padded batches, longest first) and keep
    the non-zero latents of each valid token (or its top `max_per_token`)."""
    lengths = torch.tensor([len(d) for d in docs])
    doc_ptr = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    device = next(model.parameters()).device
    order = lengths.argsort(descending=True).tolist()
    tok, lat, val, exact = [], [], [], True
    for start in tqdm(range(0, len(order), batch_size), desc="SAE latents over the corpus", unit="batch", leave=False):
        ids = order[start : start + batch_size]
        batch, mask = right_padded([docs[d] for d in ids], pad_id)  # [batch, pos]
        h = hooks.run_to_hook(
            model, sae.hook, input_ids=batch.to(device), attention_mask=mask.to(device)
        )  # [batch, pos, d_model]
        flat = torch.cat([doc_ptr[d] + torch.arange(len(docs[d])) for d in ids])  # [tokens] flat corpus index
        keep = valid[flat]
        rows = torch.cat([h[row, : len(docs[d])] for row, d in enumerate(ids)])[keep.to(h.device)]  # [kept, d_model]
        t, l, v, ok = _sparse(sae, rows, max_per_token)
        tok.append(flat[keep][t.cpu()])
        lat.append(l.cpu())
        val.append(v.float().cpu())
        exact = exact and ok
    input_ids = torch.tensor([i for d in docs for i in d], dtype=torch.long)  # [n_tokens]
    return _to_csc(input_ids, doc_ptr, valid, torch.cat(tok), torch.cat(lat), torch.cat(val), sae.d_sae, exact)


def _sparse(sae, rows: Tensor, max_per_token: int | None) -> tuple[Tensor, Tensor, Tensor, bool]:
    """(row, latent, value) of the non-zero activations of `rows` [n, d_model]."""
    if max_per_token is None:
        z = sae.encode_chunked(rows) if rows.shape[0] else rows.new_zeros(0, sae.d_sae)  # [n, d_sae]
        nz = z.nonzero()
        return nz[:, 0], nz[:, 1], z[nz[:, 0], nz[:, 1]], True
    top = sae.encode_topk_sparse(rows, min(max_per_token, sae.d_sae))
    nz = (top.values != 0).nonzero()
    return nz[:, 0], top.indices[nz[:, 0], nz[:, 1]], top.values[nz[:, 0], nz[:, 1]], top.exact


def _to_csc(input_ids, doc_ptr, valid, tok, lat, val, d_sae: int, exact: bool) -> LatentCache:
    n = max(1, input_ids.numel())
    order = (lat.long() * n + tok.long()).argsort()  # by latent, then token
    col_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(lat.long(), minlength=d_sae).cumsum(0)])
    return LatentCache(input_ids.long(), doc_ptr, valid, col_ptr, tok[order].int(), val[order], exact)


def latent_cache(
    model,
    tokenizer,
    sae,
    texts: list[str],
    max_len: int = 128,
    skip_first: int = 1,
    skip_special: bool = True,
    batch_size: int = 8,
    max_per_token: int | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[LatentCache, bool]:
    """The cached activations for this (model, SAE, corpus, settings), computing and saving them on a miss.
    Returns (cache, hit): hit is True when nothing was recomputed."""
    if skip_first < 0 or max_len < 1 or batch_size < 1:
        raise ValueError(
            f"need skip_first >= 0, max_len >= 1, batch_size >= 1; got {skip_first}, {max_len}, {batch_size}."
        )
    docs = tokenize(tokenizer, texts, max_len)
    settings = {"skip_first": skip_first, "skip_special": skip_special, "max_per_token": max_per_token}
    folder = Path(cache_dir or cache_root() / "latents") / cache_key(model, sae, docs, settings)
    if (folder / FILE).exists():
        t = load_file(folder / FILE)
        cache = LatentCache(**t, exact=json.loads((folder / "info.json").read_text())["exact"])
        if cache.input_ids.tolist() == [i for d in docs for i in d]:
            return cache, True
    valid = valid_mask(tokenizer, docs, skip_first, skip_special)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cache = encode_corpus(model, sae, docs, valid, pad, batch_size, max_per_token)
    _save(
        folder,
        cache,
        {"sae": sae.source, "hook": sae.hook, "model": getattr(model.config, "_name_or_path", ""), **settings},
    )
    return cache, False


def _save(folder: Path, cache: LatentCache, info: dict) -> None:
    """Write the file under a temporary name, then rename: a crash never leaves a half-written cache."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {
        **info,
        "exact": cache.exact,
        "n_docs": cache.n_docs,
        "n_tokens": cache.n_tokens,
        "nnz": cache.values.numel(),
    }
    tmp = folder / f".{FILE}.{os.getpid()}.tmp"
    save_file(cache.tensors(), tmp)
    (folder / "info.json").write_text(json.dumps(info, indent=2))
    os.replace(tmp, folder / FILE)
