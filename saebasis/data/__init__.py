"""Concept datasets: one folder per concept, JSONL files, validated at load.

A concept folder (built-in: saebasis/data/<name>/, any local path, or `hf:<owner>/<repo>[/<subfolder>]`,
a Hugging Face *dataset* repo holding the same files, fetched when online and cached) holds:
  concept.yaml        name, description (used by the embedding judge), judge: a concept judge registered in
                      saebasis.judges (vader, vader_negative, textblob, textblob_negative, minilm, ab, brevity,
                      formality), optional second_judge: an independent judge of the same concept (its scores
                      and their Spearman agreement with the judge's are reported beside them), optional
                      family: a free word grouping concepts in the leaderboard's family table (built-ins:
                      sentiment, topic, behaviour; absent: "other"), optional prompt: the text the prompting
                      baseline puts before each instruction (absent: "In your answer, show <description>. "),
                      optional select_by: score (default) | ab, how compare chooses each method's strength
                      (ab: p of the matching answer on the val A/B items; needs ab.jsonl with val and test items)
  pairs.jsonl         {"prompt", "positive", "negative"}: contrastive / preference pairs; SFT trains on
                      prompt -> positive; DiffMean / PCA / SARA are fitted from the same pairs
  neutral.jsonl       {"prompt"}: neutral prompts for KL-to-base (preservation) and fluency
  instructions.jsonl  {"instruction", "split": "val" | "test"}: held-out instructions for evaluation,
                      none of them equal to a pair prompt (evaluation never sees training prompts)
  ab.jsonl            {"question", "matching", "not_matching", "split": "train" | "val" | "test" (optional,
                      default "test")}: A/B behaviour items (CAA style; the question lists the options
                      "(A) ..." and "(B) ..."); required for judge: ab. Only "train" items may be in pairs.jsonl.

The built-in concepts are project-written (no downloads): sentiment (judge: vader, second_judge: textblob),
negative_sentiment (vader_negative, second_judge: textblob_negative); the topics ocean, cooking, sports, space,
music, medicine, law and programming (judge: minilm); the behaviours formality (judge: formality), brevity
(judge: brevity), pirate (a persona, judge: minilm) and sycophancy (A/B behaviour, judge: ab).

A new concept is one folder: `compare data=<folder>` and the leaderboard (`concepts: [builtin, <folder>]`, or a
folder of concept folders) read everything they need from it (`resolve_concepts`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from saebasis.judges import judge_names

DATA_DIR = Path(__file__).resolve().parent
REQUIRED = {
    "pairs.jsonl": ("prompt", "positive", "negative"),
    "neutral.jsonl": ("prompt",),
    "instructions.jsonl": ("instruction", "split"),
}
OPTIONAL = {"ab.jsonl": ("question", "matching", "not_matching")}
AB_SPLITS = ("train", "val", "test")


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
    split: str = "test"


@dataclass
class Concept:
    name: str
    description: str
    judge: str
    pairs: list[Pair]
    neutral: list[str]
    instructions: dict[str, list[str]]
    ab: list[ABItem] = field(default_factory=list)
    second_judge: str | None = None
    """An independent judge of the same concept (e.g. textblob beside vader); None: only `judge`."""
    family: str = "other"
    """The group the leaderboard reports it in (built-ins: sentiment, topic, behaviour)."""
    prompt: str = ""
    """The prompting baseline's text before each instruction ("" = from the description, see `default_prompt`)."""
    select_by: str = "score"
    """How compare chooses a method's strength on val: score (the text score) | ab (p of the matching A/B answer)."""

    def __post_init__(self) -> None:
        self.prompt = self.prompt or default_prompt(self.description)

    def ab_items(self, split: str) -> list[ABItem]:
        """A/B items of one split ("train" | "val" | "test")."""
        return [item for item in self.ab if item.split == split]


SELECT_BY = ("score", "ab")


def default_prompt(description: str) -> str:
    """The prompting baseline of a concept.yaml without `prompt`: its description asked for."""
    return f"In your answer, show {description}. "


def builtin_names() -> list[str]:
    return sorted(p.name for p in DATA_DIR.iterdir() if (p / "concept.yaml").exists())


def concept_dir(name_or_path: str) -> Path:
    if str(name_or_path).startswith("hf:"):
        return hf_concept_dir(str(name_or_path)[3:])
    path = Path(name_or_path)
    if path.is_dir():
        return path
    builtin = DATA_DIR / name_or_path
    if builtin.is_dir():
        return builtin
    raise FileNotFoundError(
        f"No dataset '{name_or_path}': not a folder, and the built-in ones are {builtin_names()}. "
        "Give a built-in name, a local concept folder, or hf:<owner>/<repo> (see saebasis/data/__init__.py)."
    )


def hf_concept_dir(spec: str) -> Path:
    """Fetch (or reuse the cached) concept files from a Hugging Face dataset repo `owner/repo[/subfolder]`."""
    parts = spec.strip("/").split("/")
    if len(parts) < 2:
        raise ValueError(f"hf:{spec} is not a dataset repo id: use hf:<owner>/<repo> or hf:<owner>/<repo>/<subfolder>.")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import snapshot_download

    patterns = [f"{sub}/*" if sub else "*"]
    try:
        root = Path(snapshot_download(repo, repo_type="dataset", allow_patterns=patterns))
    except Exception as err:
        raise FileNotFoundError(
            f"Could not fetch the concept dataset hf:{spec} ({type(err).__name__}: {err}). It needs the network once "
            "(unset HF_HUB_OFFLINE) and a dataset repo holding concept.yaml + the JSONL files; or download the folder "
            "yourself and pass its local path as data=..."
        ) from err
    return root / sub if sub else root


def read_jsonl(path: Path, fields: tuple[str, ...], with_lines: bool = False) -> list:
    """Rows of a JSONL file, each checked to have non-empty string `fields` ((line, row) with `with_lines`)."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing. A concept folder needs {sorted(REQUIRED)} (see saebasis/data/__init__.py)."
        )
    rows = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}:{n} is not valid JSON ({err.msg}). Fix: each line must be one JSON object, "
                f"e.g. {json.dumps({k: '...' for k in fields})}."
            ) from err
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n} must be a JSON object with fields {list(fields)}, got {type(row).__name__}.")
        for key in fields:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(
                    f"{path}:{n}: field '{key}' is missing or empty. "
                    f"Fix: give each row {list(fields)} as non-empty strings."
                )
        rows.append((n, row) if with_lines else row)
    if not rows:
        raise ValueError(f"{path} is empty. Fix: add at least one line, a JSON object with fields {list(fields)}.")
    return rows


def read_meta(root: Path) -> dict:
    path = root / "concept.yaml"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: it names the concept, its description and judge "
            f"({' | '.join(judge_names('concept'))})."
        )
    try:
        meta = yaml.safe_load(_read_text(path)) or {}
    except yaml.YAMLError as err:
        raise ValueError(
            f"{path} is not valid YAML ({err}). Fix: write `name: ...`, `description: ...`, `judge: ...` lines."
        ) from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must be a YAML mapping with name, description and judge.")
    for key in ("name", "description", "judge"):
        if not meta.get(key):
            raise ValueError(f"{path}: field '{key}' is missing. Fix: add a `{key}: ...` line.")
    for key in ("judge", "second_judge"):
        check_judge(path, key, meta.get(key))
    if meta.get("second_judge") == meta["judge"]:
        raise ValueError(
            f"{path}:{yaml_line(path, 'second_judge')}: second_judge is the same as judge ('{meta['judge']}'). "
            "Fix: name a different, independent judge, or remove the line."
        )
    family = meta.setdefault("family", "other")
    if not isinstance(family, str) or not family.strip() or not family.replace("_", "").replace("-", "").isalnum():
        raise ValueError(
            f"{path}:{yaml_line(path, 'family')}: family must be one word (e.g. topic), got {family!r}. "
            "Fix: write e.g. `family: behaviour`, or remove the line."
        )
    check_prompt(path, meta)
    return meta


def check_prompt(path: Path, meta: dict) -> None:
    """`prompt` (optional) is non-empty text; `select_by` (optional) is one of SELECT_BY."""
    prompt = meta.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise ValueError(
            f"{path}:{yaml_line(path, 'prompt')}: prompt must be the text put before each instruction "
            f'(e.g. prompt: "Mention the ocean in your answer. "), got {prompt!r}. Fix it, or remove the line.'
        )
    select_by = meta.setdefault("select_by", "score")
    if select_by not in SELECT_BY:
        raise ValueError(
            f"{path}:{yaml_line(path, 'select_by')}: select_by must be one of {list(SELECT_BY)}, got "
            f"{select_by!r}. Fix: write `select_by: ab` (A/B items) or remove the line (text score)."
        )


def concept_family(name_or_path: str) -> str:
    """The `family` a concept's concept.yaml names ("other" when absent), read without loading its files."""
    return read_meta(concept_dir(name_or_path))["family"]


def yaml_line(path: Path, key: str) -> int:
    """1-based line of the top-level `key:` in a YAML file (1 if not found)."""
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if line.startswith(f"{key}:"):
            return n
    return 1


def check_judge(path: Path, key: str, name) -> None:
    """`key` (judge / second_judge) names a registered concept judge, or is absent (second_judge only)."""
    if name is None and key == "second_judge":
        return
    if name not in judge_names("concept"):
        raise ValueError(
            f"{path}:{yaml_line(path, key)}: {key} must be one of {judge_names('concept')}, got '{name}'. "
            f"Fix: name a registered concept judge, or register yours with @register_judge in saebasis/judges/."
        )


def read_instructions(path: Path, pair_prompts: set[str]) -> dict[str, list[str]]:
    instructions: dict[str, list[str]] = {"val": [], "test": []}
    for n, row in read_jsonl(path, REQUIRED["instructions.jsonl"], with_lines=True):
        if row["split"] not in instructions:
            raise ValueError(f"{path}:{n}: split must be 'val' or 'test', got '{row['split']}'.")
        if row["instruction"] in pair_prompts:
            raise ValueError(
                f"{path}:{n}: '{row['instruction']}' is also a prompt in pairs.jsonl. "
                "Fix: held-out instructions must differ from training prompts; reword or remove it."
            )
        instructions[row["split"]].append(row["instruction"])
    return instructions


def read_ab(path: Path, pair_prompts: set[str]) -> list[ABItem]:
    items = []
    for n, row in read_jsonl(path, OPTIONAL["ab.jsonl"], with_lines=True):
        item = ABItem(row["question"], row["matching"], row["not_matching"], row.get("split", "test"))
        letters = {item.matching.strip("() "), item.not_matching.strip("() ")}
        if letters != {"A", "B"}:
            raise ValueError(
                f"{path}:{n}: matching / not_matching must be '(A)' and '(B)' (one each), "
                f"got '{item.matching}' / '{item.not_matching}'."
            )
        if item.split not in AB_SPLITS:
            raise ValueError(f"{path}:{n}: split must be one of {list(AB_SPLITS)}, got '{item.split}'.")
        if item.split != "train" and item.question in pair_prompts:
            raise ValueError(
                f"{path}:{n} is a '{item.split}' item but its question is also in pairs.jsonl. "
                'Fix: build pairs only from "split": "train" items.'
            )
        items.append(item)
    return items


def load_concept(name_or_path: str) -> Concept:
    root = concept_dir(name_or_path)
    meta = read_meta(root)
    pairs = [
        Pair(r["prompt"], r["positive"], r["negative"])
        for r in read_jsonl(root / "pairs.jsonl", REQUIRED["pairs.jsonl"])
    ]
    prompts = {p.prompt for p in pairs}
    neutral = [r["prompt"] for r in read_jsonl(root / "neutral.jsonl", REQUIRED["neutral.jsonl"])]
    instructions = read_instructions(root / "instructions.jsonl", prompts)
    ab_path = root / "ab.jsonl"
    if meta["judge"] == "ab" and not ab_path.exists():
        raise FileNotFoundError(
            f"{ab_path} is missing: judge 'ab' scores the A/B items in it (fields {list(OPTIONAL['ab.jsonl'])})."
        )
    ab = read_ab(ab_path, prompts) if ab_path.exists() else []
    if meta["select_by"] == "ab" and not ({i.split for i in ab} >= {"val", "test"}):
        raise ValueError(
            f"{root / 'concept.yaml'}: select_by: ab chooses strength on A/B items, but {ab_path} has no "
            f'"split": "val" and "test" items. Fix: add them, or remove the select_by line.'
        )
    return Concept(
        meta["name"],
        meta["description"],
        meta["judge"],
        pairs,
        neutral,
        instructions,
        ab,
        meta.get("second_judge"),
        meta["family"],
        meta.get("prompt") or "",
        meta["select_by"],
    )


BUILTIN = "builtin"
"""The `concepts` entry that stands for every built-in concept (saebasis/data/<name>/, in name order)."""


def resolve_concepts(entries: list[str]) -> list[str]:
    """A leaderboard's concept list, expanded: `builtin` -> every built-in concept; a built-in name, a concept
    folder (holding concept.yaml) or hf:<repo> -> itself; a folder of concept folders -> each of them (name order).
    Names must be unique (each concept's results live in concepts/<name>/); nothing is loaded here."""
    out: list[str] = []
    for entry in entries:
        entry = str(entry)
        if entry == BUILTIN:
            out += builtin_names()
        elif entry.startswith("hf:") or any(
            (root / "concept.yaml").exists() for root in (Path(entry), DATA_DIR / entry)
        ):
            out.append(entry)
        elif Path(entry).is_dir() and (found := sorted(str(p.parent) for p in Path(entry).glob("*/concept.yaml"))):
            out += found
        else:
            raise FileNotFoundError(
                f"concepts: '{entry}' is neither a built-in concept ({builtin_names()}), '{BUILTIN}' (all of them), a "
                "concept folder (with concept.yaml) nor a folder of concept folders. Fix the entry or the path."
            )
    names = [Path(c).name for c in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(
            f"concepts: {twice} appear more than once (each concept's results go to concepts/<name>/). "
            "Fix: list each concept once, or rename one of the folders."
        )
    return out


def _read_text(path: Path) -> str:
    """UTF-8 text of a dataset file; undecodable bytes are reported as file:line with the fix."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: byte {data[err.start : err.start + 1]!r} is not UTF-8 ({err.reason}). "
            f"Fix: save the file as UTF-8."
        ) from err


def split_pairs(
    concept: Concept, val_fraction: float = 0.1, seed: int = 0, max_pairs: int | None = None
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """The trainer's train / val split of a concept's pairs: the first `max_pairs`, a seeded shuffle, and
    val = the first `val_fraction` (at least one row when there are two or more). Returns (train, val) rows
    of (prompt, positive, negative)."""
    import random

    rows = [(p.prompt, p.positive, p.negative) for p in concept.pairs][: max_pairs or None]
    random.Random(seed).shuffle(rows)
    n_val = max(1, int(len(rows) * val_fraction)) if len(rows) > 1 else 0
    return rows[n_val:], rows[:n_val]
