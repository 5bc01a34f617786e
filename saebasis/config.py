"""Where the Hydra configs live, composing them from Python (tests, notebooks), and env defaults."""

from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def setup_env() -> None:
    """wandb offline unless the user has a key; no hub traffic unless the user opted in.

    A run never fails because wandb cannot reach a server: with no WANDB_API_KEY (and no
    ~/.netrc entry) the mode defaults to offline, and logs sync later with `wandb sync`.
    """
    os.environ.setdefault("WANDB_MODE", "online" if has_wandb_key() else "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def has_wandb_key() -> bool:
    """A key in WANDB_API_KEY or from `wandb login` (~/.netrc)."""
    path = Path.home() / ".netrc"
    return bool(os.environ.get("WANDB_API_KEY")) or (
        path.exists() and "api.wandb.ai" in path.read_text(errors="ignore")
    )


def register_configs() -> None:
    """Hydra's ConfigStore holds each method's defaults, taken from its typed dataclass (the one home of every
    default): `intervention/<method>_defaults`. The YAML files in configs/intervention/ start from it and only
    override what they change, and Hydra's struct mode rejects a mistyped field at composition."""
    import dataclasses

    from hydra.core.config_store import ConfigStore

    from saebasis.interventions import REGISTRY

    store = ConfigStore.instance()
    for name, cls in REGISTRY.items():
        defaults = {}
        for f in dataclasses.fields(cls.Config):
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            defaults[f.name] = value
        store.store(group="intervention", name=f"{name}_defaults", node={"method": name, **defaults})


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose a config exactly as the CLI would (`saebasis <cmd> k=v ...`), without running it."""
    from hydra import compose as hydra_compose

    register_configs()
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a running `saebasis <cmd>` (e.g. the demo)
        return hydra_compose(config_name=config_name, overrides=overrides or [])
    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(
            f"Config folder {CONFIG_DIR} not found: install saebasis from a clone with `pip install -e .`."
        )
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return hydra_compose(config_name=config_name, overrides=overrides or [])


SAFE_OVERRIDE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-:+~")


def override(key: str, value) -> str:
    """`key=value` as a Hydra override that reads `value` back verbatim: a path holding spaces, `(`, `<`, `=`,
    quotes or commas is single-quoted (quotes and backslashes before them escaped), never parsed as grammar."""
    text = str(value)
    if text and set(text) <= SAFE_OVERRIDE_CHARS and not text[0].isdigit():
        return f"{key}={text}"
    text = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), text)  # before a quote
    return f"{key}='" + text.replace("${", "\\${") + "'"  # and no interpolation


def to_dict(cfg: DictConfig | dict) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def resolve_run_dir(cfg: dict) -> dict:
    """Fill run_dir / ckpt_dir when null: inside a Hydra run (CLI, multirun job) the job's output folder,
    so every multirun job saves its own run; else runs/<method>-<time>."""
    import time

    if not cfg.get("run_dir"):
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            cfg["run_dir"] = str(Path(HydraConfig.get().runtime.output_dir) / "run")
        else:
            cfg["run_dir"] = f"runs/{cfg['intervention']['method']}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not cfg.get("ckpt_dir"):
        cfg["ckpt_dir"] = f"{cfg['run_dir']}.ckpt"
    return cfg
