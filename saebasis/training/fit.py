"""`saebasis fit-baseline`: methods fitted in closed form (DiffMean, PCA, SARA, ...) from a concept's pairs."""

from __future__ import annotations

import time

import torch

from saebasis.config import resolve_run_dir, to_dict
from saebasis.core.activations import collect
from saebasis.core.stack import load_stack, stack_for
from saebasis.data import load_concept
from saebasis.interventions import build
from saebasis.interventions.base import FitData
from saebasis.runs import Run, check_finite, run_guard, save_run
from saebasis.validate import check_numbers, validate


def fit_data(cfg: dict, stack, concept, positions: str) -> FitData:
    """Activations at the stack's hook: positives / negatives at `positions`, neutral prompts without the sink."""
    pairs = concept.pairs[: cfg.get("max_pairs") or None]
    prompts = [p.prompt for p in pairs]
    kw = dict(batch_size=cfg["batch_size"], max_len=cfg["max_len"])
    pos = collect(
        stack.model,
        stack.tokenizer,
        stack.hook,
        prompts,
        [p.positive for p in pairs],
        positions=positions,
        desc="positives",
        **kw,
    )
    neg = collect(
        stack.model,
        stack.tokenizer,
        stack.hook,
        prompts,
        [p.negative for p in pairs],
        positions=positions,
        desc="negatives",
        **kw,
    )
    neutral = collect(stack.model, stack.tokenizer, stack.hook, concept.neutral, positions="all", desc="neutral", **kw)
    return FitData(pos, neg, [x[1:] for x in neutral if len(x) > 1])  # drop the attention-sink first token


def fit_intervention(cfg: dict, stack, concept):
    """Build the configured method and fit it on the concept's pairs at the stack's hook."""
    icfg = dict(cfg["intervention"])
    method = icfg.pop("method")
    iv = build(method, icfg, stack.model.config.hidden_size, stack.sae)
    if iv.kind != "fitted":
        raise ValueError(
            f"'{method}' is not a closed-form baseline; train it with `saebasis train intervention={method}`."
        )
    iv.prepare(
        stack, concept, cfg["max_len"]
    )  # nothing by default; a peer that reads activations itself keeps the model
    return iv.fit(fit_data(cfg, stack, concept, iv.fit_positions))


def run_cfg(cfg: dict, stack) -> dict:
    """What a run folder records so `generate` / `interpret` can rebuild the stack."""
    sae = cfg.get("sae") or {}
    path = sae.get("path") or (stack.sae.source or None if stack.sae else None)  # an SAE built in memory records none
    return {
        "model": cfg["model"],
        "hook": stack.hook,
        "data": cfg.get("data"),
        "sae": {"path": path, "sae_id": sae.get("sae_id"), "hook": stack.sae.hook} if stack.sae else None,
        "config": cfg,
    }


def fit_baseline(cfg, stack=None, concept=None) -> dict:
    cfg = resolve_run_dir(to_dict(cfg))
    validate({**cfg, "method": cfg["intervention"]["method"]}, dataset_field=None if concept is not None else "data")
    check_numbers(cfg, ("batch_size", "max_len"))
    with run_guard(cfg["run_dir"], overwrite=bool(cfg.get("overwrite"))):
        torch.manual_seed(cfg["seed"])
        concept = concept if concept is not None else load_concept(cfg["data"])
        stack = stack_for(stack, cfg) if stack is not None else load_stack(cfg)
        start = time.time()
        iv = fit_intervention(cfg, stack, concept)
        fit_time = time.time() - start
        check_finite(iv)
        metrics = {
            "fit_time_s": round(fit_time, 2),
            "n_pairs": len(concept.pairs[: cfg.get("max_pairs") or None]),
            **iv.describe(),
        }
        path = save_run(cfg["run_dir"], iv, run_cfg(cfg, stack), metrics)
    print(f"[saebasis] fitted {iv.method} in {fit_time:.1f} s -> {path}")
    return {
        "run_dir": str(path),
        **metrics,
        "run": Run(iv, {**run_cfg(cfg, stack), "method": iv.method}, metrics, path),
    }
