"""The interpretation report as one self-contained HTML page: no scripts, no external files (plots inline
as base64 PNG), so it opens anywhere, offline, and renders identically in a headless browser."""

from __future__ import annotations

import json
from html import escape

from saebasis.interpret import plots
from saebasis.interpret.texts import shown_path

STYLE = """body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}
img{max-width:100%;display:block;margin:1em 0}table{border-collapse:collapse}td,th{padding:.15em .6em;text-align:left}
.card{border:1px solid #ddd;border-radius:8px;padding:.6em 1em;margin:1em 0}.meta{color:#555}
.ctx{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;margin:.25em 0;\
padding:.25em .4em;background:#fafafa}
.skip{color:#aaa}.auto{color:#7a4b00}code{background:#f3f3f3;padding:0 .2em}.note{font-size:90%;color:#555}
.peak{outline:2px solid #b30000;font-weight:bold}.effect{color:#555;font-size:90%}"""


def token_span(text: str, act: float, peak: float, skipped: bool, is_peak: bool = False) -> str:
    """One token, its background alpha = activation / the context's peak; hover shows the activation; the
    max-activating token is outlined and bold (class "peak")."""
    shown = escape(text.replace("\n", "⏎"))
    if skipped:
        return f'<span class="skip" title="not encoded (first position or special token)">{shown}</span>'
    alpha = min(1.0, max(0.0, act) / peak) if peak > 0 else 0.0
    mark = ' class="peak"' if is_peak else ""
    return f'<span{mark} title="{act:.3f}" style="background:rgba(255,140,0,{alpha:.2f})">{shown}</span>'


def peak_index(c: dict) -> int | None:
    """The context's max-activating encoded token (the first of equal maxima); None when nothing is active."""
    acts = [-1.0 if s else a for a, s in zip(c["acts"], c["skipped"])]
    return max(range(len(acts)), key=acts.__getitem__) if acts and max(acts) > 0 else None


def context_html(c: dict) -> str:
    top = peak_index(c)
    spans = "".join(
        token_span(t, a, c["max"], s, j == top) for j, (t, a, s) in enumerate(zip(c["tokens"], c["acts"], c["skipped"]))
    )
    repeats = f", same text in {c['count']} documents" if c["count"] > 1 else ""
    return f'<div class="ctx">{spans} <small class="meta">(doc {c["doc"]}, max {c["max"]:.2f}{repeats})</small></div>'


def lens_html(lens: dict) -> str:
    def words(key: str) -> str:
        return " | ".join(escape(repr(w)[1:-1]) for w in lens[key])

    return (
        f"<p>logit lens &mdash; promotes: <code>{words('promoted')}</code><br>"
        f"suppresses: <code>{words('suppressed')}</code></p>"
    )


def _fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def stats_html(t: dict) -> str:
    def counted(rows: list) -> str:
        return (
            ", ".join(
                f"<code>{escape(json.dumps(w, ensure_ascii=False))}</code> {share:.0%} ({n})"
                for w, n, share, *_ in rows[:5]
            )
            or "&mdash;"
        )

    def lifted(rows: list) -> str:
        return (
            ", ".join(
                f"<code>{escape(json.dumps(r[0], ensure_ascii=False))}</code> {r[3]:.1f}x ({r[1]})" for r in rows[:5]
            )
            or "&mdash;"
        )

    by_lift = ""
    if t.get("fires_on_lift"):
        by_lift = (
            f"by lift over the corpus rate: fires on {lifted(t['fires_on_lift'])}; "
            f"after {lifted(t.get('before_lift') or [])}<br>"
        )
    return (
        f'<p class="note">{by_lift}most frequent: fires on ({t["n_fire"]} tokens): {counted(t["fires_on"])}<br>'
        f"after: {counted(t['before'])}</p>"
    )


def effect_html(e: dict | None) -> str:
    """The latent's effect scores (latent_effect.py) beside its explanation; empty when the table has none."""
    if not e:
        return ""
    inp = "n/a" if e.get("input_score") is None else f"{e['input_score']:.2f}"
    return (
        f' <span class="effect" title="Arad et al. 2025 output / input score; change of next-token confidence when '
        f'amplified (Wang et al. 2025)">output score {e["output_score"]:.3f} &middot; input score {inp} &middot; '
        f"&Delta; confidence {e['delta_conf']:+.3f}</span>"
    )


def latent_card(l: dict, explainer: str | None) -> str:
    link = f' &middot; <a href="{escape(l["neuronpedia"])}">Neuronpedia</a>' if l["neuronpedia"] else ""
    cos = f" &middot; cos(W_dec[i], &Delta;h) {l['cos_folded']:+.3f}" if l["cos_folded"] is not None else ""
    meta = (
        f'<p class="meta">measured change {l["change"]:.4g} &middot; weight score {l["weight"]:.4g}{cos} &middot; '
        f"density {l['density']:.4%} of corpus tokens &middot; {l['n_contexts']} contexts{link}</p>"
    )
    expl = f"<p><b>{escape(l['explanation'])}</b>{effect_html(l.get('effect'))}</p>"
    if explainer and l["model_explanation"] is not None:
        seen = ", ".join(escape(w) for w in l["explanation_words"])
        expl += (
            f'<p class="auto"><b>{escape(explainer)}:</b> {escape(l["model_explanation"])} '
            f"<small>(from: {seen})</small></p>"
        )
    ctx = "".join(context_html(c) for c in l["contexts"]) or "<p><i>never active on this corpus</i></p>"
    return (
        f'<div class="card"><h3>#{l["rank"]} &middot; latent {l["latent"]}</h3>{meta}{expl}{stats_html(l["tokens"])}'
        f"{lens_html(l['logit_lens'])}{ctx}</div>"
    )


def ranking_html(r: dict) -> str:
    def names(ids: list) -> str:
        return ", ".join(str(i) for i in ids)

    return (
        f"<h2>Ranking: what the method did vs its weights</h2><table>"
        f"<tr><td>top {r['k']} by measured change ({escape(r['change_basis'])}, {r['change_tokens']} tokens)</td>"
        f"<td>{names(r['top_change'])}</td></tr>"
        f"<tr><td>top {r['k']} by weights ({escape(r['weights_source'])})</td><td>{names(r['top_weights'])}</td></tr>"
        f"<tr><td>agreement</td><td>overlap {r['overlap']}/{r['k']}; over the union of {len(r['union'])} latents: "
        f"Spearman {_fmt(r['spearman'])}, Kendall tau-b {_fmt(r['kendall'])}</td></tr></table>"
        '<p class="note">Both scores in residual units: latent-unit scores are multiplied by the decoder '
        "row norms ||W_dec[i]||.</p>"
    )


def evidence_html(cov: dict, al: dict | None) -> str:
    rows = (
        f"<tr><td>coverage</td><td>{cov['covered']} of the top {cov['of']} latents have &ge; "
        f"{cov['min_contexts']} max-activating contexts</td></tr>"
    )
    if al is None:
        rows += (
            "<tr><td>concept alignment</td><td><i>no concept: the run records no data "
            "(set concept=&lt;name&gt;)</i></td></tr>"
        )
    elif al["diff"] is None:
        rows += "<tr><td>concept alignment</td><td><i>not enough latents with contexts to compare</i></td></tr>"
    else:
        lo, hi = al["ci95"]
        rows += (
            f"<tr><td>concept alignment</td><td>judge <code>{escape(al['judge'])}</code> on contexts of concept "
            f"<code>{escape(al['concept'])}</code>: top {al['n_top']} latents {al['top_mean']:.3f} "
            f"vs {al['n_random']} random alive "
            f"latents {al['random_mean']:.3f}: difference <b>{al['diff']:+.3f}</b> "
            f"(bootstrap 95% CI {lo:+.3f} to {hi:+.3f})</td></tr>"
        )
        if al["positive_share"] is not None:
            ps = al["positive_share"]
            rows += (
                f"<tr><td>contexts lean positive</td><td>{ps['top']:.0%} of top latents "
                f"vs {ps['random']:.0%} of random ones "
                f"(mean VADER compound &gt; {ps['threshold']})</td></tr>"
            )
    return f"<h2>Evidence</h2><table>{rows}</table>"


def bases_html(b: dict) -> str:
    rows = "".join(
        f"<tr><td>{name}</td>"
        f"<td>{_fmt(b[name]['components_90'], 'd') if b[name]['components_90'] else 'not reached'}</td>"
        f"<td>{b[name]['concentration']:.2f}</td></tr>"
        for name in ("identity", "svd", "nmf")
    )
    return (
        f"<table><tr><th>basis</th><th>components for {b['target']:.0%} of ||X||&sup2;</th>"
        f"<th>concentration (share on top-{b['top']} latents)</th></tr>"
        f"{rows}</table>"
    )


def patterns_html(p: dict | None) -> str:
    if p is None:
        return "<p><i>Fewer than two corpus documents activate the top latents: no pattern to factorise.</i></p>"
    items = []
    for part in p["component_examples"]:
        quotes = "".join(f"<li><code>{escape(e['text'])}</code></li>" for e in part["examples"])
        items.append(f"<li>NMF part {part['part'] + 1} (main latent {part['main_latent']}):<ul>{quotes}</ul></li>")
    scaled = "each latent scaled to max 1" if p["normalized"] else "raw activations"
    return (
        f'<img alt="activation patterns: SVD and NMF" src="{plots.patterns(p)}">'
        f'<p class="note">Rows: corpus documents where a top latent fires (peak activation per document, {scaled}). '
        "SVD gives signed components (best rank-k fit), NMF additive parts "
        "(which latents fire together); the identity "
        f"baseline is the latents themselves.</p>{bases_html(p['bases'])}<ul>{''.join(items)}</ul>"
    )


def pullback_html(pb: dict | None) -> str:
    if not pb:
        return ""
    body = "".join(
        f"<tr><td>{r['direction']}</td><td>{r['norm']:.3g}</td>"
        f"<td>{', '.join(f'{i} ({c:+.2f}; z {z:+.2f})' for i, c, z in r['code'])}</td>"
        f"<td>{', '.join(f'{i} ({c:+.2f})' for i, c in r['cosine'])}</td></tr>"
        for r in pb["write"]
    )
    read = ""
    if pb["read"]:
        top = ", ".join(f"{i} ({v:.3g})" for i, v in pb["read"]["top"])
        read = (
            f"<h3>Read side</h3><p>top latents by ||(W_dec W_in)[i]||: {top}</p>"
            f'<p class="note">{escape(pb["read"]["note"])}</p>'
        )
    return (
        "<h2>Pullback of the residual method</h2><h3>Write side</h3><table><tr><th>direction</th><th>norm</th>"
        "<th>matching-pursuit code (latent, coef; z = coef / ||W_dec[i]||)</th>"
        f"<th>cosine with W_dec (latent, cos)</th></tr>{body}</table>{read}"
    )


def render(data: dict) -> str:
    c = data["corpus"]
    cache = (
        "shipped with the SAE"
        if c.get("shipped_table")
        else "loaded from cache"
        if c["cache_hit"]
        else "computed and cached"
    )
    cards = "".join(latent_card(l, data["explainer"]) for l in data["latents"])
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">\
<title>saebasis interpret: {escape(data["method"])}</title>
<style>{STYLE}</style></head><body>
<h1>Which latents did <code>{escape(data["method"])}</code> change?</h1>
<table class="meta"><tr><td>run</td><td><code>{escape(shown_path(data["run"]))}</code></td></tr>
<tr><td>model / SAE</td><td><code>{escape(data["model"])}</code> &middot; \
<code>{escape(data["sae"])}</code> at <code>{escape(data["hook"])}</code></td></tr>
<tr><td>ranking</td><td>{escape(data["ranking"]["source"])}</td></tr>
<tr><td>corpus</td><td>{escape(shown_path(c["source"]))}: {c["n_docs"]} documents, {c["n_tokens"]} tokens \
({c["n_encoded"]} encoded; table {cache}); change measured on the first {c["measured_docs"]}</td></tr>
<tr><td>logit lens</td><td>{escape(data["logit_lens_note"])}</td></tr></table>
<img alt="top latents and norm explained" src="{plots.overview(data)}">
{evidence_html(data["coverage"], data["alignment"])}
{ranking_html(data["ranking"])}
<h2>Activation pattern of the top latents</h2>{patterns_html(data["patterns"])}
{pullback_html(data["pullback"])}
<h2>Top latents</h2>{cards}</body></html>"""
