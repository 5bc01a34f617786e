"""The interpretation report as one self-contained HTML page: no scripts, no external files (plots inline
as base64 PNG), so it opens anywhere, offline, and renders identically in a headless browser."""

from __future__ import annotations

from html import escape

from saebasis.interpret import plots

STYLE = """body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}
img{max-width:100%;display:block;margin:1em 0}table{border-collapse:collapse}td,th{padding:.15em .6em;text-align:left}
.card{border:1px solid #ddd;border-radius:8px;padding:.6em 1em;margin:1em 0}.meta{color:#555}
.ctx{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;margin:.25em 0;padding:.25em .4em;background:#fafafa}
.skip{color:#aaa}.auto{color:#7a4b00}code{background:#f3f3f3;padding:0 .2em}.note{font-size:90%;color:#555}"""


def token_span(text: str, act: float, peak: float, skipped: bool) -> str:
    """One token, its background alpha = activation / the context's peak; hover shows the activation."""
    shown = escape(text.replace("\n", "⏎"))
    if skipped:
        return f'<span class="skip" title="not encoded (first position or special token)">{shown}</span>'
    alpha = min(1.0, max(0.0, act) / peak) if peak > 0 else 0.0
    return f'<span title="{act:.3f}" style="background:rgba(255,140,0,{alpha:.2f})">{shown}</span>'


def context_html(c: dict) -> str:
    spans = "".join(token_span(t, a, c["max"], s) for t, a, s in zip(c["tokens"], c["acts"], c["skipped"]))
    repeats = f", same text in {c['count']} documents" if c["count"] > 1 else ""
    return f'<div class="ctx">{spans} <small class="meta">(doc {c["doc"]}, max {c["max"]:.2f}{repeats})</small></div>'


def lens_html(lens: dict) -> str:
    def words(key: str) -> str:
        return " | ".join(escape(repr(w)[1:-1]) for w in lens[key])

    return f"<p>logit lens &mdash; promotes: <code>{words('promoted')}</code><br>suppresses: <code>{words('suppressed')}</code></p>"


def latent_card(l: dict, explainer: str | None) -> str:
    link = f' &middot; <a href="{escape(l["neuronpedia"])}">Neuronpedia</a>' if l["neuronpedia"] else ""
    cos = f' &middot; cos(W_dec[i], &Delta;h) {l["cos_folded"]:+.3f}' if l["cos_folded"] is not None else ""
    meta = f'<p class="meta">score {l["score"]:.4g}{cos} &middot; density {l["density"]:.4%} of corpus tokens{link}</p>'
    expl = ""
    if explainer and l["explanation"] is not None:
        seen = ", ".join(escape(w) for w in l["explanation_words"])
        expl = f'<p class="auto"><b>{escape(explainer)}:</b> {escape(l["explanation"])} <small>(from: {seen})</small></p>'
    ctx = "".join(context_html(c) for c in l["contexts"]) or "<p><i>never active on this corpus</i></p>"
    return f'<div class="card"><h3>#{l["rank"]} &middot; latent {l["latent"]}</h3>{meta}{lens_html(l["logit_lens"])}{expl}{ctx}</div>'


def patterns_html(p: dict | None) -> str:
    if p is None:
        return "<p><i>Fewer than two corpus documents activate the top latents: no pattern to factorise.</i></p>"
    items = []
    for part in p["component_examples"]:
        quotes = "".join(f"<li><code>{escape(e['text'])}</code></li>" for e in part["examples"])
        items.append(f"<li>NMF part {part['part'] + 1} (main latent {part['main_latent']}):<ul>{quotes}</ul></li>")
    scaled = "each latent scaled to max 1" if p["normalized"] else "raw activations"
    return (f'<img alt="activation patterns: SVD and NMF" src="{plots.patterns(p)}">'
            f'<p class="note">Rows: corpus documents where a top latent fires (peak activation per document, {scaled}). '
            f"SVD gives signed components (best rank-k fit), NMF additive parts (which latents fire together).</p><ul>{''.join(items)}</ul>")


def pullback_html(rows: list[dict] | None) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{r['direction']}</td><td>{r['norm']:.3g}</td><td>{', '.join(f'{i} ({c:+.2f})' for i, c in r['code'])}</td>"
        f"<td>{', '.join(f'{i} ({c:+.2f})' for i, c in r['cosine'])}</td></tr>" for r in rows
    )
    return ("<h2>Pullback of the written directions</h2><table><tr><th>direction</th><th>norm</th>"
            f"<th>matching-pursuit code (latent, coef)</th><th>cosine with W_dec (latent, cos)</th></tr>{body}</table>")


def render(data: dict) -> str:
    c = data["corpus"]
    cache = "loaded from cache" if c["cache_hit"] else "computed and cached"
    cards = "".join(latent_card(l, data["explainer"]) for l in data["latents"])
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>saebasis interpret: {escape(data['method'])}</title>
<style>{STYLE}</style></head><body>
<h1>Which latents did <code>{escape(data['method'])}</code> change?</h1>
<table class="meta"><tr><td>run</td><td><code>{escape(data['run'])}</code></td></tr>
<tr><td>model / SAE</td><td><code>{escape(data['model'])}</code> &middot; <code>{escape(data['sae'])}</code> at <code>{escape(data['hook'])}</code></td></tr>
<tr><td>ranking</td><td>{escape(data['ranking']['source'])}</td></tr>
<tr><td>corpus</td><td>{escape(c['source'])}: {c['n_docs']} documents, {c['n_tokens']} tokens ({c['n_encoded']} encoded; {cache})</td></tr>
<tr><td>logit lens</td><td>{escape(data['logit_lens_note'])}</td></tr></table>
<img alt="top latents and norm explained" src="{plots.overview(data)}">
<h2>Activation pattern of the top latents</h2>{patterns_html(data['patterns'])}
{pullback_html(data['pullback'])}
<h2>Top latents</h2>{cards}</body></html>"""
