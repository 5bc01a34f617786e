import json
import shutil
import subprocess

import pytest
import torch

from saebasis.config import compose
from saebasis.interpret.factor import nmf, truncated_svd
from saebasis.interpret.latents import latent_cache, norm_explained, rank_latents
from saebasis.interpret.report import interpret
from saebasis.interventions import build
from saebasis.runs import save_run
from tests.conftest import D_MODEL


def test_ranking_returns_planted_latents(sae):
    iv = build("sae_bias", {}, D_MODEL, sae)
    with torch.no_grad():
        iv.b[[3, 17, 40]] = torch.tensor([5.0, -4.0, 3.0])
    top, _ = rank_latents(iv, sae, 3)
    assert top.tolist() == [3, 17, 40]
    dm = build("diffmean", {}, D_MODEL, sae)
    dm.v.copy_(2.0 * sae.W_dec[9])
    assert rank_latents(dm, sae, 1)[0].tolist() == [9]


def test_norm_explained_is_monotone_and_reaches_one(sae):
    iv = build("sae_bias", {}, D_MODEL, sae)
    with torch.no_grad():
        iv.b.normal_()
    curve = norm_explained(iv.latent_scores())
    assert all(a <= b + 1e-7 for a, b in zip(curve, curve[1:]))
    assert len(curve) == sae.d_sae and abs(curve[-1] - 1.0) < 1e-6


def test_svd_and_nmf_reconstruct_nonnegative_pattern():
    torch.manual_seed(0)
    x = torch.rand(20, 2) @ torch.rand(2, 6)  # rank-2 non-negative
    us, s, v = truncated_svd(x, 2)
    assert torch.allclose(us @ v.T, x, atol=1e-4)
    w, h = nmf(x, 2, iters=2000)
    assert (w >= 0).all() and (h >= 0).all() and ((w @ h - x).norm() / x.norm()) < 0.05


def test_latent_cache_round_trips(model, tokenizer, sae, tmp_path):
    texts = ["i love this movie", "the weather was awful", "a great day and a good film"]
    first, hit1 = latent_cache(model, tokenizer, sae, texts, "tiny", cache_dir=tmp_path)
    second, hit2 = latent_cache(model, tokenizer, sae, texts, "tiny", cache_dir=tmp_path)
    assert (hit1, hit2) == (False, True)
    for name in ("token_idx", "latent_idx", "values"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    dense = sae.encode(torch.cat([__import__("saebasis").hooks.run_to_hook(model, sae.hook, input_ids=tokenizer(t, return_tensors="pt")["input_ids"])[0] for t in texts]))
    assert torch.allclose(first.column(5), dense[:, 5], atol=1e-6)


@pytest.fixture
def report(tmp_path, sae, concept_dir, monkeypatch):
    monkeypatch.setenv("SAEBASIS_CACHE", str(tmp_path / "cache"))
    sae.sae.save_model(tmp_path / "sae")
    iv = build("sae_bias", {}, D_MODEL, sae)
    with torch.no_grad():
        iv.b[[3, 17]] = torch.tensor([5.0, -4.0])
    save_run(tmp_path / "run", iv, {"sae": {"path": str(tmp_path / "sae"), "hook": sae.hook}, "hook": sae.hook, "model": {"name": "tiny-llama"}})
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in ["i love this movie", "the weather was awful", "a great day"]))
    cfg = compose("interpret", [f"run={tmp_path / 'run'}", f"corpus={corpus}", "explain=false", "top_k=4"])
    return interpret(cfg), interpret(cfg)


def test_interpret_writes_report_and_reuses_cache(report):
    first, second = report
    data = json.loads(open(first["json"]).read())
    assert [l["latent"] for l in data["latents"]][:2] == [3, 17]
    assert first["cache_hit"] is False and second["cache_hit"] is True
    assert "<img" in open(first["html"]).read()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (scripts/install_chromium.sh)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    html_path = report[0]["html"]
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--window-size=1200,1600", f"--screenshot={shot}", f"file://{html_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.exists(), proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr and "CONSOLE" not in proc.stderr
    from PIL import Image

    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # plots drawn: far more than a blank page's colours
