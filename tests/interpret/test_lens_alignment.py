"""Alignment judged on logit-lens tokens: a planted case where the top latents promote concept words."""

from __future__ import annotations

import json

from saebasis.data import load_concept
from saebasis.interpret.alignment import board_lens_alignment, lens_alignment


def test_lens_alignment_finds_planted_concept_tokens():
    """Sentiment (VADER): top latents whose promoted tokens are positive words score above random latents whose
    tokens are function words (CI excludes 0); identical tokens in both groups give a difference of exactly 0."""
    concept = load_concept("sentiment")
    positive = [" wonderful", " great", " love", " happy"]
    neutral = [" the", " of", " and", " to"]
    lens = {i: positive for i in range(5)} | {i: neutral for i in range(5, 10)}
    out = lens_alignment(concept, lens, top=list(range(5)), rand=list(range(5, 10)))
    assert out["n_top"] == out["n_random"] == 5 and out["diff"] > 0.5 and out["ci95"][0] > 0
    assert out["texts"]["0"] == "wonderful great love happy"
    same = lens_alignment(concept, {i: neutral for i in range(10)}, top=list(range(5)), rand=list(range(5, 10)))
    assert same["diff"] == 0.0
    assert lens_alignment(concept, {}, top=[0], rand=[1])["diff"] is None  # no tokens: nothing to judge


def test_board_lens_alignment_reads_each_run_and_computes_the_lens(tmp_path, model, tokenizer, sae):
    """A board folder with two interpreted runs of one method: each is kept under its run name, the stored context
    alignment is carried over, and each latent's tokens are its logit lens (from the SAE's decoder row and the
    model's unembedding)."""
    from saebasis.interpret.lens import logit_lens

    alignment = {
        "top": {"3": 0.1, "7": 0.2},
        "random": {"11": 0.0, "12": 0.1},
        "seed": 0,
        "diff": 0.1,
        "ci95": [-0.1, 0.3],
    }
    for name in ("sae_adaptor_sparse", "sae_adaptor_lowrank"):  # two runs of one method: keyed by run name
        run = tmp_path / "concepts" / "sentiment" / "runs" / f"{name}-seed0" / "interpret"
        run.mkdir(parents=True)
        (run / "report.json").write_text(json.dumps({"method": "sae_adaptor", "alignment": alignment}))
    out = board_lens_alignment(tmp_path, model, tokenizer, sae)
    assert set(out["sentiment"]) == {"sae_adaptor_sparse", "sae_adaptor_lowrank"}
    cell = out["sentiment"]["sae_adaptor_sparse"]
    assert cell["contexts"] == {"diff": 0.1, "ci95": [-0.1, 0.3]}
    expected = " ".join(t.strip() for t in logit_lens(model, tokenizer, sae.W_dec[7], k=8)["promoted"])
    assert cell["lens"]["texts"]["7"] == expected and cell["lens"]["n_top"] == 2 and cell["lens"]["n_random"] == 2
    lens = {i: logit_lens(model, tokenizer, sae.W_dec[i], k=8)["promoted"] for i in (3, 7, 11, 12)}
    direct = lens_alignment(load_concept("sentiment"), lens, [3, 7], [11, 12])
    assert cell["lens"]["diff"] == direct["diff"] and cell["lens"]["ci95"] == direct["ci95"]
