"""saebasis.interpret: ranking, norm-explained curves, the latent cache, contexts, logit lens, SVD/NMF,
and the HTML report (rendered in headless Chromium)."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from saebasis.config import compose
from saebasis.core import hooks
from saebasis.interpret.cache import LatentCache, latent_cache
from saebasis.interpret.contexts import max_contexts
from saebasis.interpret.explain import evidence, hot_span, snippet
from saebasis.interpret.factor import factorize, nmf, truncated_svd
from saebasis.interpret.lens import logit_lens, through_norm
from saebasis.interpret.rank import FALLBACK, norm_explained, rank_latents, residual_share
from saebasis.interpret.report import interpret
from saebasis.interpret.texts import FALLBACK as TEXTS_FALLBACK
from saebasis.interpret.texts import load_texts
from saebasis.interventions import build
from saebasis.interventions.base import Intervention
from saebasis.runs import save_run
from tests.conftest import D_MODEL

CHROMIUM = Path("/usr/bin/chromium")
TEXTS = [
    "i love this movie",
    "the weather was awful",
    "a great day and a good film",
    "i love this movie",
    "this is not very good",
]


class Folded(Intervention):
    """h' = h + s v with a hand-set v: no latent_scores(), so ranking must fall back to the folded vector."""

    def __init__(self, v, sae):
        super().__init__(self.Config(), v.numel(), sae)
        self.v = nn.Parameter(v.clone())

    def steer(self, h, s):
        return h + s * self.v

    def folded(self):
        return self.v


class Opaque(Folded):
    def folded(self):
        return None


def planted_bias(sae, latents=(3, 17, 40), values=(5.0, -4.0, 3.0)):
    iv = build("sae_bias", {}, D_MODEL, sae)
    with torch.no_grad():
        iv.b[list(latents)] = torch.tensor(values)
    return iv


# -- ranking ---------------------------------------------------------------------------------------
def test_ranking_returns_planted_latents(sae):
    ranking = rank_latents(planted_bias(sae), sae, 3)
    assert ranking.indices.tolist() == [3, 17, 40] and "latent_scores" in ranking.source
    assert ranking.scores.shape == (sae.d_sae,) and ranking.scores[17] == 4.0


def test_ranking_through_other_methods_latent_scores(sae):
    dm = build("diffmean", {}, D_MODEL, sae)
    dm.v.copy_(2.0 * sae.W_dec[9])
    assert rank_latents(dm, sae, 1).indices.tolist() == [9]
    adaptor = build("sae_adaptor", {"rank": 2}, D_MODEL, sae)
    with torch.no_grad():
        adaptor.B[:, 21] = torch.tensor([3.0, -1.0])  # only latent 21 is written
    assert rank_latents(adaptor, sae, 1).indices.tolist() == [21]


def test_ranking_falls_back_to_folded_cosine(sae):
    ranking = rank_latents(Folded(-2.5 * sae.W_dec[9], sae), sae, 2)
    assert ranking.source == FALLBACK and ranking.indices[0] == 9 and ranking.scores[9] == pytest.approx(1.0)
    cos = sae.W_dec @ sae.W_dec[9] / (sae.W_dec.norm(dim=-1) * sae.W_dec[9].norm())
    assert torch.allclose(ranking.scores, cos.abs(), atol=1e-6)


def test_ranking_without_scores_or_folded_vector_is_refused(sae):
    with pytest.raises(ValueError, match="neither latent_scores\\(\\) nor a folded\\(\\) residual vector"):
        rank_latents(Opaque(torch.ones(D_MODEL), sae), sae, 2)


# -- norm explained --------------------------------------------------------------------------------
def test_norm_explained_is_monotone_and_reaches_one_for_a_latent_bias(sae):
    iv = build("sae_bias", {}, D_MODEL, sae)
    with torch.no_grad():
        iv.b.normal_()
    curves = norm_explained(iv, sae, rank_latents(iv, sae, 5))
    for name in ("weight_share", "residual_share"):
        curve = torch.tensor(curves[name], dtype=torch.float64)
        assert len(curve) == sae.d_sae and (curve.diff() >= -1e-12).all(), name
        assert curve[-1] == pytest.approx(1.0, abs=1e-6), name
    assert curves["weight_share"][-1] == 1.0


def test_residual_share_is_the_least_squares_projection(sae):
    torch.manual_seed(1)
    v, order = torch.randn(D_MODEL), torch.randperm(sae.d_sae)
    curve = residual_share(v, sae.W_dec, order)
    for k in (1, 4, 11):
        rows = sae.W_dec[order[:k]].double().T  # [d_model, k]
        proj = rows @ torch.linalg.lstsq(rows, v.double()[:, None]).solution
        assert float(curve[k - 1]) == pytest.approx(float(proj.pow(2).sum() / v.double().pow(2).sum()), abs=1e-9)
    planted = planted_bias(sae)  # v = b W_dec on 3 latents: the top-3 span holds all of it
    three = norm_explained(planted, sae, rank_latents(planted, sae, 3))
    assert three["residual_share"][2] == pytest.approx(1.0, abs=1e-9) and three["weight_share"][2] == 1.0


# -- the latent cache ------------------------------------------------------------------------------
def test_latent_cache_round_trips_without_recomputing(model, tokenizer, sae, tmp_path, monkeypatch):
    calls = []
    real = hooks.run_to_hook
    monkeypatch.setattr(hooks, "run_to_hook", lambda *a, **k: calls.append(1) or real(*a, **k))
    first, hit1 = latent_cache(model, tokenizer, sae, TEXTS, batch_size=2, cache_dir=tmp_path)
    n_calls = len(calls)
    second, hit2 = latent_cache(model, tokenizer, sae, TEXTS, batch_size=2, cache_dir=tmp_path)
    assert (hit1, hit2) == (False, True) and n_calls == 3 and len(calls) == n_calls
    for name, tensor in first.tensors().items():
        assert torch.equal(tensor, second.tensors()[name]), name
    # the cached column equals a direct encode of each text on its own (first position skipped)
    for d, text in enumerate(TEXTS):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        z = sae.encode(real(model, sae.hook, input_ids=ids)[0])  # [pos, d_sae]
        z[0] = 0
        lo, hi = int(first.doc_ptr[d]), int(first.doc_ptr[d + 1])
        for latent in (0, 5, 63):
            assert torch.allclose(first.column(latent)[lo:hi], z[:, latent], atol=1e-5)
    assert first.density(5) == pytest.approx(float((first.column(5) > 0).sum() / first.valid.sum()))


def test_latent_cache_key_follows_settings_and_sae_weights(model, tokenizer, sae, tmp_path):
    latent_cache(model, tokenizer, sae, TEXTS, cache_dir=tmp_path)
    assert latent_cache(model, tokenizer, sae, TEXTS, skip_first=0, cache_dir=tmp_path)[1] is False
    with torch.no_grad():
        sae.sae.W_enc.mul_(1.5)  # the same SAE "source", retrained
    assert latent_cache(model, tokenizer, sae, TEXTS, cache_dir=tmp_path)[1] is False
    assert len(list(tmp_path.iterdir())) == 3


def test_top_k_per_token_cache_is_exact_when_k_covers_every_active_latent(model, tokenizer, sae, tmp_path):
    dense, _ = latent_cache(model, tokenizer, sae, TEXTS, cache_dir=tmp_path)
    full, _ = latent_cache(model, tokenizer, sae, TEXTS, max_per_token=sae.d_sae, cache_dir=tmp_path)
    small, _ = latent_cache(model, tokenizer, sae, TEXTS, max_per_token=2, cache_dir=tmp_path)
    assert full.exact and torch.allclose(full.column(7), dense.column(7), atol=1e-6)
    assert not small.exact and int(small.col_ptr[-1]) <= 2 * int(small.valid.sum())


# -- contexts, logit lens, factorisation ------------------------------------------------------------
def test_max_contexts_are_strongest_first_and_collapse_repeats(model, tokenizer, sae, tmp_path):
    cache, _ = latent_cache(model, tokenizer, sae, TEXTS, cache_dir=tmp_path)
    latent = int(torch.tensor([cache.column(i).max() for i in range(sae.d_sae)]).argmax())
    contexts = max_contexts(cache, tokenizer, latent, n=5)
    maxes = [c.max for c in contexts]
    assert maxes == sorted(maxes, reverse=True) and maxes[0] == pytest.approx(float(cache.column(latent).max()))
    for c in contexts:
        assert max(c.acts) == pytest.approx(c.max) and len(c.tokens) == len(c.acts) == len(c.skipped)
    texts = [" ".join(c.tokens) for c in contexts]
    assert len(texts) == len(set(texts))  # "i love this movie" twice in the corpus: shown once ...
    if any("love" in t for t in texts):
        assert next(c for c in contexts if "love" in " ".join(c.tokens)).count == 2  # ... counted twice
    assert "[[" in snippet(contexts[0]) and snippet(contexts[0]).count("[[") == snippet(contexts[0]).count("]]")
    assert hot_span(contexts[0]) in "".join(contexts[0].tokens) and evidence(contexts)


def test_logit_lens_applies_the_final_norm_weight(model, tokenizer, sae):
    with torch.no_grad():
        model.model.norm.weight.copy_(torch.linspace(-2, 3, D_MODEL))
    d = sae.W_dec[4]
    assert torch.allclose(through_norm(model, d), d * model.model.norm.weight)
    logits = model.get_output_embeddings().weight @ (d * model.model.norm.weight)
    lens = logit_lens(model, tokenizer, d, k=3)
    assert lens["promoted_logits"] == pytest.approx(logits.topk(3).values.tolist(), abs=1e-5)
    assert lens["suppressed_logits"] == pytest.approx((-(-logits).topk(3).values).tolist(), abs=1e-5)
    ln = nn.Module()
    ln.transformer, ln.config = nn.Module(), type("C", (), {"model_type": "gpt2"})()
    ln.transformer.ln_f = nn.LayerNorm(D_MODEL)
    assert through_norm(ln, d).sum() == pytest.approx(0.0, abs=1e-5)  # LayerNorm centres the direction


def test_svd_is_exact_at_full_rank_and_nmf_fits_a_nonnegative_low_rank_pattern():
    torch.manual_seed(0)
    x = torch.rand(20, 2) @ torch.rand(2, 6)  # rank-2, non-negative
    us, _, v = truncated_svd(x, 6)
    assert torch.allclose(us @ v.T, x, atol=1e-5)
    w, h = nmf(x, 2, iters=2000)
    assert (w >= 0).all() and (h >= 0).all() and float((w @ h - x).norm() / x.norm()) < 0.02
    fit = factorize(x, 2)
    assert fit["svd_energy"] == pytest.approx(1.0, abs=1e-5) and fit["nmf_rel_error"] < 0.05
    with pytest.raises(ValueError, match="non-negative"):
        nmf(-x, 2)


def test_torch_nmf_matches_sklearn_fit():
    sk = pytest.importorskip("sklearn.decomposition")
    torch.manual_seed(0)
    x = (torch.rand(40, 8) ** 3) * (torch.rand(40, 8) > 0.5)  # sparse non-negative, not low rank
    w, h = nmf(x, 3, iters=1000)
    ref = sk.NMF(3, init="nndsvda", max_iter=2000, random_state=0).fit(x.numpy())
    ours, theirs = float((x - w @ h).norm()), float(ref.reconstruction_err_)
    assert ours <= 1.1 * theirs


# -- corpus ---------------------------------------------------------------------------------------
def test_corpus_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("SAEBASIS_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr("saebasis.corpus.build.SHIPPED_DIR", tmp_path / "no-shards")
    texts, source = load_texts("auto", None)
    assert source == TEXTS_FALLBACK and len(texts) > 100 and any("coffee" in t for t in texts)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "one"}\n{"text": "two"}\n')
    assert load_texts(str(jsonl), 1) == (["one"], str(jsonl))
    assert load_texts(["a b", "c"], None)[0] == ["a b", "c"]
    with pytest.raises(FileNotFoundError, match="JSONL file with a 'text' field"):
        load_texts(str(tmp_path / "missing.jsonl"), None)
    jsonl.write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="'text' is missing"):
        load_texts(str(jsonl), None)


# -- the report ------------------------------------------------------------------------------------
def _save_runs(tmp_path, sae):
    sae.sae.save_model(tmp_path / "sae")
    stack = {
        "sae": {"path": str(tmp_path / "sae"), "hook": sae.hook},
        "hook": sae.hook,
        "model": {"name": "tiny-llama"},
    }
    save_run(tmp_path / "run", planted_bias(sae, (3, 17), (5.0, -4.0)), stack)
    vec = build("residual_vector", {}, D_MODEL, None)
    with torch.no_grad():
        vec.v.copy_(sae.W_dec[11])
    save_run(tmp_path / "vec", vec, {**stack, "sae": None})
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS * 3))
    return corpus


@pytest.fixture
def report(tmp_path, sae, monkeypatch):
    monkeypatch.setenv("SAEBASIS_CACHE", str(tmp_path / "cache"))
    corpus = _save_runs(tmp_path, sae)
    cfg = compose(
        "interpret",
        [
            f"run={tmp_path / 'run'}",
            f"corpus={corpus}",
            "explainer=tiny-llama",
            "explain_max_new_tokens=3",
            "top_k=4",
            "n_contexts=3",
        ],
    )
    return interpret(cfg), interpret(cfg)


def test_interpret_writes_report_and_reuses_cache(report):
    first, second = report
    assert first["cache_hit"] is False and second["cache_hit"] is True
    data = json.loads(Path(first["json"]).read_text())
    assert [l["latent"] for l in data["latents"]] == [3, 17]  # top_k=4, but the bias touches only two latents
    assert data["norm_explained"]["residual_share"][1] == pytest.approx(1.0, abs=1e-9)  # b lives on 2 latents
    assert data["corpus"]["n_docs"] == 15 and data["patterns"] is not None
    html = Path(first["html"]).read_text()
    assert html.count("<img") == 2 and "data:image/png;base64," in html and "<script" not in html
    assert "automatic explanation (tiny-llama, unreliable)" in html
    assert Path(second["json"]).read_text() == Path(first["json"]).read_text().replace(
        '"cache_hit": false', '"cache_hit": true'
    )


def test_interpret_reads_a_run_without_sae_through_read_sae(tmp_path, sae, monkeypatch):
    monkeypatch.setenv("SAEBASIS_CACHE", str(tmp_path / "cache"))
    corpus = _save_runs(tmp_path, sae)
    base = [f"run={tmp_path / 'vec'}", f"corpus={corpus}", "top_k=3"]
    with pytest.raises(ValueError, match="records no SAE.*read_sae="):
        interpret(compose("interpret", base))
    out = interpret(compose("interpret", [*base, f"read_sae={tmp_path / 'sae'}"]))
    data = json.loads(Path(out["json"]).read_text())
    assert data["latents"][0]["latent"] == 11 and data["pullback"]["write"][0]["code"][0][0] == 11
    assert "Pullback of the residual method" in Path(out["html"]).read_text()


def test_interpret_without_run_is_refused():
    with pytest.raises(ValueError, match="saebasis interpret run=<dir>"):
        interpret(compose("interpret", []))


# -- rendering in headless Chromium ----------------------------------------------------------------
def chromium_render(html_path: Path, work: Path) -> tuple[set, list[str]]:
    """(distinct RGB colours of a 1200x1600 screenshot, console messages) of one page."""
    from PIL import Image

    shot = work / f"{html_path.stem}.png"
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={work / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            html_path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), f"no screenshot; chromium said:\n{proc.stderr[-2000:]}"
    console = [line for line in proc.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]
    return set(Image.open(shot).convert("RGB").getdata()), console


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed: run scripts/install_chromium.sh")
def test_report_renders_in_headless_chromium_with_plots_visible(report, tmp_path):
    html_path = Path(report[0]["html"])
    colours, console = chromium_render(html_path, tmp_path)
    assert console == [], console
    bare = tmp_path / "no_plots.html"
    bare.write_text(re.sub(r'<img [^>]*src="data:image/png;base64,[^"]*">', "", html_path.read_text()))
    bare_colours, _ = chromium_render(bare, tmp_path)
    assert len(colours - bare_colours) > 1000, (len(colours), len(bare_colours))  # the plots' own colours are on screen
    # the console check can fail: a page that logs an error is caught
    broken = tmp_path / "broken.html"
    broken.write_text("<!doctype html><p>x</p><script>console.error('planted'); missing_function();</script>")
    assert any("planted" in line for line in chromium_render(broken, tmp_path)[1])


# -- the embedded model ----------------------------------------------------------------------------
@pytest.mark.slow
def test_interpret_on_the_embedded_model(tmp_path):
    from saebasis.core.models import load_model
    from saebasis.core.sae import SAEBasis

    sae = SAEBasis.load("builtin:smollm2-l12")
    loaded = load_model("smollm2")
    texts, _ = load_texts("auto", 16)
    cache, _ = latent_cache(loaded.model, loaded.tokenizer, sae, texts, cache_dir=tmp_path / "latents")
    busy = torch.tensor([cache.density(i) for i in range(sae.d_sae)]).topk(2).indices.tolist()  # latents that fire
    iv = build("sae_bias", {}, sae.d_model, sae)
    with torch.no_grad():
        iv.b[busy] = torch.tensor([4.0, 2.0])
    save_run(
        tmp_path / "run",
        iv,
        {"sae": {"path": "builtin:smollm2-l12", "hook": sae.hook}, "hook": sae.hook, "model": {"name": "smollm2"}},
    )
    cfg = compose(
        "interpret",
        [
            f"run={tmp_path / 'run'}",
            f"cache_dir={tmp_path / 'tables'}",
            "table_docs=16",
            "n_docs=8",
            "top_k=2",
            "n_contexts=3",
            "explainer=smollm2",
            "explain_max_new_tokens=12",
        ],
    )
    out = interpret(cfg)
    data = json.loads(Path(out["json"]).read_text())
    assert not out["cache_hit"] and [l["latent"] for l in data["latents"]] == busy
    assert data["explainer"] == "automatic explanation (SmolLM2-135M, unreliable)"
    assert all(
        l["explanation"].startswith("fires on: ") and isinstance(l["model_explanation"], str) and l["contexts"]
        for l in data["latents"]
    )
    assert "model.norm" in data["logit_lens_note"] and len(data["latents"][0]["logit_lens"]["promoted"]) == 8
    assert (
        data["coverage"]["of"] == 2 and interpret(cfg)["cache_hit"]
    )  # (boilerplate-heavy latents may have < 5 distinct contexts)
    assert all(0 <= l["effect"]["output_score"] <= 1 for l in data["latents"])  # scored for the shown latents only
    print({l["latent"]: (l["explanation"], l["model_explanation"]) for l in data["latents"]})


# -- the per-latent table ---------------------------------------------------------------------------
def test_latent_table_matches_the_cache_and_is_found_by_key(model, tokenizer, sae, tmp_path):
    from saebasis.core.sae import SAEBasis
    from saebasis.interpret.table import TableSettings, latent_table, save_table

    texts = TEXTS * 3
    ids = [f"d{i}" for i in range(len(texts))]
    s = TableSettings(n_contexts=5)
    table, where = latent_table(
        model, tokenizer, sae, texts, ids, "test", s, cache_dir=tmp_path / "tables", progress=False
    )
    cache, _ = latent_cache(model, tokenizer, sae, texts, cache_dir=tmp_path / "latents")
    assert where == "built" and table.info["doc_ids"] == ids
    for i in range(sae.d_sae):
        assert table.density(i) == pytest.approx(cache.density(i))
        ours, ref = table.contexts(i, tokenizer), max_contexts(cache, tokenizer, i, n=5)
        assert [(c.doc, c.peak, c.tokens, c.count) for c in ours] == [
            (c.doc, c.peak, c.tokens, c.count) for c in ref
        ], i
        assert all(a == pytest.approx(b, rel=1e-3, abs=1e-4) for c, r in zip(ours, ref) for a, b in zip(c.acts, r.acts))
    busy = int(torch.tensor([cache.density(i) for i in range(sae.d_sae)]).argmax())
    fired = (cache.column(busy) > 0).nonzero()[:, 0]
    words = [tokenizer.decode([t]) for t in cache.input_ids[fired].tolist()]
    stats = table.token_stats(busy, tokenizer)
    top_word, count, share = stats["fires_on"][0]
    assert stats["n_fire"] == len(words) and count == max(words.count(w) for w in words) == words.count(top_word)
    assert share == pytest.approx(count / len(words)) and len(stats["promotes"]) == s.k_lens
    assert (
        latent_table(model, tokenizer, sae, texts, ids, "test", s, cache_dir=tmp_path / "tables", progress=False)[1]
        == "cache"
    )
    sae.sae.save_model(tmp_path / "sae")  # an SAE folder carrying its table is read from there
    on_disk = SAEBasis.load(str(tmp_path / "sae"))
    save_table(tmp_path / "sae" / "latents", table)
    again, where = latent_table(
        model, tokenizer, on_disk, texts, ids, "test", s, cache_dir=tmp_path / "other", progress=False
    )
    assert where == "shipped" and all(
        torch.equal(again.t[k].nan_to_num(-7), table.t[k].nan_to_num(-7)) for k in table.t
    )
    assert (
        latent_table(
            model, tokenizer, on_disk, texts[:-1], ids[:-1], "test", s, cache_dir=tmp_path / "other", progress=False
        )[1]
        == "built"
    )


def test_token_explanation_exact_format():
    from saebasis.interpret.explain import token_explanation

    stats = {
        "n_fire": 100,
        "fires_on": [[" love", 41, 0.41], [" great", 12, 0.12], ["\n", 4, 0.04]],
        "before": [[" I", 30, 0.3], ["!", 5, 0.05]],
        "promotes": [[" wonderful", 3.2], [" amazing", 2.9], [" great", 2.5], [" x", 1.0]],
        "suppresses": [],
    }
    assert token_explanation(stats) == (
        'fires on: " love" 41% (41), " great" 12% (12) | after: " I" 30% (30), "!" 5% (5) '
        '| promotes: " wonderful", " amazing", " great"'
    )
    rare = {"fires_on": [["\n", 2, 0.02]], "before": [], "promotes": [], "suppresses": []}
    assert token_explanation(rare) == 'fires on: "\\n" 2% (2)'  # the first token is always shown
    dead = {"fires_on": [], "before": [], "promotes": [[" a", 1.0]], "suppresses": []}
    assert token_explanation(dead) == 'never fires on this corpus | promotes: " a"'
    lifted = {
        **stats,
        "fires_on_lift": [[" great", 12, 0.12, 30.4], [" love", 41, 0.41, 8.0], ["\n", 4, 0.04, 1.2]],
        "before_lift": [["!", 5, 0.05, 1.4]],
    }
    assert token_explanation(lifted) == (
        'fires on: " great" 30x (12), " love" 8x (41) | after: "!" 1x (5) '
        '| promotes: " wonderful", " amazing", " great"'
    )


def function_word_cache(tokenizer):
    """A hand-made activation cache: latent 0 fires on half of the 40 "the" (a function word, 20% of the corpus)
    and on all 10 "movie" (5%); raw shares lead with "the" (20 of 30 firings), lift with "movie"."""
    words = ["the"] * 40 + ["movie"] * 10 + ["was", "good", "day", "weather", "is", "film", "i", "a", "love", "it"] * 15
    words = [words[j] for j in torch.randperm(200, generator=torch.Generator().manual_seed(0)).tolist()]
    movies = [j for j, w in enumerate(words) if w == "movie"]
    ids = torch.tensor(tokenizer.convert_tokens_to_ids(words))
    the = [j for j, w in enumerate(words) if w == "the"]
    fire = sorted(the[::2] + movies)
    docs = torch.arange(0, 201, 20)
    return LatentCache(
        ids,
        docs,
        torch.ones(200, dtype=torch.bool),
        torch.tensor([0, len(fire), len(fire)]),
        torch.tensor(fire, dtype=torch.int32),
        torch.ones(len(fire)),
        True,
    ), words


def test_a_frequent_function_word_does_not_lead_the_explanation(model, tokenizer):
    from saebasis.interpret.explain import short_explanation, token_explanation
    from saebasis.interpret.table import LatentTable, TableSettings, build_table

    cache, words = function_word_cache(tokenizer)
    assert words.count("the") == 40 and words.count("movie") == 10 and len(words) == 200
    t = build_table(cache, model, torch.randn(2, D_MODEL), TableSettings(n_contexts=3), progress=False)
    stats = LatentTable(t, {}).token_stats(0, tokenizer)
    assert stats["fires_on"][0][:2] == ["the", 20]  # by raw share the function word leads
    assert [r[0] for r in stats["fires_on_lift"][:2]] == ["movie", "the"]
    assert stats["fires_on_lift"][0][3] == pytest.approx((10 / 30) / (10 / 200))
    assert stats["fires_on_lift"][1][3] == pytest.approx((20 / 30) / (40 / 200))
    assert token_explanation(stats).startswith('fires on: "movie" 7x (10), "the" 3x (20)')
    assert short_explanation(stats) == '"movie", "the"'


def test_lift_added_to_an_old_table_equals_the_built_one_when_top_tokens_cover_every_firing_token(
    model, tokenizer, sae, tmp_path
):
    from saebasis.interpret.table import TableSettings, add_lift, latent_table

    texts = TEXTS * 3
    s = TableSettings(n_contexts=5, k_tokens=40)  # more than the tiny vocabulary: top_ids hold every firing token
    table, _ = latent_table(
        model,
        tokenizer,
        sae,
        texts,
        [str(i) for i in range(len(texts))],
        "test",
        s,
        cache_dir=tmp_path,
        progress=False,
        effect=False,
    )
    built = {k: table.t.pop(k) for k in [k for k in table.t if "lift" in k]}
    add_lift(table, tokenizer, texts)
    for name, value in built.items():
        assert torch.allclose(table.t[name].float(), value.float(), rtol=1e-5), name


def test_effect_of_shown_latents_equals_the_whole_table_scores(model, tokenizer, sae, tmp_path):
    from saebasis.interpret.table import add_effect, effect_of, latent_table

    texts = TEXTS * 3
    table, _ = latent_table(
        model, tokenizer, sae, texts, [str(i) for i in range(len(texts))], "test", cache_dir=tmp_path, progress=False
    )
    assert "output_score" not in table.t  # built without effect scores by default
    shown = [5, 0, 33]
    computed = effect_of(table, model, tokenizer, sae, shown)
    add_effect(table, model, tokenizer, sae, progress=False)
    for i in shown:
        whole = table.effect(i)
        for name in ("output_score", "delta_conf"):
            assert computed[i][name] == pytest.approx(whole[name], rel=1e-4, abs=1e-6), (i, name)
        assert computed[i]["input_score"] == whole["input_score"]
    assert effect_of(table, model, tokenizer, sae, shown) == {
        i: table.effect(i) for i in shown
    }  # read from the table now


def test_context_marks_its_max_activating_token_escaped():
    from saebasis.interpret.render import context_html

    html = context_html(
        {
            "doc": 0,
            "max": 3.0,
            "count": 1,
            "tokens": ["<b>", " x", "<i>"],
            "acts": [9.0, 3.0, 1.0],
            "skipped": [True, False, False],
        }
    )
    assert html.count('class="peak"') == 1 and '<span class="peak" title="3.000"' in html and "&lt;b&gt;" in html
    assert "<b>" not in html and "<i>" not in html


# -- coverage and concept alignment ----------------------------------------------------------------
POSITIVE = [
    "i love this movie",
    "a great day and a good film",
    "i love the weather",
    "this is a great film",
    "good day",
]
NEGATIVE = [
    "the weather was awful",
    "i hate this bad movie",
    "the day was awful and bad",
    "a bad film",
    "it was not the day",
]


def plant_positive_latent(model, tokenizer, sae, latent: int = 7) -> None:
    """Latent `latent` reads a direction u that only the positive words carry: their embeddings get 5 u, and the
    encoder fires above 2.5 along u (attention and MLP outputs of this tiny model stay far below that)."""
    u = torch.nn.functional.normalize(torch.randn(D_MODEL, generator=torch.Generator().manual_seed(3)), dim=0)
    with torch.no_grad():
        for word in ("love", "great", "good"):
            model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(word)] += 5 * u
        sae.sae.W_enc[:, latent] = u
        sae.sae.b_enc[latent] = -2.5


def test_planted_positive_latent_aligns_with_the_sentiment_judge(model, tokenizer, sae, tmp_path, concept_dir):
    from saebasis.data import load_concept
    from saebasis.interpret.alignment import concept_alignment, coverage
    from saebasis.interpret.table import TableSettings, latent_table

    plant_positive_latent(model, tokenizer, sae)
    texts = (POSITIVE + NEGATIVE) * 2
    table, _ = latent_table(
        model,
        tokenizer,
        sae,
        texts,
        [str(i) for i in range(len(texts))],
        "t",
        TableSettings(before=3, after=1),
        cache_dir=tmp_path,
        progress=False,
    )
    fired_docs = table.t["ctx_doc"][int(table.t["ctx_ptr"][7]) : int(table.t["ctx_ptr"][8])].tolist()
    assert fired_docs and all(texts[d] in POSITIVE for d in fired_docs)  # the plant works: only positive documents
    concept = load_concept(str(concept_dir))
    al = concept_alignment(concept, table, tokenizer, [7], n_random=10, seed=0)
    assert al["diff"] > 0.2 and al["ci95"][0] > 0 and al["positive_share"]["top"] == 1.0
    assert al["positive_share"]["random"] < 1.0 and len(al["random"]) == 10 and "7" not in al["random"]
    assert concept_alignment(concept, table, tokenizer, [7], n_random=10, seed=0) == al  # fixed seed: reproducible
    cov = coverage(table, [7, 0], min_contexts=5)
    assert cov["of"] == 2 and cov["covered"] == sum(table.n_contexts(i) >= 5 for i in (7, 0))


# -- measured change, rank agreement, decoder norms ----------------------------------------------
def _measure(model, tokenizer, sae, iv, texts=TEXTS):
    from saebasis.interpret.cache import tokenize, valid_mask
    from saebasis.interpret.measure import measure

    docs = tokenize(tokenizer, texts, 128)
    return measure(model, sae, iv, docs, valid_mask(tokenizer, docs, 1, True), 0, 2), docs


def test_measured_change_is_the_mean_absolute_latent_change(model, tokenizer, sae):
    iv = planted_bias(sae)
    measured, docs = _measure(model, tokenizer, sae, iv)
    assert measured.basis == "intervention" and torch.allclose(
        measured.change, iv.b.abs()
    )  # exact: |s b| at every token
    assert measured.n_tokens == sum(len(d) - 1 for d in docs)  # the first token of each text left out
    vec = build("residual_vector", {}, D_MODEL, None)
    with torch.no_grad():
        vec.v.copy_(0.5 * sae.W_dec[11])
    measured, docs = _measure(model, tokenizer, sae, vec)
    h = [hooks.run_to_hook(model, sae.hook, input_ids=torch.tensor([d]))[0][1:] for d in docs]  # [T-1, d_model] each
    direct = torch.cat([(sae.encode(x + vec.v) - sae.encode(x)).abs() for x in h]).mean(0)
    assert measured.basis == "sae_encoding" and torch.allclose(measured.change, direct, atol=1e-5)
    assert int(measured.doc_peak[2].argmax()) == int(sae.encode(h[2]).max(0).values.argmax())


def test_rank_agreement_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    from saebasis.interpret.measure import agreement, kendall, spearman

    gen = torch.Generator().manual_seed(0)
    a, b = (
        torch.randint(0, 6, (30,), generator=gen).float(),
        torch.randint(0, 6, (30,), generator=gen).float(),
    )  # many ties
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-9)
    assert kendall(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-9)
    same = agreement(torch.arange(20.0), torch.arange(20.0) * 3, k=5)
    assert same["overlap"] == 5 and same["spearman"] == pytest.approx(1.0) and same["kendall"] == pytest.approx(1.0)
    flipped = agreement(torch.arange(20.0), 20 - torch.arange(20.0), k=5)
    assert flipped["overlap"] == 0 and flipped["spearman"] == pytest.approx(-1.0) and len(flipped["union"]) == 10


def test_scores_are_scaled_by_decoder_row_norms(model, tokenizer, sae):
    from saebasis.interpret.report import pullback, rankings

    with torch.no_grad():
        sae.sae.W_dec.div_(sae.sae.W_dec.norm(dim=-1, keepdim=True))  # unit rows ...
    iv = planted_bias(sae, (3, 17), (1.0, 2.0))
    cfg = {"rank_by": "change", "top_k": 2}
    ranking, info = rankings(cfg, _Run(iv), sae, _measure(model, tokenizer, sae, iv)[0])
    assert ranking.indices.tolist() == [17, 3] and info["top_weights"] == [17, 3]
    with torch.no_grad():
        sae.sae.W_dec[3] *= 10  # ... then one row 10x longer: b_3 = 1 moves the residual 10x further than before
    ranking, info = rankings(cfg, _Run(iv), sae, _measure(model, tokenizer, sae, iv)[0])
    assert ranking.indices.tolist() == [3, 17] and info["top_weights"] == [3, 17] and info["overlap"] == 2
    assert float(ranking.scores[3]) == pytest.approx(10.0, rel=1e-5) and float(
        info["_scores"]["weights"][17]
    ) == pytest.approx(2.0, rel=1e-5)
    vec = build("residual_vector", {}, D_MODEL, sae)
    with torch.no_grad():
        vec.v.copy_(sae.W_dec[3])  # one latent-unit of latent 3 (a residual step of norm 10)
    assert vec.latent_score_scale(sae) is None  # cosine-based write scores are read in the residual already
    _, coef, z = pullback(vec, sae)["write"][0]["code"][0]
    assert coef == pytest.approx(10.0, rel=1e-4) and z == pytest.approx(1.0, rel=1e-4)
    assert pullback(iv, sae) is None  # no pullback for a method working in the SAE basis


def test_residual_adaptor_read_side_states_the_dropped_error_term(sae):
    from saebasis.interpret.report import READ_SIDE_NOTE, pullback

    ad = build("residual_adaptor", {"rank": 2}, D_MODEL, sae)
    with torch.no_grad():
        ad.W_in.zero_()
        ad.W_in[:, 0] = 3 * sae.W_enc[:, 5]  # reads (mostly) along latent 5's encoder direction
    pb = pullback(ad, sae)
    strength = (sae.W_dec @ ad.W_in).detach().norm(dim=-1)
    assert pb["read"]["top"][0] == [int(strength.argmax()), pytest.approx(float(strength.max()))]
    assert "err(h) W_in" in pb["read"]["note"] and pb["read"]["note"] == READ_SIDE_NOTE


class _Run:
    def __init__(self, iv):
        self.intervention = iv


# -- activation patterns: SVD vs NMF vs identity ---------------------------------------------------
def test_svd_needs_few_components_on_a_low_rank_pattern():
    from saebasis.interpret.factor import compare_bases

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(60, 2, generator=gen) @ torch.rand(2, 10, generator=gen)  # rank 2, every latent in both parts
    b = compare_bases(x)
    assert b["svd"]["components_90"] == 1 and b["identity"]["components_90"] >= 7 and b["nmf"]["components_90"] <= 2
    assert (
        b["identity"]["concentration"] == 1.0 and b["svd"]["concentration"] < 0.6
    )  # SVD components spread over latents


def test_identity_is_as_good_as_svd_on_a_sparse_pattern():
    from saebasis.interpret.factor import compare_bases

    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(80, 8)
    x[torch.arange(80), torch.arange(80) % 8] = 0.5 + torch.rand(80, generator=gen)  # each context: one latent
    b = compare_bases(x)
    assert b["identity"]["components_90"] == b["svd"]["components_90"]
    assert b["nmf"]["concentration"] > 0.95 and b["svd"]["concentration"] > 0.95


def test_report_html_escapes_every_text():
    from saebasis.interpret.render import latent_card

    evil = "<script>alert(1)</script>"
    card = latent_card(
        {
            "latent": 1,
            "rank": 1,
            "change": 1.0,
            "weight": 1.0,
            "cos_folded": None,
            "density": 0.1,
            "n_contexts": 1,
            "neuronpedia": None,
            "explanation": evil,
            "model_explanation": evil,
            "explanation_words": [evil],
            "tokens": {"n_fire": 1, "fires_on": [[evil, 1, 1.0]], "before": [[evil, 1, 1.0]]},
            "logit_lens": {"promoted": [evil], "suppressed": [evil]},
            "contexts": [{"doc": 0, "max": 1.0, "tokens": [evil], "acts": [1.0], "skipped": [False], "count": 1}],
        },
        "model",
    )
    assert "<script" not in card and "&lt;script&gt;" in card


def test_the_chat_templates_shared_opening_is_not_encoded():
    """Every model-written document starts with the template's system block: those tokens are left out of the
    per-latent statistics (they would dominate them), other documents are untouched."""
    from saebasis.core.models import tiny_tokenizer
    from saebasis.corpus.acts import template_prefix
    from saebasis.interpret.cache import valid_mask

    tok = tiny_tokenizer()
    prefix = template_prefix(tok)
    chat = tok(
        tok.apply_chat_template([{"role": "user", "content": "hi there"}], tokenize=False), add_special_tokens=False
    )["input_ids"]
    plain = tok("hi there", add_special_tokens=False)["input_ids"]
    assert prefix and chat[: len(prefix)] == prefix and plain[: len(prefix)] != prefix
    mask = valid_mask(tok, [chat, plain], skip_first=1, skip_special=True)
    chat_mask, plain_mask = mask[: len(chat)], mask[len(chat) :]
    assert not chat_mask[: len(prefix)].any() and chat_mask[len(prefix) :].any()
    assert plain_mask.tolist() == [False] + [True] * (len(plain) - 1)  # only the first token (sink) skipped
    assert valid_mask(tok, [chat], 1, skip_special=False)[1 : len(prefix)].all()  # the setting turns it off


@pytest.mark.parametrize("name", ["smollm2-l6", "smollm2-l12", "smollm2-l18"])
def test_shipped_tables_hold_effect_scores_and_lift_for_every_latent(name):
    from saebasis.core.sae import ASSETS
    from saebasis.interpret.table import load_table

    table = load_table(ASSETS / "sae" / name / "latents")
    t, d = table.t, table.d_sae
    assert all(t[k].shape == (d,) for k in ("output_score", "input_score", "delta_conf"))
    assert bool(((t["output_score"] >= 0) & (t["output_score"] <= 1)).all()) and bool(t["delta_conf"].isfinite().all())
    assert bool(((t["delta_conf"] >= -1) & (t["delta_conf"] <= 1)).all())
    has_ctx = t["ctx_ptr"][1:] > t["ctx_ptr"][:-1]
    assert bool(t["input_score"][has_ctx].isfinite().all()) and bool(t["input_score"][~has_ctx].isnan().all())
    assert t["lift_ids"].shape == t["top_ids"].shape and table.info["effect"]["k"] == 20
    fired = t["n_fire"] > 0
    assert bool((t["lift_ids"][fired, 0] >= 0).all())  # every latent that fires has a token ranked by lift
