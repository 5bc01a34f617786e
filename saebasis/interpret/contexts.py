"""Max-activating contexts of one latent: where in the corpus it fires hardest, with every token's activation.

One context per document (its peak token), strongest documents first. Contexts whose window up to and
including the peak is identical (a chat template's system prompt, repeated in every document) are shown once
with the number of documents they stand for -- in a causal LM the activation at the peak depends only on the
tokens before it -- so five copies of one boilerplate line never fill the list.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from saebasis.interpret.cache import LatentCache


class Context(NamedTuple):
    doc: int
    peak: int  # position of the peak token within its document
    max: float  # activation at the peak
    tokens: list[str]  # the window's tokens as text
    acts: list[float]  # the latent's activation on each window token
    skipped: list[bool]  # tokens that were never encoded (attention sink, special tokens)
    count: int  # documents whose window was identical to this one

    def to_json(self) -> dict:
        return self._asdict()


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each token decoded on its own (byte-level 'Ġ' becomes a space; a partial UTF-8 byte shows as '\ufffd')."""
    return [tokenizer.decode([i]) for i in ids]


def doc_peaks(cache: LatentCache, latent: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(documents, peak token index, peak value) over the documents where the latent fires, strongest first."""
    lo, hi = int(cache.col_ptr[latent]), int(cache.col_ptr[latent + 1])
    tokens, values = cache.token_idx[lo:hi].long(), cache.values[lo:hi]
    keep = values > 0
    tokens, values = tokens[keep], values[keep]
    if tokens.numel() == 0:
        return (torch.zeros(0, dtype=torch.long),) * 2 + (torch.zeros(0),)
    by_value = values.argsort(descending=True, stable=True)
    tokens, values = tokens[by_value], values[by_value]
    docs = cache.doc_of(tokens)
    first = _first_occurrence(docs)  # the strongest token of each document
    return docs[first], tokens[first], values[first]


def _first_occurrence(x: torch.Tensor) -> torch.Tensor:
    """Indices of the first occurrence of each distinct value of x, in order of appearance."""
    seen: set[int] = set()
    out = []
    for i, value in enumerate(x.tolist()):
        if value not in seen:
            seen.add(value)
            out.append(i)
    return torch.tensor(out, dtype=torch.long)


def max_contexts(
    cache: LatentCache, tokenizer, latent: int, n: int = 5, before: int = 16, after: int = 4
) -> list[Context]:
    """The n strongest distinct contexts of `latent` (see the module docstring)."""
    if n < 1 or before < 0 or after < 0:
        raise ValueError(f"need n_contexts >= 1 and a non-negative window; got n={n}, before={before}, after={after}.")
    docs, peaks, values = doc_peaks(cache, latent)
    column = cache.column(latent) if docs.numel() else None
    out: list[Context] = []
    index: dict[tuple[int, ...], int] = {}
    for doc, peak, value in zip(docs.tolist(), peaks.tolist(), values.tolist()):
        start, end = int(cache.doc_ptr[doc]), int(cache.doc_ptr[doc + 1])
        lo, hi = max(start, peak - before), min(end, peak + after + 1)
        key = tuple(cache.input_ids[lo : peak + 1].tolist())  # causal LM: the activation depends only on the prefix
        if key in index:
            out[index[key]] = out[index[key]]._replace(count=out[index[key]].count + 1)
            continue
        if len(out) == n:
            continue  # keep counting duplicates of the shown contexts
        index[key] = len(out)
        out.append(
            Context(
                doc,
                peak - start,
                value,
                token_texts(tokenizer, cache.input_ids[lo:hi].tolist()),
                column[lo:hi].tolist(),
                (~cache.valid[lo:hi]).tolist(),
                1,
            )
        )
    return out
