"""Build the frozen stack (model + tokenizer + SAE basis) a command needs from its config."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

from saebasis.core import hooks
from saebasis.core.models import LoadedModel, load_model
from saebasis.core.sae import CompatReport, SAEBasis, check_compat

# Short neutral texts for the load-time compatibility check (any model, any language domain).
CHECK_TEXTS = [
    "The weather today is mild, with a light breeze from the west.",
    "Please summarise the main points of the meeting in three sentences.",
    "def add(a, b):\n    return a + b",
    "She opened the door and looked out at the quiet street.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "What is the capital of France? The capital of France is Paris.",
]


class Stack(NamedTuple):
    model: Any
    tokenizer: Any
    sae: SAEBasis | None
    hook: str
    compat: CompatReport | None
    source: dict | None = None
    """What it was loaded from ({"model": name, "sae": path or None}), so a shared stack can be checked."""


def load_sae(sae_cfg: Any, device: str = "cpu") -> SAEBasis | None:
    if not sae_cfg or not sae_cfg.get("path"):
        return None
    return SAEBasis.load(sae_cfg["path"], sae_cfg.get("sae_id"), hook=sae_cfg.get("hook"), device=device)


def load_stack(cfg: Any, check: bool | None = None) -> Stack:
    """cfg.model {name, device, dtype}, cfg.sae {path, sae_id, hook, check} or null, cfg.hook (optional).

    The hook defaults to the SAE's; the SAE/model fit is checked at load unless sae.check is false.
    """
    loaded: LoadedModel = load_model(
        cfg["model"]["name"], cfg["model"].get("device", "cpu"), cfg["model"].get("dtype", "float32")
    )
    sae = load_sae(cfg.get("sae"), cfg["model"].get("device", "cpu"))
    hook = cfg.get("hook") or (sae.hook if sae else None)
    if hook is None:
        raise ValueError("No hook: set hook=blocks.L.hook_resid_post (or choose an SAE, whose hook is used).")
    compat = None
    if sae is not None:
        sae.check_width(loaded.model.config.hidden_size)
        if not hooks.same_residual(sae.hook, hook):
            raise ValueError(
                f"hook={hook} but the SAE reads {sae.hook}. "
                f"Drop the hook override, pick an SAE for {hook}, or set sae=none."
            )
        if check if check is not None else cfg["sae"].get("check", True):
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                compat = check_compat(sae, loaded.model, loaded.tokenizer, CHECK_TEXTS)
    source = {
        "model": str(cfg["model"]["name"]),
        "sae": (cfg.get("sae") or {}).get("path") if sae is not None else None,
    }
    return Stack(loaded.model, loaded.tokenizer, sae, hook, compat, source)


def stack_for(stack: Stack, cfg: Any) -> Stack:
    """A stack loaded once (by compare / demo / leaderboard) reused for one method's config: the model and SAE
    must be the ones the config names; the method's hook (e.g. SARA's blocks.13.hook_resid_pre) replaces the
    stack's when it reads the same residual as the SAE (or there is no SAE)."""
    if stack.source is not None:
        want = str(cfg["model"]["name"])
        if want != stack.source["model"]:
            raise ValueError(
                f"This method's config names model '{want}' but the shared stack holds '{stack.source['model']}'. "
                f"Give the method the same model (drop its model override) or run it on its own."
            )
        sae_path = (cfg.get("sae") or {}).get("path")
        if stack.sae is not None and sae_path and sae_path != stack.source["sae"]:
            raise ValueError(
                f"This method's config names SAE '{sae_path}' but the shared stack holds '{stack.source['sae']}'."
            )
        if stack.sae is not None and not sae_path:  # the method runs without an SAE (sae=none)
            stack = stack._replace(sae=None)
    hook = cfg.get("hook") or stack.hook
    if stack.sae is not None and not hooks.same_residual(stack.sae.hook, hook):
        raise ValueError(
            f"hook={hook} but the SAE reads {stack.sae.hook}. "
            f"Drop the hook override, pick an SAE for {hook}, or set sae=none."
        )
    return stack._replace(hook=hook)
