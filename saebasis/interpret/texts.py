"""The texts an interpretation report searches for max-activating contexts.

`corpus` in configs/interpret.yaml is one of:
  auto        the cached model-written corpus (saebasis/corpus.py, JSONL under saebasis.models.cache_root());
              on a machine where it was never built, the built-in concept datasets' texts (every
              saebasis/data/*/pairs.jsonl prompt + positive and prompt + negative, and neutral.jsonl prompts)
  a path      a JSONL file whose rows each hold a non-empty "text"
  a list      the texts themselves (from Python or a Hydra list override)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from saebasis.corpus import corpus_path, corpus_texts, read_corpus
from saebasis.data import DATA_DIR, read_jsonl

FALLBACK = "built-in concept datasets (saebasis/data/*; the model-written corpus is not cached here)"


def dataset_texts(data_dir: Path = DATA_DIR) -> list[str]:
    """prompt + positive, prompt + negative and neutral prompts of every concept folder, in name order."""
    texts: list[str] = []
    for folder in sorted(p for p in data_dir.iterdir() if (p / "pairs.jsonl").exists()):
        pairs = read_jsonl(folder / "pairs.jsonl", ("prompt", "positive", "negative"))
        texts += [f"{r['prompt']} {r['positive']}" for r in pairs] + [f"{r['prompt']} {r['negative']}" for r in pairs]
        if (folder / "neutral.jsonl").exists():
            texts += [r["prompt"] for r in read_jsonl(folder / "neutral.jsonl", ("prompt",))]
    return texts


def load_texts(corpus: str | Sequence[str] | None, n_docs: int | None = None) -> tuple[list[str], str]:
    """(texts, a description of where they came from), at most `n_docs` of them."""
    if corpus is None or corpus == "auto":
        rows = read_corpus(corpus_path())
        texts, source = (corpus_texts(rows), str(corpus_path())) if rows else (dataset_texts(), FALLBACK)
    elif isinstance(corpus, str):
        path = Path(corpus)
        if not path.is_file():
            raise FileNotFoundError(f"corpus={corpus}: no such file. Give a JSONL file with a 'text' field per row, a list of texts, or corpus=auto.")
        texts, source = [r["text"] for r in read_jsonl(path, ("text",))], str(path)
    else:
        texts, source = [str(t) for t in corpus], "texts given in the config"
        if not texts or not all(t.strip() for t in texts):
            raise ValueError("corpus: the list of texts is empty or holds an empty string; give non-empty texts.")
    if n_docs is not None:
        if n_docs < 1:
            raise ValueError(f"n_docs must be >= 1 (or null for all), got {n_docs}.")
        texts = texts[:n_docs]
    return texts, source
