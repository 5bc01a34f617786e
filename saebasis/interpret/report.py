"""`saebasis interpret run=<dir>`: which SAE latents a saved run changed, and what they mean.

Steps: load the run (and the SAE its cfg.json records, or `read_sae`) -> the per-latent table of the corpus
(shipped with the SAE, cached, or built once; table.py) -> one pass over the first `n_docs` documents: the
run's measured latent change and each document's peaks (measure.py) -> two rankings, by what the method did
(measured change) and by its weights (`latent_scores()`), both in residual units, and where they disagree ->
per top latent: contexts, token statistics, deterministic explanation (optionally a model-written one),
logit lens, density -> coverage and concept alignment (alignment.py) -> activation patterns: SVD, NMF and
the identity baseline (factor.py) -> residual methods: read and write side of the pullback ->
report.json + a self-contained report.html.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn.functional as F

from saebasis.config import to_dict
from saebasis.core import hooks
from saebasis.core.models import EMBEDDED_NAMES, load_model
from saebasis.core.sae import SAEBasis
from saebasis.interpret import explain as explainer
from saebasis.interpret.alignment import concept_alignment, coverage
from saebasis.interpret.cache import tokenize, valid_mask
from saebasis.interpret.factor import compare_bases, component_examples, factorize, pattern_matrix
from saebasis.interpret.lens import norm_note
from saebasis.interpret.measure import Measured, agreement, measure, residual_units
from saebasis.interpret.rank import Ranking, norm_explained, order_of, scores_of
from saebasis.interpret.render import render
from saebasis.interpret.table import LatentTable, TableSettings, effect_of, latent_table
from saebasis.interpret.texts import load_corpus, shown_path
from saebasis.runs import check_writable, load_run

READ_SIDE_NOTE = (
    "read side: the adaptor reads h W_in = z W_dec W_in + b_dec W_in + err(h) W_in; latents are ranked by "
    "||(W_dec W_in)[i]||, and the SAE-error term err(h) W_in is dropped (it is not attributable to any latent)."
)


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
        raise ValueError(
            f"The run steers {run.cfg['hook']} but the SAE reads {sae.hook}; pick an SAE at the run's hook."
        )
    model_cfg = run.cfg.get("model") or {}
    if not model_cfg.get("name"):
        raise ValueError(f"{run.path}/cfg.json has no model.name; it was not written by saebasis train / fit-baseline.")
    loaded = load_model(
        model_cfg["name"], cfg.get("device") or model_cfg.get("device", "cpu"), model_cfg.get("dtype", "float32")
    )
    sae.check_width(loaded.model.config.hidden_size)
    device = next(loaded.model.parameters()).device
    run.intervention.to(device)
    return run, sae.to(device), loaded


def table_settings(cfg: dict) -> TableSettings:
    """The table's settings from the interpret config (scripts/build_latent_tables.py uses the same)."""
    return TableSettings(
        cfg["max_len"],
        cfg["skip_first"],
        cfg["skip_special"],
        cfg["table_contexts"],
        cfg["context_before"],
        cfg["context_after"],
        cfg["table_tokens"],
        cfg["table_lens"],
    )


def rankings(cfg: dict, run, sae, measured: Measured) -> tuple[Ranking, dict]:
    """The ranking the report follows (cfg.rank_by) and both score vectors with their agreement."""
    weights, source = scores_of(run.intervention, sae)
    weights = residual_units(weights, run.intervention.latent_score_scale(sae))
    change = residual_units(measured.change, sae.W_dec.detach().norm(dim=-1))
    both = {"change": change, "weights": weights}
    primary = both[cfg["rank_by"]]
    k = min(cfg["top_k"], sae.d_sae)
    order = order_of(primary)[:k]
    order = (
        order[primary[order] > 0] if bool((primary[order] > 0).any()) else order
    )  # latents the method never touches are left out
    ranking = Ranking(
        order,
        primary,
        f"{cfg['rank_by']}: "
        + (
            f"measured mean |enc(h') - enc(h)| x ||W_dec[i]|| ({measured.basis})"
            if cfg["rank_by"] == "change"
            else f"{source} (residual units)"
        ),
    )
    agree = agreement(change, weights, k)
    info = {
        "by": cfg["rank_by"],
        "source": ranking.source,
        "top": ranking.indices.tolist(),
        "weights_source": source,
        "change_basis": measured.basis,
        "change_tokens": measured.n_tokens,
        "top_change": agree["top_a"],
        "top_weights": agree["top_b"],
        "overlap": agree["overlap"],
        "k": k,
        "union": agree["union"],
        "spearman": agree["spearman"],
        "kendall": agree["kendall"],
    }
    return ranking, {**info, "_scores": both}


def describe_latents(cfg: dict, run, sae, loaded, table: LatentTable, top: list[int], scores: dict) -> list[dict]:
    folded = run.intervention.folded()
    cos = F.cosine_similarity(sae.W_dec.float(), folded.detach().float()[None], dim=-1) if folded is not None else None
    explain_with = _explainer(cfg, loaded)
    tok = loaded.tokenizer
    effects = effect_of(table, loaded.model, tok, sae, list(top))  # from the table, or computed for these latents
    out = []
    for rank, i in enumerate(top, 1):
        contexts = table.contexts(i, tok, cfg["n_contexts"])
        stats = table.token_stats(i, tok)
        k = cfg["logit_k"]
        lens = {
            "promoted": [t for t, _ in stats["promotes"][:k]],
            "promoted_logits": [v for _, v in stats["promotes"][:k]],
            "suppressed": [t for t, _ in stats["suppresses"][:k]],
            "suppressed_logits": [v for _, v in stats["suppresses"][:k]],
        }
        text, words = (
            explainer.explain(*explain_with, contexts, cfg["explain_max_new_tokens"]) if explain_with else (None, [])
        )
        out.append(
            {
                "latent": i,
                "rank": rank,
                "score": float(scores[cfg["rank_by"]][i]),
                "change": float(scores["change"][i]),
                "weight": float(scores["weights"][i]),
                "cos_folded": None if cos is None else float(cos[i]),
                "density": table.density(i),
                "n_contexts": table.n_contexts(i),
                "tokens": stats,
                "explanation": explainer.token_explanation(stats),
                "short": explainer.short_explanation(stats),
                "effect": effects[i],
                "logit_lens": lens,
                "contexts": [c.to_json() for c in contexts],
                "model_explanation": text,
                "explanation_words": words,
                "neuronpedia": sae.neuronpedia_url(i),
            }
        )
    return out


def _explainer(cfg: dict, loaded):
    """(model, tokenizer) writing model explanations, or None (explainer=null); reuses the run's model when it is
    the explainer."""
    name = cfg.get("explainer")
    if not name:
        return None
    same = name == loaded.name or (name.lower() in EMBEDDED_NAMES and loaded.name.lower() in EMBEDDED_NAMES)
    other = loaded if same else load_model(name, next(loaded.model.parameters()).device.type)
    return other.model, other.tokenizer


def patterns(cfg: dict, measured: Measured, docs: list[list[int]], tokenizer, top: list[int]) -> dict | None:
    x, rows = pattern_matrix(measured.doc_peak, top, cfg["normalize_pattern"])
    if x.shape[0] < 2:
        return None  # fewer than two contexts: nothing to factorise
    result = {
        "latents": top,
        "docs": rows,
        "matrix": x.tolist(),
        "normalized": cfg["normalize_pattern"],
        **factorize(x, cfg["n_factors"]),
    }
    result["component_examples"] = component_examples(docs, measured.doc_peak_pos, tokenizer, result)
    result["bases"] = compare_bases(x)
    return result


def pullback(intervention, sae, k: int = 5) -> dict | None:
    """Residual methods: read side (top latents by ||(W_dec W_in)[i]||) and write side (each written direction's
    top latents by matching-pursuit code, in residual and in latent units, and by cosine)."""
    pb = intervention.pullback(sae)
    if pb is None:
        return None
    norms = sae.W_dec.detach().norm(dim=-1).cpu()
    rows = []
    for j in range(pb.directions.shape[0]):
        code, cos = pb.write_codes[j].detach().cpu(), pb.write_cosine[j].detach().cpu()
        rows.append(
            {
                "direction": j,
                "norm": float(pb.directions[j].norm()),
                "code": [
                    [int(i), float(code[i]), float(code[i] / norms[i].clamp_min(1e-12))]
                    for i in code.abs().topk(k).indices
                ],
                "cosine": [[int(i), float(cos[i])] for i in cos.abs().topk(k).indices],
            }
        )
    read = None
    if pb.read_weights is not None:
        strength = pb.read_weights.detach().float().norm(dim=-1).cpu()  # [d_sae]
        read = {"note": READ_SIDE_NOTE, "top": [[int(i), float(strength[i])] for i in order_of(strength)[: 2 * k]]}
    return {"write": rows, "read": read}


def _concept(cfg: dict, run):
    from saebasis.data import load_concept

    name = cfg.get("concept") or run.cfg.get("data")
    return load_concept(name) if name else None


def interpret(cfg) -> dict:
    """Write report.json and report.html for cfg.run; returns their paths and whether the table was reused."""
    cfg = to_dict(cfg)
    if cfg["rank_by"] not in ("change", "weights"):
        raise ValueError(f"rank_by must be change or weights, got {cfg['rank_by']!r}.")
    for key in ("n_docs", "top_k", "max_len", "batch_size"):  # counts: 0 or negative would fail deep inside (torch.cat)
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"interpret: {key} must be a positive integer, got {value!r}. Fix: e.g. {key}=64 (see "
                f"configs/interpret.yaml)."
            )
    if not cfg.get("run"):
        raise ValueError(
            "interpret needs a run: saebasis interpret run=<dir> (a folder written by `saebasis train` / "
            "`fit-baseline`)."
        )
    if not Path(cfg["run"]).is_dir():
        raise FileNotFoundError(
            f"interpret: run={cfg.get('run')} is not a run folder. Fix: run=<a folder written by "
            f"`saebasis train` / `fit-baseline`>."
        )
    out = Path(cfg.get("out_dir") or Path(cfg["run"]) / "interpret")
    check_writable(out, "out_dir")  # before loading the model or measuring anything
    run, sae, loaded = load_for_interpret(cfg)
    tok = loaded.tokenizer
    corpus = load_corpus(cfg["corpus"], cfg["table_docs"])
    settings = table_settings(cfg)
    table, where = latent_table(
        loaded.model,
        tok,
        sae,
        corpus.texts,
        corpus.ids,
        corpus.source,
        settings,
        cfg.get("cache_dir"),
        cfg["batch_size"],
    )
    docs = tokenize(tok, corpus.texts[: cfg["n_docs"]], settings.max_len)
    valid = valid_mask(tok, docs, settings.skip_first, settings.skip_special)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    measured = measure(loaded.model, sae, run.intervention, docs, valid, pad, cfg["batch_size"])
    ranking, rank_info = rankings(cfg, run, sae, measured)
    scores = rank_info.pop("_scores")
    top = ranking.indices.tolist()
    concept = _concept(cfg, run)
    data = {
        "run": shown_path(str(run.path)),
        "method": run.cfg["method"],
        "model": loaded.name,
        "sae": sae.source,
        "hook": sae.hook,
        "ranking": rank_info,
        "corpus": {
            "source": corpus.source,
            "n_docs": table.info["n_docs"],
            "n_tokens": table.info["n_tokens"],
            "n_encoded": table.info["n_encoded"],
            "cache_hit": where != "built",
            "shipped_table": where == "shipped",
            "measured_docs": len(docs),
            "skip_first": settings.skip_first,
            "skip_special": settings.skip_special,
        },
        "logit_lens_note": norm_note(loaded.model),
        "explainer": explainer.label(cfg["explainer"]) if cfg.get("explainer") else None,
        "latents": describe_latents(cfg, run, sae, loaded, table, top, scores),
        "coverage": coverage(table, top, cfg["coverage_min_contexts"]),
        "alignment": concept_alignment(
            concept, table, tok, top, cfg["n_random_latents"], cfg["seed"], cfg["n_bootstrap"]
        )
        if concept
        else None,
        "norm_explained": norm_explained(run.intervention, sae, ranking, cfg["curve_max_k"]),
        "patterns": patterns(cfg, measured, docs, tok, top),
        "pullback": pullback(run.intervention, sae),
    }
    (out / "report.json").write_text(json.dumps(data, indent=1))
    (out / "report.html").write_text(render(data))
    print(f"[saebasis] interpretation report: {out / 'report.html'} (+ report.json)")
    return {"html": str(out / "report.html"), "json": str(out / "report.json"), "cache_hit": where != "built"}
