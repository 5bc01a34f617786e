"""`saebasis plateau run=<dir>` (or `direction=latent:<i>`): a direction's plateau edge vs random families.

A run whose change is a constant vector v (`folded()`) is measured along v / |v| on a log grid of sizes; the
suggested strength is (edge / |v|) * margin. A method whose change depends on h (an adaptor; `folded()` is
None) is swept in its own strength s (applied as it is, every position but the first): its edge is given in
strength and in residual-change size (mean |h'(s) - h|), and the random families are measured at the same
residual-change sizes. Every KL is reported twice: averaged over all positions but the first, and over only
the positions after the chat template's shared opening. See `saebasis/experiments/plateau/analysis.py` for the
measurement.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from saebasis.config import to_dict
from saebasis.core import hooks
from saebasis.core.models import load_model
from saebasis.core.sae import SAEBasis
from saebasis.core.stack import load_sae
from saebasis.data import load_concept
from saebasis.experiments.plateau.analysis import (
    FAMILIES,
    alive_latents,
    alive_rows,
    covariance_matched,
    covariance_mixture,
    isotropic,
    kl_sweep,
    median_norm,
    method_sweep,
    n_batches,
    neutral_prompts,
    plateau_edge,
    real_mixture,
    size_grid,
    token_acts,
)
from saebasis.experiments.plateau.report import edge_dict, family_summary, write
from saebasis.runs import load_run

_LATENT = re.compile(r"^latent:(\d+)$")


class Target(NamedTuple):
    """What is measured: a constant vector (`vector`) or a method swept in strength (`intervention`)."""

    label: str
    hook: str
    model: dict[str, Any]
    sae: SAEBasis | None
    vector: torch.Tensor | None
    intervention: Any
    data: str | None


def check_cfg(cfg: dict) -> None:
    """Numbers and the target, before anything is loaded."""
    if bool(cfg.get("run")) == bool(cfg.get("direction")):
        raise ValueError(
            "Give exactly one of run=<run folder> (a train / fit-baseline run) or direction=latent:<i> "
            "(one SAE decoder row, with sae=... and optionally hook=...)."
        )
    if cfg.get("direction") and not _LATENT.match(str(cfg["direction"])):
        raise ValueError(
            f"direction={cfg['direction']!r} is not understood; use direction=latent:<i> (i an SAE latent index)."
        )
    for key in ("n_prompts", "n_cov_prompts", "n_random", "batch_size"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{key} must be a positive integer, got {cfg[key]!r}.")
    if not cfg["threshold"] > 0 or not cfg["margin"] > 0:
        raise ValueError(f"threshold and margin must be > 0, got {cfg['threshold']} and {cfg['margin']}.")
    if cfg["size_unit"] not in ("median_norm", "absolute"):
        raise ValueError(f"size_unit must be median_norm or absolute, got {cfg['size_unit']!r}.")
    size_grid(cfg["size_min"], cfg["size_max"], cfg["size_factor"])
    size_grid(cfg["strength_min"], cfg["strength_max"], cfg["size_factor"])
    families = cfg.get("families")
    if isinstance(families, str) or not families or any(f not in FAMILIES for f in families):
        raise ValueError(
            f"families must be a non-empty list drawn from {list(FAMILIES)}, got {families!r} "
            f"(e.g. families=[isotropic,real_mixture])."
        )


def resolve_target(cfg: dict) -> Target:
    """Load the run (or the SAE for a latent) and check the direction; the language model is not loaded yet."""
    if cfg.get("run"):
        run = load_run(cfg["run"])
        iv = run.intervention
        sae = iv.sae if iv.sae is not None else _config_sae(cfg, run.cfg["hook"])
        with torch.no_grad():
            vector = iv.folded()
        if vector is not None and float(vector.norm()) == 0:
            raise ValueError(f"The run at {cfg['run']} adds a zero vector (|v| = 0): there is no direction to measure.")
        data = run.cfg.get("data") if isinstance(run.cfg.get("data"), str) else None
        label = f"learned: {run.cfg['method']}"
        return Target(
            label,
            run.cfg["hook"],
            run.cfg.get("model") or {"name": "smollm2"},
            sae,
            None if vector is None else vector.detach().float().cpu(),
            None if vector is not None else iv,
            data,
        )
    sae = load_sae(cfg.get("sae"))
    if sae is None:
        raise ValueError("direction=latent:<i> needs an SAE: set sae=<config> (e.g. sae=smollm2_l12).")
    i = int(_LATENT.match(str(cfg["direction"])).group(1))
    if not 0 <= i < sae.d_sae:
        raise ValueError(f"direction=latent:{i} is out of range: the SAE has {sae.d_sae} latents (0..{sae.d_sae - 1}).")
    hook = cfg.get("hook") or sae.hook
    if not hooks.same_residual(hook, sae.hook):
        raise ValueError(f"hook={hook} but the SAE reads {sae.hook}. Drop the hook override or pick an SAE for {hook}.")
    return Target(
        f"SAE latent {i} (decoder row)", hook, cfg["model"], sae, sae.W_dec[i].detach().float().cpu(), None, None
    )


def _config_sae(cfg: dict, hook: str) -> SAEBasis | None:
    """The configured SAE for the alive-rows family when a run has none (only if it reads the run's residual)."""
    sae = load_sae(cfg.get("sae"))
    return sae if sae is not None and hooks.same_residual(sae.hook, hook) else None


def random_directions(cfg: dict, acts: torch.Tensor, sae: SAEBasis | None) -> dict[str, torch.Tensor]:
    """Unit directions of each requested random family (alive rows only with an SAE), in FAMILIES order; each
    family draws from its own generator seeded from `seed` and its name, so adding or dropping a family leaves
    the others' directions unchanged."""
    n, dirs = cfg["n_random"], {}
    draw = {
        "isotropic": lambda g: isotropic(n, acts.shape[-1], 1.0, g),
        "covariance": lambda g: covariance_matched(acts, n, 1.0, g),
        "cov_mixture": lambda g: covariance_mixture(acts, n, 1.0, g),
        "real_mixture": lambda g: real_mixture(acts, n, 1.0, g),
        "alive_rows": lambda g: alive_rows(sae, alive_latents(sae, acts), n, 1.0, g)[0],
    }
    for k, name in enumerate(FAMILIES):
        if name not in cfg["families"]:
            continue
        if name == "alive_rows" and sae is None:
            print("[saebasis] plateau: no SAE at this hook, so no alive-decoder-rows family (set sae=... to add it).")
            continue
        dirs[name] = draw[name](torch.Generator().manual_seed(cfg["seed"] * len(FAMILIES) + k))
    return dirs


def plateau(cfg) -> dict:
    cfg = to_dict(cfg)
    check_cfg(cfg)
    target = resolve_target(cfg)
    started = time.time()
    device = cfg.get("device") or target.model.get("device", "cpu")
    loaded = load_model(target.model["name"], device, target.model.get("dtype", "float32"))
    model, tokenizer = loaded.model, loaded.tokenizer
    hooks.resolve(model, target.hook)  # the layer exists
    prompts = load_concept(cfg.get("data") or target.data or "sentiment").neutral
    neutral = neutral_prompts(
        model, tokenizer, target.hook, prompts[: max(cfg["n_prompts"], cfg["n_cov_prompts"])], cfg["max_len"]
    )
    sweep, acts = neutral[: cfg["n_prompts"]], token_acts(neutral[: cfg["n_cov_prompts"]])
    norm = median_norm(acts)
    dirs = random_directions(cfg, acts, target.sae)
    if target.vector is not None:
        learned, families = _constant(cfg, model, target, sweep, dirs, norm)
    else:
        learned, families = _method(cfg, model, target, sweep, dirs)
    learned["label"] = target.label
    th = cfg["threshold"]
    result = {
        "hook": target.hook,
        "run": cfg.get("run"),
        "direction": cfg.get("direction"),
        "threshold": th,
        "margin": cfg["margin"],
        "median_norm": norm,
        "n_prompts": len(sweep),
        "n_tokens": sum(len(p.ids) - 1 for p in sweep),
        "n_shared": [p.shared for p in sweep],
        "n_tokens_unshared": sum(len(p.ids) - max(p.shared, 1) for p in sweep),
        "n_cov_tokens": int(acts.shape[0]),
        "learned": learned,
        "families": {k: family_summary(v["sizes"], v["kl"], th, learned["edge"]["size"]) for k, v in families.items()},
        "families_unshared": {
            k: family_summary(v["sizes"], v["kl_unshared"], th, learned["edge_unshared"]["size"])
            for k, v in families.items()
        },
        "suggested_strength": learned["edge_strength"] * cfg["margin"],
        "suggested_strength_unshared": learned["edge_strength_unshared"] * cfg["margin"],
        "seconds": None,
    }
    result["seconds"] = round(time.time() - started, 1)
    paths = write(Path(cfg["out_dir"]), result)
    print((Path(paths["md"]).read_text()) + f"\n[saebasis] plateau in {result['seconds']} s -> {paths['png']}")
    return {**result, "paths": paths}


def _progress(total: int):
    return tqdm(total=total, desc="plateau", unit="batch")


def _constant(cfg: dict, model, target: Target, sweep, dirs: dict, norm: float) -> tuple[dict, dict]:
    """Learned v / |v| and every random direction in one sweep over the same sizes."""
    unit = norm if cfg["size_unit"] == "median_norm" else 1.0
    sizes = [s * unit for s in size_grid(cfg["size_min"], cfg["size_max"], cfg["size_factor"])]
    v_norm = float(target.vector.norm())
    names = list(dirs)
    all_dirs = torch.cat([target.vector[None] / v_norm, *dirs.values()])  # [1 + n_families * n_random, d_model]
    with _progress(n_batches(all_dirs.shape[0] * len(sizes), cfg["batch_size"], len(sweep))) as bar:
        kl = kl_sweep(model, target.hook, sweep, all_dirs, sizes, cfg["batch_size"], bar)  # each [n_dir, n_size]
    edge = plateau_edge(sizes, kl.all[0].tolist(), cfg["threshold"])
    edge_u = plateau_edge(sizes, kl.unshared[0].tolist(), cfg["threshold"])
    learned = {
        "sizes": sizes,
        "kl": kl.all[0].tolist(),
        "edge": edge_dict(edge),
        "vector_norm": v_norm,
        "edge_strength": edge.size / v_norm,
        "kl_unshared": kl.unshared[0].tolist(),
        "edge_unshared": edge_dict(edge_u),
        "edge_strength_unshared": edge_u.size / v_norm,
    }
    families, row = {}, 1
    for name in names:
        n = dirs[name].shape[0]
        families[name] = {
            "sizes": sizes,
            "kl": kl.all[row : row + n].tolist(),
            "kl_unshared": kl.unshared[row : row + n].tolist(),
        }
        row += n
    return learned, families


def _method(cfg: dict, model, target: Target, sweep, dirs: dict) -> tuple[dict, dict]:
    """Sweep the method's strength; the random families at the residual-change sizes it produced."""
    strengths = size_grid(cfg["strength_min"], cfg["strength_max"], cfg["size_factor"])
    n_random = sum(d.shape[0] for d in dirs.values())
    batch = min(cfg["batch_size"], target.intervention.max_batch or cfg["batch_size"])
    total = n_batches(len(strengths), batch, len(sweep)) + n_batches(
        n_random * len(strengths), cfg["batch_size"], len(sweep)
    )
    with _progress(total) as bar:
        curve = method_sweep(model, target.hook, sweep, target.intervention, strengths, cfg["batch_size"], bar)
        sizes = sorted({s for s in curve.delta_norm if s > 0})
        if len(sizes) < 2:
            raise ValueError(
                f"The method changes the residual by {curve.delta_norm} over strengths {strengths}: too few "
                f"distinct non-zero sizes to compare with random directions. Widen strength_min / strength_max."
            )
        kl = kl_sweep(model, target.hook, sweep, torch.cat(list(dirs.values())), sizes, cfg["batch_size"], bar)
    th = cfg["threshold"]
    learned = {
        "sizes": curve.delta_norm,
        "kl": curve.kl,
        "strengths": curve.strengths,
        "edge": edge_dict(plateau_edge(curve.delta_norm, curve.kl, th)),
        "vector_norm": None,
        "edge_strength": plateau_edge(curve.strengths, curve.kl, th).size,
        "kl_unshared": curve.kl_unshared,
        "edge_unshared": edge_dict(plateau_edge(curve.delta_norm, curve.kl_unshared, th)),
        "edge_strength_unshared": plateau_edge(curve.strengths, curve.kl_unshared, th).size,
    }
    families, row = {}, 0
    for name, d in dirs.items():
        n = d.shape[0]
        families[name] = {
            "sizes": sizes,
            "kl": kl.all[row : row + n].tolist(),
            "kl_unshared": kl.unshared[row : row + n].tolist(),
        }
        row += n
    return learned, families
