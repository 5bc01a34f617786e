"""What a compare is asked to do, checked before any heavy work: the method specs (`kind`s), the config's defaults and
checks, each (method, seed)'s composed train / fit config and the resume key it hashes to."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

from saebasis.config import compose, override, to_dict
from saebasis.eval import capability

KINDS = ("none", "prompt", "train", "fit", "run")


class Method(NamedTuple):
    intervention: object | None  # None: unsteered / prompting
    hook: str | None  # where the run applies (SARA reads block L's input)
    fit_time_s: float
    prefix: str = ""  # prompting: text put before each user message


def check_methods(cfg: dict, concept) -> None:
    """Every spec is well formed and the data can support the protocol -- before any heavy work."""
    if not cfg.get("methods"):
        raise ValueError("compare needs at least one method: methods: {unsteered: {kind: none}, ...}.")
    for name, spec in cfg["methods"].items():
        kind = (spec or {}).get("kind")
        if kind not in KINDS:
            raise ValueError(f"methods.{name}: kind must be one of {list(KINDS)}, got {kind!r}.")
        if kind == "prompt" and not (isinstance(spec.get("prefix"), str) and spec["prefix"].strip()):
            raise ValueError(
                f"methods.{name}: kind prompt needs a prefix (the text asking for the concept), got "
                f"{spec.get('prefix')!r}; or no prefix: the concept's own (its concept.yaml `prompt`)."
            )
        if kind == "run" and not (spec.get("run_dir") or spec.get("run")):
            raise ValueError(
                f"methods.{name}: kind run needs run_dir=<folder written by train / fit-baseline> "
                "(or run=<Run> from Python)."
            )
        grid = spec.get("strengths")
        if (
            kind in ("train", "fit", "run")
            and grid is not None
            and (not grid or not all(isinstance(s, (int, float)) for s in grid))
        ):
            raise ValueError(f"methods.{name}: strengths must be a non-empty list of numbers, got {grid!r}.")
    for split in ("val", "test"):
        if not concept.instructions[split]:
            raise ValueError(
                f"Concept '{concept.name}' has no '{split}' instructions: compare chooses strength on val "
                "and reports test."
            )
    if cfg.get("select_by", "score") == "ab" and not (concept.ab_items("val") and concept.ab_items("test")):
        raise ValueError(
            "select_by=ab needs A/B items with split val and test in the concept's ab.jsonl "
            f"('{concept.name}' has none)."
        )


def for_concept(cfg: dict, concept) -> dict:
    """The concept's own settings where the config leaves them open (a new concept is one folder): select_by null ->
    its concept.yaml's (default score); a prompt method without `prefix` -> its concept.yaml's `prompt`."""
    if cfg.get("select_by") is None:
        cfg["select_by"] = concept.select_by
    for spec in cfg["methods"].values():
        if spec.get("kind") == "prompt" and not spec.get("prefix"):
            spec["prefix"] = concept.prompt
    return cfg


def normalise(cfg: dict) -> dict:
    """Checks (defaults live in configs/compare.yaml only); seeds: a list (default [seed])."""
    missing = [
        k
        for k in ("select_by", "strength_search", "do_sample", "temperature", "top_p", "n_val", "n_test")
        if k not in cfg
    ]
    if missing:
        raise ValueError(
            f"compare config lacks {missing}: compose it from configs/compare.yaml "
            "(saebasis.config.compose('compare', ...))."
        )
    cfg["seeds"] = [int(s) for s in (cfg.get("seeds") or [cfg.get("seed", 0)])]
    cfg["methods"] = keep_methods(cfg.get("methods") or {}, cfg.get("only"))
    if cfg["select_by"] not in (None, "score", "ab"):
        raise ValueError(
            f"select_by must be null (the concept's), 'score' (harmonic-mean text score) or 'ab' "
            f"(A/B matching probability), got {cfg['select_by']!r}."
        )
    n_cap = cfg.setdefault("capability", 0)
    if isinstance(n_cap, bool) or not isinstance(n_cap, int) or n_cap < 0:
        raise ValueError(
            "capability must be 0 (off) or how many capability items to score at each method's chosen strength "
            f"(e.g. 110; {len(capability.load_items())} or more = all), got {n_cap!r}."
        )
    if cfg.get("autocast") not in (None, *MIXED):
        raise ValueError(f"autocast must be null (full precision) or one of {list(MIXED)}, got {cfg['autocast']!r}.")
    return cfg


def keep_methods(methods: dict, only=None) -> dict:
    """The method specs that are not null (null drops a method) and, when `only` names some, only those, in the
    method set's order. A name not in the set is an error naming the set, before any work."""
    methods = {k: v for k, v in methods.items() if v is not None}
    if only is None:
        return methods
    only = [only] if isinstance(only, str) else list(only)
    unknown = [m for m in only if m not in methods]
    if unknown or not only:
        raise ValueError(
            f"only must name methods of the method set, got {unknown or only!r}; the set (null rows left out): "
            f"{sorted(methods)}. Fix the names, e.g. only=[{','.join(list(methods)[:2])}]."
        )
    return {k: v for k, v in methods.items() if k in only}


def method_config(name: str, spec: dict, cfg: dict, out: Path, seed: int) -> dict | None:
    """The composed train / fit_baseline config of one (method, seed), as a plain dict (None for the kinds
    that are not made here): what the method is made with, and what a resume is keyed on."""
    kind = spec["kind"]
    if kind not in ("train", "fit"):
        return None
    run_dir = out / "runs" / (f"{name}-seed{seed}" if kind == "train" else name)
    shared = list(cfg.get("stack_overrides") or []) + [
        override("data", cfg["data"]),
        override("run_dir", run_dir),
        f"seed={seed}",
        "overwrite=true",
    ]  # paths quoted: `(`, `<`, spaces
    if kind == "train":
        return to_dict(
            compose(
                "train",
                shared
                + ["logger=none", "n_samples=0"]
                + list(spec.get("overrides") or [])
                + mixed_precision(cfg.get("autocast")),
            )
        )  # trained as it is judged
    return to_dict(compose("fit_baseline", shared + list(spec.get("overrides") or [])))


MIXED = {"bfloat16": "bf16-mixed", "float16": "16-mixed"}
"""compare's `autocast` dtype -> the Lightning precision its trained methods are trained with."""


def mixed_precision(autocast: str | None) -> list[str]:
    """The train-config override that trains in the precision `autocast` judges in ([] for full precision)."""
    return [f"trainer.precision={MIXED[autocast]}"] if autocast else []


PLACE_KEYS = ("run_dir", "ckpt_dir", "overwrite", "resume", "logger", "n_samples", "ckpt_every_n_steps")
"""Where and how a run is saved or logged, not what it is: left out of its resume key."""


def config_key(method_cfg: dict | None) -> str | None:
    """A hash of the whole composed config but its place (PLACE_KEYS): any change of a method's config
    (an experiment file, a dataclass default) changes it, so a resume never reuses a stale cell."""
    if method_cfg is None:
        return None
    blob = json.dumps({k: v for k, v in method_cfg.items() if k not in PLACE_KEYS}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def saved_key(run_dir: Path) -> str | None:
    """The resume key of the config a saved run folder was made with (None if it records none)."""
    from saebasis.runs import CFG_FILE, read_json

    try:
        return config_key(read_json(run_dir / CFG_FILE).get("config"))
    except (OSError, ValueError):
        return None


def seeds_for(spec: dict, cfg: dict) -> list[int]:
    """Replicates: trained methods and sampled generations vary with the seed; greedy closed-form ones do not."""
    return list(cfg["seeds"]) if spec["kind"] == "train" or cfg["do_sample"] else list(cfg["seeds"])[:1]
