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
from saebasis.core.sae import resolve_builtin
from saebasis.data import load_concept
from saebasis.runs import PICKLE_SUFFIXES  # one home for the refused suffixes


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

    from saebasis.core.models import EMBEDDED_NAMES, check_safetensors_folder, embedded_model_dir

    config = _tiny_config(name)
    if config is None:
        path = embedded_model_dir() if name.lower() in EMBEDDED_NAMES else name
        try:
            check_safetensors_folder(path)
        except ValueError as err:
            raise ConfigError(
                "model.name", str(err).rstrip("."), "convert the weights to safetensors as shown, or pick another model"
            ) from err
        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise ConfigError(
                "model.name",
                f"cannot read the config of model '{name}' ({err})",
                "use 'smollm2' (embedded), a local model folder, or go online for a hub id",
            ) from err
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
        raise ConfigError(
            field, f"must be a finite number, got {value!r}", f"set {field}=1.0 (0 disables steering)"
        ) from err


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
    fixes = {
        "batch_size": "set batch_size=8",
        "max_len": "set max_len=64 (tokens per prompt + completion; longer texts keep their last tokens)",
    }
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
    _positive_int(
        cfg, "max_len", "set max_len=64 (tokens per prompt + completion; longer texts keep their last tokens)"
    )
    vf = cfg.get("val_fraction", 0.1)
    if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 <= vf < 1:
        raise ConfigError(
            "val_fraction", f"must be in [0, 1), got {vf!r}", "set val_fraction=0.1 (training needs pairs left over)"
        )
    for key in ("max_steps", "max_epochs"):
        value = (cfg.get("trainer") or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < -1 or value == 0):
            raise ConfigError(
                f"trainer.{key}",
                f"must be a positive integer (or -1: no limit), got {value!r}",
                f"set trainer.{key}=100",
            )
    check_train_fields(cfg)


# -- every field of a training config: choices, counts, finite numbers, known keys -------------------
TRAIN_CHOICES: dict[str, tuple] = {"objective": ("sft", "preference", "reps")}
"""Enum-like training fields and their allowed values."""
MODEL_DTYPES = ("float32", "float16", "bfloat16")
LOGGER_MODES = (None, "online", "offline", "disabled")


def check_choice(value: Any, field: str, choices: tuple) -> None:
    if value not in choices:
        shown = ", ".join("null" if c is None else str(c) for c in choices)
        raise ConfigError(field, f"unknown value {value!r}", f"choose one of {shown}")


def check_real(cfg: dict, key: str, minimum: float, strict: bool, fix: str) -> None:
    """A finite number >= minimum (> minimum when strict); a missing key keeps its default."""
    if key not in cfg or cfg[key] is None:
        return
    value = cfg[key]
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or value < minimum or (strict and value == minimum):
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise ConfigError(key, f"must be a finite number {bound}, got {value!r}", fix)


def check_count(cfg: dict, key: str, fix: str, minimum: int = 1) -> None:
    """An integer count >= minimum, or null (no limit); 0 and negatives are refused, never read as 'all'."""
    value = cfg.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(key, f"must be {what} or null, got {value!r}", fix)


def check_flag(cfg: dict, key: str) -> None:
    if key in cfg and cfg[key] is not None and not isinstance(cfg[key], bool):
        raise ConfigError(key, f"must be true or false, got {cfg[key]!r}", f"set {key}=true or {key}=false")


def check_model_fields(model: Any) -> None:
    """model.dtype (a floating-point dtype; the LM is never quantised here)."""
    dtype = _get(model, "dtype")
    if dtype is not None:
        check_choice(str(dtype), "model.dtype", MODEL_DTYPES)


def check_train_fields(cfg: dict) -> None:
    """Choices, counts and coefficients of a training config, and its keys (a typo names the valid ones)."""
    for key, choices in TRAIN_CHOICES.items():
        if key in cfg:
            check_choice(cfg[key], key, choices)
    check_real(cfg, "beta", 0.0, True, "set beta=1.0 (the preference temperature)")
    check_real(cfg, "kl_coef", 0.0, False, "set kl_coef=0.0 (or a small positive weight such as 0.1)")
    check_real(cfg, "weight_decay", 0.0, False, "set weight_decay=0.0 (or a small positive value such as 0.01)")
    check_count(cfg, "max_pairs", "set max_pairs=null to use every pair, or a positive number of pairs")
    check_count(cfg, "n_samples", "set n_samples=3 (0: no sample generations)", minimum=0)
    check_count(cfg, "ckpt_every_n_steps", "set ckpt_every_n_steps=5")
    for key in ("resume", "overwrite", "cache_activations"):
        check_flag(cfg, key)
    check_model_fields(cfg.get("model"))
    logger = cfg.get("logger")
    if isinstance(logger, dict):
        check_choice(logger.get("mode"), "logger.mode", LOGGER_MODES)
    check_known_keys(cfg, train_keys(), "", extra=("method",))
    if isinstance(cfg.get("trainer"), dict):
        check_known_keys(cfg["trainer"], trainer_keys(), "trainer.")


def train_keys() -> set[str]:
    """The top-level keys of a composed train config: configs/train.yaml's own keys and its config groups."""
    import yaml

    from saebasis.config import CONFIG_DIR

    raw = yaml.safe_load((CONFIG_DIR / "train.yaml").read_text())
    groups = {
        k.split("/")[-1].split("@")[0]
        for d in raw.get("defaults", [])
        if isinstance(d, dict)
        for k, v in d.items()
        if v is not None
    }  # experiment / debug (null by default) are packaged _global_
    return (set(raw) - {"defaults", "hydra"}) | groups


def trainer_keys() -> set[str]:
    """The arguments Lightning's Trainer accepts from `trainer.*` (saebasis passes callbacks / logger itself)."""
    import inspect

    import lightning as L

    return set(inspect.signature(L.Trainer.__init__).parameters) - {"self", "callbacks", "logger", "default_root_dir"}


def check_known_keys(cfg: dict, allowed: set[str], prefix: str = "", extra: tuple[str, ...] = ()) -> None:
    """Refuse keys a config does not know (e.g. `+max_epochs=5` for trainer.max_epochs), naming the valid ones."""
    import difflib

    unknown = sorted(set(cfg) - set(allowed) - set(extra))
    if not unknown:
        return
    key = unknown[0]
    if not prefix and key in trainer_keys():
        meant = f"trainer.{key}"
    else:
        close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
        meant = f"{prefix}{close[0]}" if close else None
    hint = f"did you mean {meant}? " if meant else ""
    raise ConfigError(
        f"{prefix}{key}",
        f"unknown key: nothing reads it ({hint}valid keys{' of ' + prefix[:-1] if prefix else ''}: "
        f"{', '.join(sorted(allowed))})",
        f"{'use ' + meant + '=<value>' if meant else 'drop it'} (without '+': '+key=' adds a new key, and a new "
        f"key is never read)",
    )


def check_pair_duplicates(concept: Any, cfg: dict, field: str = "data") -> None:
    """Duplicate pairs are reported; duplicates that would land in both the train and the validation split
    (validation rows that are training rows) are refused."""
    import warnings

    from saebasis.data import split_pairs

    rows = [(p.prompt, p.positive, p.negative) for p in concept.pairs][: cfg.get("max_pairs") or None]
    n_dup = len(rows) - len(set(rows))
    if not n_dup:
        return
    train_rows, val_rows = split_pairs(concept, cfg.get("val_fraction", 0.1), cfg.get("seed", 0), cfg.get("max_pairs"))
    leaked = set(train_rows) & set(val_rows)
    if leaked:
        raise ConfigError(
            field,
            f"{n_dup} of {len(rows)} pairs of '{concept.name}' are duplicates, and {len(leaked)} of "
            f"them fall in both the train and the validation split (validation would score training rows)",
            "remove the repeated lines from pairs.jsonl (each pair once)",
        )
    warnings.warn(
        f"{n_dup} of {len(rows)} pairs of '{concept.name}' are duplicates (the same prompt, positive and "
        f"negative): each repeat weighs that pair more. Remove them from pairs.jsonl unless intended.",
        stacklevel=2,
    )


def check_hook(hook: str | None, n_layers: int, field: str = "hook") -> None:
    if hook is None:
        return
    try:
        point = hooks.parse_hook(str(hook))
    except ValueError as err:
        raise ConfigError(
            field, f"unknown hook '{hook}'", "use a residual hook such as blocks.12.hook_resid_post"
        ) from err
    if not 0 <= point.layer < n_layers:
        raise ConfigError(
            field,
            f"layer {point.layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})",
            f"pick a layer in 0..{n_layers - 1}, e.g. {field}=blocks.{n_layers // 2}.hook_resid_post",
        )


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
        raise ConfigError(
            f"{field}.path",
            f"{path} is not a safetensors SAE folder (found {planted or 'no sae_weights.safetensors / cfg.json'})",
            "saebasis loads only cfg.json + sae_weights.safetensors, never pickles: convert it with SAE.save_model",
        )
    try:
        sae_json = json.loads((path / "cfg.json").read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{field}.path", f"{path / 'cfg.json'} is not valid JSON ({err.msg})", "re-save the SAE"
        ) from err
    d_in = sae_json.get("d_in")
    if d_in != d_model:
        raise ConfigError(
            f"{field}.path",
            f"SAE width d_in={d_in} does not match the model's d_model={d_model}",
            "use an SAE trained on this model (saebasis train-sae) or the model it was trained on",
        )
    return sae_json


def _missing_sae(field: str, source: Any) -> None:
    raise ConfigError(
        f"{field}.path",
        f"'{source}' is neither a local SAE folder nor a release with an sae_id",
        f"pass a folder, or {field}.path=<release> {field}.sae_id=<id>",
    )


def check_dataset(name: Any, field: str = "data"):
    """The dataset loads (returns the concept)."""
    if not name or not isinstance(name, str):
        raise ConfigError(field, f"no dataset given (got {name!r})", f"set {field}=<built-in concept name or folder>")
    try:
        return load_concept(name)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(
            field, f"dataset '{name}' cannot be used: {err}", "fix the file named above, or pick a built-in concept"
        ) from err


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
        raise ConfigError(
            "hook",
            f"hook={hook} but the SAE reads {sae_hook}",
            "drop the hook override (the SAE's hook is used), pick an SAE for this hook, or set sae=none",
        )


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
    check_count(cfg, "max_pairs", "set max_pairs=null to use every pair, or a positive number of pairs")
    if dataset_field is not None:
        concept = check_dataset(dataset_name(cfg, dataset_field), dataset_field)
        check_pair_duplicates(concept, cfg, dataset_field)
    name = _get(cfg, "model.name")
    if not name:
        raise ConfigError(
            "model.name", "no model given", "set model=smollm2 (embedded default) or model.name=<folder or hub id>"
        )
    check_model_fields(cfg.get("model"))
    n_layers, d_model = model_shape(str(name))
    hook = cfg.get("hook") or _get(cfg, "sae.hook")
    check_hook(hook, n_layers, "hook" if cfg.get("hook") else "sae.hook")
    check_sae(cfg.get("sae"), d_model)
    check_hook_matches_sae(cfg.get("hook"), cfg.get("sae"))


# -- train-sae: every field before the model loads or any activation is cached ------------------------------
SAE_ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu", "gated")
SAE_ACTIVATIONS = ("cached", "stream")


def check_sae_training(cfg: dict) -> None:
    """`saebasis train-sae` fields: architecture, widths, token counts, lr and the buffer rule, before any work
    (the activation cache alone can take an hour)."""
    check_choice(cfg.get("architecture"), "architecture", SAE_ARCHITECTURES)
    check_choice(cfg.get("activations", "cached"), "activations", SAE_ACTIVATIONS)
    for key in (
        "d_sae",
        "training_tokens",
        "train_batch_size_tokens",
        "store_batch_size_prompts",
        "n_batches_in_buffer",
        "context_size",
        "eval_max_len",
        "dead_feature_window",
    ):
        if key in cfg:
            _positive_int(cfg, key, f"set {key} to a positive integer (configs/train_sae.yaml has the defaults)")
    for key in ("layer", "lr_warm_up_steps", "skip_first"):
        check_count(cfg, key, f"set {key} to an integer >= 0", minimum=0)
    if cfg.get("layer") is None:
        raise ConfigError("layer", "is missing", "set layer=12 (the block whose resid_post the SAE reads)")
    check_real(cfg, "lr", 0.0, True, "set lr=1e-3")
    if cfg.get("lr") is None:
        raise ConfigError("lr", "is missing", "set lr=1e-3")
    frac = cfg.get("lr_decay_fraction", 0)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac <= 1:
        raise ConfigError("lr_decay_fraction", f"must be in [0, 1], got {frac!r}", "set lr_decay_fraction=0.2")
    if "seed" in cfg and (isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int)):
        raise ConfigError("seed", f"must be an integer, got {cfg['seed']!r}", "set seed=42")
    k = (cfg.get("sae_kwargs") or {}).get("k")
    if cfg.get("architecture") in ("topk", "batchtopk") and k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= cfg["d_sae"]:
            raise ConfigError(
                "sae_kwargs.k",
                f"must be an integer in 1..d_sae={cfg['d_sae']}, got {k!r}",
                "set sae_kwargs.k=32 (active latents per token)",
            )
    buffer = cfg["n_batches_in_buffer"] * cfg["context_size"]
    if buffer < cfg["train_batch_size_tokens"]:
        raise ConfigError(
            "n_batches_in_buffer",
            f"n_batches_in_buffer * context_size = {buffer} tokens is smaller than "
            f"train_batch_size_tokens = {cfg['train_batch_size_tokens']} (sae-lens' buffer must hold one "
            f"training batch)",
            f"raise n_batches_in_buffer to >= {-(-cfg['train_batch_size_tokens'] // cfg['context_size'])}",
        )
    check_model_fields(cfg.get("model"))
    name = _get(cfg, "model.name")
    if name:
        n_layers, _ = model_shape(str(name))
        if not 0 <= cfg["layer"] < n_layers:
            raise ConfigError(
                "layer",
                f"layer {cfg['layer']} is out of range: the model has {n_layers} layers",
                f"pick a layer in 0..{n_layers - 1}",
            )
