"""`saebasis fit-baseline`: DiffMean, PCA and SARA, fitted in closed form from a concept's pairs."""

from __future__ import annotations

import time

import torch

from saebasis.activations import collect, example_means
from saebasis.config import resolve_run_dir, to_dict
from saebasis.data import load_concept
from saebasis.interventions import build
from saebasis.runs import save_run
from saebasis.stack import load_stack
from saebasis.validate import validate


def fit_intervention(cfg: dict, stack, concept):
    """Build the configured baseline and fit it on the concept's pairs at the stack's hook."""
    icfg = dict(cfg["intervention"])
    method = icfg.pop("method")
    iv = build(method, icfg, stack.model.config.hidden_size, stack.sae)
    pairs = concept.pairs[: cfg.get("max_pairs") or None]
    prompts = [p.prompt for p in pairs]
    kw = dict(positions=iv.cfg.positions, batch_size=cfg["batch_size"], max_len=cfg["max_len"])
    pos = collect(stack.model, stack.tokenizer, stack.hook, prompts, [p.positive for p in pairs], desc="positives", **kw)
    neg = collect(stack.model, stack.tokenizer, stack.hook, prompts, [p.negative for p in pairs], desc="negatives", **kw)
    if method == "sara":
        neutral = collect(stack.model, stack.tokenizer, stack.hook, concept.neutral, positions="all",
                          batch_size=cfg["batch_size"], max_len=cfg["max_len"], desc="neutral")
        return iv.fit(pos, neg, [x[1:] for x in neutral if len(x) > 1])  # drop the attention-sink first token
    if not hasattr(iv, "fit"):
        raise ValueError(f"'{method}' is not a closed-form baseline; train it with `saebasis train intervention={method}`.")
    return iv.fit(example_means(pos), example_means(neg))


def run_cfg(cfg: dict, stack) -> dict:
    """What a run folder records so `generate` / `interpret` can rebuild the stack."""
    sae = cfg.get("sae") or {}
    return {
        "model": cfg["model"], "hook": stack.hook, "data": cfg.get("data"),
        "sae": {"path": sae["path"], "sae_id": sae.get("sae_id"), "hook": stack.sae.hook} if stack.sae else None,
        "config": cfg,
    }


def fit_baseline(cfg) -> dict:
    cfg = resolve_run_dir(to_dict(cfg))
    validate({**cfg, "method": cfg["intervention"]["method"]}, dataset_field="data")  # before any heavy work
    torch.manual_seed(cfg["seed"])
    concept = load_concept(cfg["data"])
    stack = load_stack(cfg)
    start = time.time()
    iv = fit_intervention(cfg, stack, concept)
    fit_time = time.time() - start
    metrics = {"fit_time_s": round(fit_time, 2), "n_pairs": len(concept.pairs[: cfg.get("max_pairs") or None])}
    path = save_run(cfg["run_dir"], iv, run_cfg(cfg, stack), metrics)
    print(f"[saebasis] fitted {iv.method} in {fit_time:.1f} s -> {path}")
    return {"run_dir": str(path), **metrics}
