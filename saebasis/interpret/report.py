"""`saebasis interpret run=<dir>`: a self-contained HTML report (+ JSON) of the latents a run changed."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import torch

from saebasis.config import to_dict
from saebasis.corpus import corpus_path, corpus_texts, read_corpus
from saebasis.data import DATA_DIR, read_jsonl
from saebasis.interpret.explain import LABEL, explain
from saebasis.interpret.factor import nmf, pattern_matrix, truncated_svd
from saebasis.interpret.latents import latent_cache, logit_lens, max_contexts, norm_explained, rank_latents
from saebasis.models import load_model
from saebasis.runs import load_run


def corpus_for(cfg: dict) -> tuple[list[str], str]:
    """Texts to find max-activating contexts in: a JSONL path, the cached model-written corpus, or
    (fresh machine) the built-in concept datasets' texts."""
    if cfg["corpus"] not in (None, "auto"):
        return [r["text"] for r in read_jsonl(Path(cfg["corpus"]), ("text",))][: cfg["n_docs"]], cfg["corpus"]
    rows = read_corpus(corpus_path())
    if rows:
        return corpus_texts(rows)[: cfg["n_docs"]], str(corpus_path())
    texts = []
    for folder in sorted(DATA_DIR.iterdir()):
        if (folder / "pairs.jsonl").exists():
            texts += [f"{r['prompt']} {r['positive']}" for r in read_jsonl(folder / "pairs.jsonl", ("prompt", "positive"))]
            texts += [f"{r['prompt']} {r['negative']}" for r in read_jsonl(folder / "pairs.jsonl", ("prompt", "negative"))]
    return texts[: cfg["n_docs"]], "built-in concept datasets (no cached corpus)"


def interpret(cfg) -> dict:
    cfg = to_dict(cfg)
    if not cfg.get("run"):
        raise ValueError("Give the run folder: saebasis interpret run=<dir>.")
    run = load_run(cfg["run"])
    sae = run.intervention.sae
    if sae is None:
        raise ValueError(f"Run {cfg['run']} has no SAE recorded; interpretation reads latents through one. Fit it with sae=<...>.")
    loaded = load_model(run.cfg["model"]["name"], run.cfg["model"].get("device", "cpu"))
    top, scores = rank_latents(run.intervention, sae, cfg["top_k"])
    texts, source = corpus_for(cfg)
    cache, from_disk = latent_cache(loaded.model, loaded.tokenizer, sae, texts, run.cfg["model"]["name"], cfg["max_len"])
    latents = []
    for i in top.tolist():
        contexts = max_contexts(cache, i, cfg["n_contexts"])
        lens = logit_lens(loaded.model, loaded.tokenizer, sae, i)
        latents.append({
            "latent": i, "score": float(scores[i]), "density": cache.density(i), "logit_lens": lens, "contexts": contexts,
            "explanation": explain(loaded.model, loaded.tokenizer, contexts, lens) if cfg["explain"] and contexts else None,
            "neuronpedia": sae.neuronpedia_url(i),
        })
    pattern = pattern_matrix(cache, top.tolist())
    data = {
        "run": str(run.path), "method": run.cfg["method"], "sae": sae.source, "hook": sae.hook, "corpus": source,
        "corpus_docs": len(texts), "cache_hit": from_disk, "latents": latents, "norm_explained": norm_explained(scores)[: max(50, cfg["top_k"])],
        "pattern": pattern.tolist(),
    }
    out = Path(cfg.get("out_dir") or Path(cfg["run"]) / "interpret")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(data, indent=2))
    (out / "report.html").write_text(render(data, pattern, cfg["n_factors"]))
    print(f"[saebasis] interpretation report: {out / 'report.html'}")
    return {"html": str(out / "report.html"), "json": str(out / "report.json"), "cache_hit": from_disk}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def plots(data: dict, pattern: torch.Tensor, n_factors: int) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    names = [str(l["latent"]) for l in data["latents"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.4))
    a.bar(names, [l["score"] for l in data["latents"]], color="#4477aa")
    a.set(title="Top latents by intervention weight", xlabel="latent", ylabel="score")
    a.tick_params(axis="x", rotation=60)
    curve = data["norm_explained"]
    b.plot(range(1, len(curve) + 1), curve, marker=".", color="#cc6677")
    b.set(title="Share of the intervention's latent norm in its top-k latents", xlabel="k", ylabel="fraction", ylim=(0, 1.02))
    out["overview"] = _png(fig)
    plt.close(fig)
    if pattern.numel() and pattern.shape[0] > 1:
        k = min(n_factors, *pattern.shape)
        _, _, v = truncated_svd(pattern, k)
        _, h = nmf(pattern, k)
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.6 * k + 2.2))
        for ax, mat, title, cmap in ((a, v.T, "Truncated SVD: component loadings", "RdBu_r"), (b, h, "NMF: non-negative parts", "viridis")):
            im = ax.imshow(mat.numpy(), aspect="auto", cmap=cmap)
            ax.set(title=title, xlabel="latent", ylabel="component", xticks=range(len(names)), xticklabels=names)
            ax.tick_params(axis="x", rotation=60)
            fig.colorbar(im, ax=ax)
        out["factors"] = _png(fig)
        plt.close(fig)
    return out


def _context_html(c: dict, tokenizer_free_join=True) -> str:
    peak = max(c["acts"]) if c["acts"] else 1.0
    spans = []
    for tok, act in zip(c["tokens"], c["acts"]):
        text = html.escape(tok.replace("Ġ", " ").replace("Ċ", "⏎").replace("▁", " "))
        alpha = max(0.0, act) / peak if peak > 0 else 0
        spans.append(f'<span title="{act:.2f}" style="background:rgba(255,140,0,{alpha:.2f})">{text}</span>')
    return f'<div class="ctx">{"".join(spans)} <small>(max {c["max"]:.2f})</small></div>'


def render(data: dict, pattern: torch.Tensor, n_factors: int) -> str:
    figs = plots(data, pattern, n_factors)
    cards = []
    for l in data["latents"]:
        link = f' · <a href="{l["neuronpedia"]}">Neuronpedia</a>' if l["neuronpedia"] else ""
        expl = f'<p class="auto"><b>{LABEL}:</b> {html.escape(l["explanation"])}</p>' if l["explanation"] else ""
        lens = (f'<p>promotes: <code>{html.escape(" | ".join(l["logit_lens"]["promoted"]))}</code><br>'
                f'suppresses: <code>{html.escape(" | ".join(l["logit_lens"]["suppressed"]))}</code></p>')
        ctx = "".join(_context_html(c) for c in l["contexts"]) or "<p><i>never active on this corpus</i></p>"
        cards.append(f'<div class="card"><h3>latent {l["latent"]}</h3><p>score {l["score"]:.4g} · density {l["density"]:.4f}{link}</p>{lens}{expl}{ctx}</div>')
    imgs = "".join(f'<img alt="{k}" src="{v}">' for k, v in figs.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>saebasis: {html.escape(data['method'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222}} img{{max-width:100%;display:block;margin:1em 0}}
.card{{border:1px solid #ddd;border-radius:8px;padding:.6em 1em;margin:1em 0}} .ctx{{font-family:monospace;white-space:pre-wrap;margin:.3em 0;padding:.2em;background:#fafafa}}
.auto{{color:#7a4b00}} code{{background:#f3f3f3}}</style></head><body>
<h1>Which latents did <code>{html.escape(data['method'])}</code> change?</h1>
<p>run <code>{html.escape(data['run'])}</code> · SAE <code>{html.escape(data['sae'])}</code> at <code>{data['hook']}</code> ·
corpus: {html.escape(data['corpus'])} ({data['corpus_docs']} documents)</p>{imgs}<h2>Top latents</h2>{''.join(cards)}</body></html>"""
