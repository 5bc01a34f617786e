"""Concept datasets: one folder per concept, JSONL files, validated at load.

A concept folder (built-in: saebasis/data/<name>/, or any local path) holds:
  concept.yaml        name, description (used by the embedding judge), judge: vader | minilm | ab
  pairs.jsonl         {"prompt", "positive", "negative"}: contrastive / preference pairs; SFT trains on
                      prompt -> positive; DiffMean / PCA / SARA are fitted from the same pairs
  neutral.jsonl       {"prompt"}: neutral prompts for KL-to-base (preservation) and fluency
  instructions.jsonl  {"instruction", "split": "val" | "test"}: held-out instructions for evaluation
  ab.jsonl            optional {"question", "matching", "not_matching"}: A/B behaviour items (CAA style)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DATA_DIR = Path(__file__).resolve().parent
REQUIRED = {
    "pairs.jsonl": ("prompt", "positive", "negative"),
    "neutral.jsonl": ("prompt",),
    "instructions.jsonl": ("instruction", "split"),
}
OPTIONAL = {"ab.jsonl": ("question", "matching", "not_matching")}


@dataclass
class Pair:
    prompt: str
    positive: str
    negative: str


@dataclass
class ABItem:
    question: str
    matching: str
    not_matching: str


@dataclass
class Concept:
    name: str
    description: str
    judge: str
    pairs: list[Pair]
    neutral: list[str]
    instructions: dict[str, list[str]]
    ab: list[ABItem] = field(default_factory=list)


def concept_dir(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        return path
    builtin = DATA_DIR / name_or_path
    if builtin.is_dir():
        return builtin
    shipped = sorted(p.name for p in DATA_DIR.iterdir() if (p / "concept.yaml").exists())
    raise FileNotFoundError(f"No dataset '{name_or_path}': not a folder, and the built-in ones are {shipped}.")


def read_jsonl(path: Path, fields: tuple[str, ...]) -> list[dict]:
    """Rows of a JSONL file, each checked to have non-empty string `fields`."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing. A concept folder needs {sorted(REQUIRED)} (see saebasis/data/__init__.py).")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n} is not valid JSON ({err.msg}). Each line must be one JSON object.") from err
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n} must be a JSON object with fields {list(fields)}.")
        for key in fields:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(f"{path}:{n}: field '{key}' is missing or empty. Each row needs {list(fields)} as non-empty strings.")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} is empty. Add at least one row with fields {list(fields)}.")
    return rows


def load_concept(name_or_path: str) -> Concept:
    root = concept_dir(name_or_path)
    meta_path = root / "concept.yaml"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} is missing: it names the concept, its description and judge.")
    meta = yaml.safe_load(meta_path.read_text()) or {}
    for key in ("name", "description", "judge"):
        if not meta.get(key):
            raise ValueError(f"{meta_path}: field '{key}' is missing.")
    pairs = [Pair(r["prompt"], r["positive"], r["negative"]) for r in read_jsonl(root / "pairs.jsonl", REQUIRED["pairs.jsonl"])]
    neutral = [r["prompt"] for r in read_jsonl(root / "neutral.jsonl", REQUIRED["neutral.jsonl"])]
    instructions: dict[str, list[str]] = {"val": [], "test": []}
    for row in read_jsonl(root / "instructions.jsonl", REQUIRED["instructions.jsonl"]):
        if row["split"] not in instructions:
            raise ValueError(f"{root / 'instructions.jsonl'}: split must be 'val' or 'test', got '{row['split']}'.")
        instructions[row["split"]].append(row["instruction"])
    ab_path = root / "ab.jsonl"
    ab = [ABItem(r["question"], r["matching"], r["not_matching"]) for r in read_jsonl(ab_path, OPTIONAL["ab.jsonl"])] if ab_path.exists() else []
    return Concept(meta["name"], meta["description"], meta["judge"], pairs, neutral, instructions, ab)
