"""`saebasis interpret run=<dir>`: which SAE latents a saved run changed, and what they mean.

Steps: load the run (and the SAE its cfg.json records, or `read_sae`) -> rank latents -> cached latent
activations over a corpus -> per top latent: max-activating contexts, logit lens, density, optional
automatic explanation, Neuronpedia link -> activation-pattern SVD / NMF -> norm-explained curves ->
report.json + a self-contained report.html (plots inline as base64 PNG).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from saebasis import hooks
from saebasis.config import to_dict
from saebasis.interpret import explain as explainer
from saebasis.interpret.cache import LatentCache, latent_cache
from saebasis.interpret.contexts import max_contexts
from saebasis.interpret.factor import component_examples, factorize, pattern_matrix
from saebasis.interpret.lens import logit_lens, norm_note
from saebasis.interpret.rank import norm_explained, rank_latents
from saebasis.interpret.render import render
from saebasis.interpret.texts import load_texts
from saebasis.models import EMBEDDED_NAMES, load_model
from saebasis.runs import load_run
from saebasis.sae import SAEBasis


def load_for_interpret(cfg: dict):
    """(run, sae, loaded model) for cfg.run; `read_sae` reads a run fitted without an SAE through one."""
    if not cfg.get("run"):
        raise ValueError("Give the run folder to interpret: saebasis interpret run=<dir>.")
    sae = SAEBasis.load(cfg["read_sae"]) if cfg.get("read_sae") else None
    run = load_run(cfg["run"], sae=sae)
    sae = run.intervention.sae
    if sae is None:
        raise ValueError(
            f"Run {cfg['run']} records no SAE, and interpretation reads latents through one. Add "
            f"read_sae=<SAE folder or builtin:NAME> (an SAE at the run's hook {run.cfg.get('hook')})."
        )
    if run.cfg.get("hook") and not hooks.same_residual(run.cfg["hook"], sae.hook):
        raise ValueError(f"The run steers {run.cfg['hook']} but the SAE reads {sae.hook}; pick an SAE at the run's hook.")
    model_cfg = run.cfg.get("model") or {}
    if not model_cfg.get("name"):
        raise ValueError(f"{run.path}/cfg.json has no model.name; it was not written by saebasis train / fit-baseline.")
    loaded = load_model(model_cfg["name"], cfg.get("device") or model_cfg.get("device", "cpu"), model_cfg.get("dtype", "float32"))
    sae.check_width(loaded.model.config.hidden_size)
    return run, sae.to(next(loaded.model.parameters()).device), loaded


def describe_latents(cfg: dict, run, sae, loaded, cache: LatentCache, top: list[int], scores: torch.Tensor) -> list[dict]:
    folded = run.intervention.folded()
    cos = F.cosine_similarity(sae.W_dec.float(), folded.detach().float()[None], dim=-1) if folded is not None else None
    explain_with = _explainer(cfg, loaded)
    out = []
    for rank, i in enumerate(top, 1):
        contexts = max_contexts(cache, loaded.tokenizer, i, cfg["n_contexts"], cfg["context_before"], cfg["context_after"])
        lens = logit_lens(loaded.model, loaded.tokenizer, sae.W_dec[i], cfg["logit_k"])
        text, words = explainer.explain(*explain_with, contexts, cfg["explain_max_new_tokens"]) if explain_with else (None, [])
        out.append({
            "latent": i, "rank": rank, "score": float(scores[i]), "cos_folded": None if cos is None else float(cos[i]),
            "density": cache.density(i), "logit_lens": lens, "contexts": [c.to_json() for c in contexts],
            "explanation": text, "explanation_words": words, "neuronpedia": sae.neuronpedia_url(i),
        })
    return out


def _explainer(cfg: dict, loaded):
    """(model, tokenizer) that writes explanations, or None when explain=false; reuses the run's model
    when it is the explainer model."""
    if not cfg["explain"]:
        return None
    name = cfg["explain_model"]
    same = name == loaded.name or (name.lower() in EMBEDDED_NAMES and loaded.name.lower() in EMBEDDED_NAMES)
    other = loaded if same else load_model(name, next(loaded.model.parameters()).device.type)
    return other.model, other.tokenizer


def patterns(cfg: dict, cache: LatentCache, tokenizer, top: list[int]) -> dict | None:
    x, docs = pattern_matrix(cache, top, cfg["normalize_pattern"])
    if x.shape[0] < 2:
        return None  # fewer than two contexts: nothing to factorise
    result = {"latents": top, "docs": docs, "matrix": x.tolist(), "normalized": cfg["normalize_pattern"], **factorize(x, cfg["n_factors"])}
    result["component_examples"] = component_examples(cache, tokenizer, result)
    return result


def pullback(intervention, sae, k: int = 5) -> list[dict] | None:
    """For residual methods: the top latents of each written direction (matching-pursuit code and cosine)."""
    if not hasattr(intervention, "pullback"):
        return None
    pb = intervention.pullback(sae)
    rows = []
    for j in range(pb.directions.shape[0]):
        code, cos = pb.write_codes[j].detach().cpu(), pb.write_cosine[j].detach().cpu()
        rows.append({
            "direction": j, "norm": float(pb.directions[j].norm()),
            "code": [[int(i), float(code[i])] for i in code.abs().topk(k).indices],
            "cosine": [[int(i), float(cos[i])] for i in cos.abs().topk(k).indices],
        })
    return rows


def interpret(cfg) -> dict:
    """Write report.json and report.html for cfg.run; returns their paths and whether the cache was hit."""
    cfg = to_dict(cfg)
    run, sae, loaded = load_for_interpret(cfg)
    ranking = rank_latents(run.intervention, sae, cfg["top_k"])
    texts, source = load_texts(cfg["corpus"], cfg["n_docs"])
    cache, hit = latent_cache(
        loaded.model, loaded.tokenizer, sae, texts, cfg["max_len"], cfg["skip_first"], cfg["skip_special"],
        cfg["batch_size"], cfg["max_per_token"], cfg.get("cache_dir"),
    )
    top = ranking.indices.tolist()
    data = {
        "run": str(run.path), "method": run.cfg["method"], "model": loaded.name, "sae": sae.source, "hook": sae.hook,
        "ranking": {"source": ranking.source, "top": top},
        "corpus": {"source": source, "n_docs": cache.n_docs, "n_tokens": cache.n_tokens, "n_encoded": int(cache.valid.sum()),
                   "cache_hit": hit, "exact": cache.exact, "skip_first": cfg["skip_first"], "skip_special": cfg["skip_special"]},
        "logit_lens_note": norm_note(loaded.model),
        "explainer": explainer.label(cfg["explain_model"]) if cfg["explain"] else None,
        "latents": describe_latents(cfg, run, sae, loaded, cache, top, ranking.scores),
        "norm_explained": norm_explained(run.intervention, sae, ranking, cfg["curve_max_k"]),
        "patterns": patterns(cfg, cache, loaded.tokenizer, top),
        "pullback": pullback(run.intervention, sae),
    }
    out = Path(cfg.get("out_dir") or Path(cfg["run"]) / "interpret")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(data, indent=1))
    (out / "report.html").write_text(render(data))
    print(f"[saebasis] interpretation report: {out / 'report.html'} (+ report.json)")
    return {"html": str(out / "report.html"), "json": str(out / "report.json"), "cache_hit": hit}
