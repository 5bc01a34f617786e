"""The texts an interpretation report reads: the per-latent table's corpus and the run's measured change.

`corpus` in configs/interpret.yaml is one of:
  auto        the held-out shards of the shipped corpus (saebasis/assets/corpus, else the user's build under
              saebasis.core.models.cache_root(); see saebasis/corpus/build.py); no SAE trains on them. Where neither is
              there: the older single-file cache, then the built-in concept datasets' texts (every
              saebasis/data/*/pairs.jsonl prompt + positive and prompt + negative, and neutral.jsonl prompts)
  a folder    corpus shards (shard-*.jsonl.gz): its held-out shards when it has any, else all of them
  a file      a JSONL file whose rows each hold a non-empty "text" (and optionally an "id")
  a list      the texts themselves (from Python or a Hydra list override)
Each document keeps an id (the row's "id", else its index) so contexts can be traced back to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from saebasis.corpus.build import (
    corpus_path,
    corpus_texts,
    default_corpus_dir,
    is_heldout,
    read_corpus,
    read_shards,
    shard_indices,
)
from saebasis.data import DATA_DIR, read_jsonl

FALLBACK = "built-in concept datasets (saebasis/data/*; no model-written corpus found)"


class Corpus(NamedTuple):
    texts: list[str]
    ids: list[str]  # one per text: the row's id, else its index
    source: str  # where the texts came from, in words


def shown_path(text: str) -> str:
    """A path as a reader can reuse it and as it may be stored in a shared file: relative to the working folder, or
    to the folder holding the package (no machine's absolute path)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        text = text.replace(f"{root}/", "")
    return text


def dataset_texts(data_dir: Path = DATA_DIR) -> list[str]:
    """prompt + positive, prompt + negative and neutral prompts of every concept folder, in name order."""
    texts: list[str] = []
    for folder in sorted(p for p in data_dir.iterdir() if (p / "pairs.jsonl").exists()):
        pairs = read_jsonl(folder / "pairs.jsonl", ("prompt", "positive", "negative"))
        texts += [f"{r['prompt']} {r['positive']}" for r in pairs] + [f"{r['prompt']} {r['negative']}" for r in pairs]
        if (folder / "neutral.jsonl").exists():
            texts += [r["prompt"] for r in read_jsonl(folder / "neutral.jsonl", ("prompt",))]
    return texts


def _rows(rows: list[dict], source: str) -> Corpus:
    rows = sorted(rows, key=lambda r: r["id"]) if rows and all("id" in r for r in rows) else rows
    return Corpus([r["text"] for r in rows], [str(r.get("id", i)) for i, r in enumerate(rows)], source)


def shard_corpus(folder: Path) -> Corpus:
    """Held-out shards of a shard folder when it has any, else every shard."""
    split = "heldout" if any(is_heldout(i) for i in shard_indices(folder)) else "all"
    return _rows(read_shards(folder, split), f"{shown_path(str(folder))} ({split} shards)")


def load_corpus(corpus: str | Sequence[str] | None, n_docs: int | None = None) -> Corpus:
    """The corpus named by `corpus` (see the module docstring), its first `n_docs` documents (None: all)."""
    if corpus is None or corpus == "auto":
        folder = default_corpus_dir()
        old = [] if shard_indices(folder) else read_corpus(corpus_path())  # the single-file cache of earlier versions
        if shard_indices(folder):
            out = shard_corpus(folder)
        elif old:
            texts = corpus_texts(old)
            out = Corpus(texts, [str(i) for i in range(len(texts))], str(corpus_path()))
        else:
            texts = dataset_texts()
            out = Corpus(texts, [str(i) for i in range(len(texts))], FALLBACK)
    elif isinstance(corpus, (str, Path)):
        path = Path(corpus)
        if path.is_dir() and shard_indices(path):
            out = shard_corpus(path)
        elif path.is_file():
            out = _rows(read_jsonl(path, ("text",)), str(path))
        else:
            raise FileNotFoundError(
                f"corpus={corpus}: no such file or shard folder. Give a JSONL file with a 'text' field per row, "
                f"a folder of shard-*.jsonl.gz, a list of texts, or corpus=auto."
            )
    else:
        texts = [str(t) for t in corpus]
        if not texts or not all(t.strip() for t in texts):
            raise ValueError("corpus: the list of texts is empty or holds an empty string; give non-empty texts.")
        out = Corpus(texts, [str(i) for i in range(len(texts))], "texts given in the config")
    if n_docs is not None:
        if n_docs < 1:
            raise ValueError(f"n_docs must be >= 1 (or null for all), got {n_docs}.")
        out = Corpus(out.texts[:n_docs], out.ids[:n_docs], out.source)
    return out


def load_texts(corpus: str | Sequence[str] | None, n_docs: int | None = None) -> tuple[list[str], str]:
    """(texts, a description of where they came from), at most `n_docs` of them."""
    out = load_corpus(corpus, n_docs)
    return out.texts, out.source
