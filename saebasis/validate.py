"""Check a train / fit config before any heavy work (model forward, training) starts.

Every check reads only small files (the model's config.json, the SAE's cfg.json, the dataset's
JSONL) and raises `ConfigError` naming the config field, the problem and the fix. Callers run
`validate(cfg)` first thing, before `load_stack`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from saebasis.core import hooks
from saebasis.data import load_concept
from saebasis.runs import PICKLE_SUFFIXES  # one home for the refused suffixes
from saebasis.core.sae import resolve_builtin


class ConfigError(ValueError):
    """A config field is wrong; the message names the field and how to fix it."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        super().__init__(f"config field '{field}': {problem}. Fix: {fix}")


def _get(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return default
        node = node.get(part)
    return default if node is None else node


def model_shape(name: str) -> tuple[int, int]:
    """(n_layers, d_model) of a model from its config alone (no weights are loaded)."""
    from transformers import AutoConfig

    from saebasis.core.models import EMBEDDED_NAMES, embedded_model_dir

    config = _tiny_config(name)
    if config is None:
        path = embedded_model_dir() if name.lower() in EMBEDDED_NAMES else name
        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise ConfigError("model.name", f"cannot read the config of model '{name}' ({err})",
                              "use 'smollm2' (embedded), a local model folder, or go online for a hub id") from err
    return config.num_hidden_layers, config.hidden_size


def _tiny_config(name: str):
    """The config of a built-in random test model, when `name` is one (see saebasis.core.models)."""
    from saebasis.core import models

    builder = getattr(models, "tiny_config", None)
    return builder(name) if builder is not None else None


def check_strength(value: Any, field: str = "strength") -> None:
    """The interventions' one strength rule, reported as a config error."""
    from saebasis.interventions.base import check_strength as rule

    try:
        rule(value, field)
    except ValueError as err:
        raise ConfigError(field, f"must be a finite number, got {value!r}", f"set {field}=1.0 (0 disables steering)") from err


def _positive_int(cfg: dict, key: str, fix: str, allow_none: bool = False) -> None:
    if key not in cfg:
        raise ConfigError(key, "is missing from the config", fix)
    value = cfg[key]
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, f"must be a positive integer, got {value!r}", fix)


def check_numbers(cfg: dict, keys: tuple[str, ...]) -> None:
    """Positive-integer fields (batch_size, max_len, ...), each with its fix."""
    fixes = {"batch_size": "set batch_size=8", "max_len": "set max_len=64 (tokens per prompt + completion; longer texts keep their last tokens)"}
    for key in keys:
        _positive_int(cfg, key, fixes.get(key, f"set {key} to a positive integer"))


def check_train_numbers(cfg: dict) -> None:
    """lr, seed, batch_size, max_len, val_fraction and the trainer's step/epoch limits, before any work."""
    lr = cfg.get("lr")
    if "lr" not in cfg:
        raise ConfigError("lr", "is missing from the config", "set lr=1e-2 (SAE bias: 0.1)")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError("lr", f"must be a positive finite number, got {lr!r}", "set lr=1e-2 (SAE bias) or 1e-3")
    if "seed" not in cfg or isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int):
        raise ConfigError("seed", f"must be an integer, got {cfg.get('seed', 'nothing')!r}", "set seed=0")
    _positive_int(cfg, "batch_size", "set batch_size=8")
    _positive_int(cfg, "max_len", "set max_len=64 (tokens per prompt + completion; longer texts keep their last tokens)")
    vf = cfg.get("val_fraction", 0.1)
    if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 <= vf < 1:
        raise ConfigError("val_fraction", f"must be in [0, 1), got {vf!r}", "set val_fraction=0.1 (training needs pairs left over)")
    for key in ("max_steps", "max_epochs"):
        value = (cfg.get("trainer") or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < -1 or value == 0):
            raise ConfigError(f"trainer.{key}", f"must be a positive integer (or -1: no limit), got {value!r}", f"set trainer.{key}=100")


def check_hook(hook: str | None, n_layers: int, field: str = "hook") -> None:
    if hook is None:
        return
    try:
        point = hooks.parse_hook(str(hook))
    except ValueError as err:
        raise ConfigError(field, f"unknown hook '{hook}'", "use a residual hook such as blocks.12.hook_resid_post") from err
    if not 0 <= point.layer < n_layers:
        raise ConfigError(field, f"layer {point.layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})",
                          f"pick a layer in 0..{n_layers - 1}, e.g. {field}=blocks.{n_layers // 2}.hook_resid_post")


def check_sae(sae_cfg: Any, d_model: int, field: str = "sae") -> dict | None:
    """Read a local SAE folder's cfg.json (never its weights): format and width. Returns it, or None
    for a pretrained release (checked at load)."""
    source = _get(sae_cfg, "path")
    if not source:
        return None
    path = resolve_builtin(str(source)) if str(source).startswith("builtin:") else Path(str(source))
    if not path.exists():
        return None if _get(sae_cfg, "sae_id") else _missing_sae(field, source)
    planted = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if planted or not (path / "sae_weights.safetensors").exists() or not (path / "cfg.json").exists():
        raise ConfigError(f"{field}.path", f"{path} is not a safetensors SAE folder (found {planted or 'no sae_weights.safetensors / cfg.json'})",
                          "saebasis loads only cfg.json + sae_weights.safetensors, never pickles: convert it with SAE.save_model")
    try:
        sae_json = json.loads((path / "cfg.json").read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{field}.path", f"{path / 'cfg.json'} is not valid JSON ({err.msg})", "re-save the SAE") from err
    d_in = sae_json.get("d_in")
    if d_in != d_model:
        raise ConfigError(f"{field}.path", f"SAE width d_in={d_in} does not match the model's d_model={d_model}",
                          "use an SAE trained on this model (saebasis train-sae) or the model it was trained on")
    return sae_json


def _missing_sae(field: str, source: Any) -> None:
    raise ConfigError(f"{field}.path", f"'{source}' is neither a local SAE folder nor a release with an sae_id",
                      f"pass a folder, or {field}.path=<release> {field}.sae_id=<id>")


def check_dataset(name: Any, field: str = "data") -> None:
    if not name or not isinstance(name, str):
        raise ConfigError(field, f"no dataset given (got {name!r})", f"set {field}=<built-in concept name or folder>")
    try:
        load_concept(name)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(field, f"dataset '{name}' cannot be used: {err}", "fix the file named above, or pick a built-in concept") from err


def check_intervention(method: Any, fields: Any, field: str = "method") -> None:
    """The method is registered and its config fields are known and valid (dataclass __post_init__)."""
    from saebasis.interventions import REGISTRY

    if method not in REGISTRY:
        raise ConfigError(field, f"unknown intervention '{method}'", f"choose one of {sorted(REGISTRY)}")
    from saebasis.interventions.base import build

    try:  # build() is the one home of the unknown-field and field-value checks; d_model / SAE are checked elsewhere
        cls = REGISTRY[method]
        values = {k: v for k, v in dict(fields or {}).items() if k not in ("method", "strength")}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls.Config)})
        if unknown:
            build(method, values, 1)  # raises the registry's message
        cls.Config(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError("intervention", str(err).rstrip("."), "correct the field named above") from err


def dataset_name(cfg: dict, field: str) -> Any:
    """The dataset name at `field`; a mapping there may hold it under `concept` or `name`."""
    value = _get(cfg, field)
    if isinstance(value, dict):
        return value.get("concept") or value.get("name")
    return value


def check_hook_matches_sae(hook: str | None, sae_cfg: Any) -> None:
    sae_hook = _get(sae_cfg, "hook")
    if not hook or not sae_hook or not _get(sae_cfg, "path"):
        return
    same = getattr(hooks, "same_residual", lambda a, b: hooks.parse_hook(a).name == hooks.parse_hook(b).name)
    if not same(str(hook), str(sae_hook)):
        raise ConfigError("hook", f"hook={hook} but the SAE reads {sae_hook}",
                          "drop the hook override (the SAE's hook is used), pick an SAE for this hook, or set sae=none")


def validate(cfg: Any, dataset_field: str | None = "data") -> None:
    """All checks a train / fit config needs, cheapest first; raises ConfigError on the first problem.

    cfg: a DictConfig / dict with model.name, hook, sae {path, sae_id, hook} (or null), the method at
    `method` or `intervention.method`, intervention {...}, and the dataset name at `dataset_field`
    (a string, or a mapping with `concept` / `name`; None skips the dataset check).
    """
    from saebasis.config import to_dict

    cfg = to_dict(cfg) if not isinstance(cfg, dict) else cfg
    method = cfg.get("method") or _get(cfg, "intervention.method")
    if method is not None:
        check_intervention(method, cfg.get("intervention"), "method" if cfg.get("method") else "intervention.method")
    if dataset_field is not None:
        check_dataset(dataset_name(cfg, dataset_field), dataset_field)
    name = _get(cfg, "model.name")
    if not name:
        raise ConfigError("model.name", "no model given", "set model=smollm2 (embedded default) or model.name=<folder or hub id>")
    n_layers, d_model = model_shape(str(name))
    hook = cfg.get("hook") or _get(cfg, "sae.hook")
    check_hook(hook, n_layers, "hook" if cfg.get("hook") else "sae.hook")
    check_sae(cfg.get("sae"), d_model)
    check_hook_matches_sae(cfg.get("hook"), cfg.get("sae"))
