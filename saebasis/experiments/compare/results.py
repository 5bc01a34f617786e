"""A compare's results on disk: results.json and the tables (rewritten after every method, so a crash loses nothing),
the cells several workers share, and which saved results a resume may reuse (the same spec, evaluation settings and
composed configs)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

from saebasis.eval import plots
from saebasis.experiments import cells
from saebasis.experiments.compare.spec import config_key, method_config, saved_key, seeds_for


def merge(out: Path, results: dict, cfg: dict, seconds: float, shared: bool, final: bool = False) -> tuple[dict, dict]:
    """Write results.json and the tables from this process's results and (shared) every valid saved cell, under the
    merge lock; final: the plots too, when every method is there. Returns (the merged results, the paths)."""
    if not shared:
        return results, write(out, results, cfg, seconds, final=final)
    with cells.merge_lock(out / "results"):
        saved = finished_methods(out, cfg)
        merged = {name: results.get(name) or saved[name] for name in cfg["methods"] if name in results or name in saved}
        complete = all(name in merged or name in cfg["skipped"] for name in cfg["methods"])
        paths = write(out, merged, cfg, seconds, final=final and complete)
    return merged, {**paths, "complete": complete}


def finite(x):
    """NaN / inf -> None, so results.json is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def write(out: Path, results: dict, cfg: dict, seconds: float, final: bool = False) -> dict:
    rows = [r["row"] for r in results.values()]
    paths = plots.write_tables(out, rows)
    if cfg.get("skipped"):  # optional peers whose environment is missing: said, not silently dropped
        with open(out / "results.md", "a") as f:
            f.writelines(
                f"\nSkipped {name}: its environment is missing ({why}).\n" for name, why in cfg["skipped"].items()
            )
    blob = {"config": _plain(cfg), "total_time_s": seconds, "complete": final, "results": results}
    tmp = out / f".results.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(finite(blob), indent=2, default=str))
    tmp.replace(out / "results.json")
    paths["json"] = str(out / "results.json")
    if final:
        paths.update(plots.plot_results(out, results))
        plots.log_wandb(cfg, out, rows, paths)
    return paths


_KEYS: dict[str, list] | None = None
"""expected_keys' answers during one compare call (its merges ask again after every method); None outside one."""


def expected_keys(name: str, spec: dict, cfg: dict, out: Path) -> list[str | None]:
    """The resume keys of a method's composed configs, one per seed (None for kinds not made here)."""
    memo = json.dumps(
        [name, _plain({"methods": {name: spec}})["methods"][name], str(out)]
        + [cfg.get(k) for k in ("stack_overrides", "data", "autocast", "seeds", "do_sample")],
        sort_keys=True,
        default=str,
    )
    if _KEYS is not None and memo in _KEYS:
        return _KEYS[memo]
    keys = [config_key(method_config(name, spec, cfg, out, seed)) for seed in seeds_for(spec, cfg)]
    if _KEYS is not None:
        _KEYS[memo] = keys
    return keys


@contextlib.contextmanager
def remembered_keys():
    """Within: each method's resume keys are composed once (the configs on disk do not change during one compare)."""
    global _KEYS
    outer, _KEYS = _KEYS, ({} if _KEYS is None else _KEYS)
    try:
        yield
    finally:
        _KEYS = outer


def finished_methods(out: Path, cfg: dict) -> dict[str, dict]:
    """Results of methods already complete in out/results.json with the same spec *and* the same composed
    train / fit config per seed (resume=true): editing an experiment file or a default reruns its cells."""
    found = {name: cell for name in cfg["methods"] if (cell := finished_cell(out, name, cfg)) is not None}
    path = out / "results.json"
    try:
        blob = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        blob = {}  # a torn write: start over (results are rewritten after every method)
    if (blob.get("config") or {}).get("autocast") != cfg.get("autocast"):
        return found  # judged in another precision: greedy text differs, nothing carries over
    specs = _plain(cfg)["methods"]
    old = (blob.get("config") or {}).get("methods") or {}
    legacy = {
        name: res
        for name, res in (blob.get("results") or {}).items()  # results.json written before cells
        if name in specs
        and name not in found
        and old.get(name) == specs[name]
        and recorded_keys(name, res, cfg, out) == expected_keys(name, cfg["methods"][name], cfg, out)
    }
    return {**legacy, **found}


EVAL_KEYS = (
    "seeds",
    "n_val",
    "n_test",
    "n_neutral",
    "max_new_tokens",
    "select_by",
    "strength_search",
    "do_sample",
    "temperature",
    "top_p",
    "autocast",
)
"""What a cell's judged result depends on besides its method (its spec and composed configs)."""


def cell_key(name: str, cfg: dict) -> dict:
    """What a saved cell must match to be reused: the method's spec and the evaluation settings (capability only when
    measured, so cells saved before it existed stay valid without it)."""
    evaluation = {k: cfg.get(k) for k in EVAL_KEYS}
    if cfg.get("capability"):
        evaluation["capability"] = cfg["capability"]
    return {"spec": _plain(cfg)["methods"][name], "eval": evaluation}


def finished_cell(out: Path, name: str, cfg: dict) -> dict | None:
    """The saved cell of `name` when it was made with this spec, these evaluation settings and the same composed
    train / fit configs (None otherwise: it is computed again)."""
    blob = cells.read_cell(out, name)
    if not blob or "row" not in blob:
        return None
    key = cell_key(name, cfg)
    made = blob.get("cell") or {}
    same = made.get("spec") == key["spec"] and made.get("eval") == json.loads(json.dumps(key["eval"], default=str))
    return blob if same and blob.get("config_keys") == expected_keys(name, cfg["methods"][name], cfg, out) else None


def recorded_keys(name: str, res: dict, cfg: dict, out: Path) -> list[str | None]:
    """The keys a finished result was made with: stored beside it, or (results written before keys were stored)
    read back from the configs its run folders recorded."""
    if "config_keys" in res:
        return res["config_keys"]
    spec = cfg["methods"][name]
    keys = []
    for seed in seeds_for(spec, cfg):
        made = method_config(name, spec, cfg, out, seed)
        keys.append(None if made is None else saved_key(Path(made["run_dir"])))
    return keys


def _plain(cfg: dict) -> dict:
    """The config as JSON can hold it (in-memory runs replaced by their folder)."""
    methods = {
        name: {k: (str(v.path) if k == "run" else v) for k, v in (spec or {}).items()}
        for name, spec in cfg.get("methods", {}).items()
    }
    return {**cfg, "methods": methods}
