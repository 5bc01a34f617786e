import json

import pytest
import torch

from saebasis.config import compose
from saebasis.eval.judges import fluency_from_ppl, sentiment_scores, similarity_scores
from saebasis.eval.metrics import bootstrap_ci, choose_strength, harmonic_mean, kl_to_base
from saebasis.interventions import build
from saebasis.runs import save_run


def test_harmonic_mean_exact():
    assert harmonic_mean(1.0, 1.0, 1.0) == 1.0
    assert harmonic_mean(0.5, 1.0, 1.0) == pytest.approx(3 / (2 + 1 + 1))
    assert harmonic_mean(0.9, 0.0, 0.8) == 0.0


def test_choose_strength_on_val_and_ties():
    assert choose_strength({0.5: 0.2, 1.0: 0.6, 2.0: 0.4}) == 1.0
    assert choose_strength({-1.0: 0.5, 1.0: 0.5, 0.5: 0.5}) == 0.5  # tie: the smallest |strength|
    with pytest.raises(ValueError, match="non-empty strength grid"):
        choose_strength({})


def test_bootstrap_ci_contains_mean():
    values = [0.1, 0.5, 0.9, 0.4, 0.6, 0.3]
    lo, hi = bootstrap_ci(values)
    assert lo <= sum(values) / len(values) <= hi
    assert bootstrap_ci([0.7] * 5) == (0.7, 0.7)


def test_judges_order_clear_cases():
    pos, neg = sentiment_scores(["What a wonderful, happy, lovely day!", "This is awful, horrible and sad."])
    assert pos > 0.5 and neg == 0.0
    on, off = similarity_scores(["The sea waves crash on the sandy beach.", "Tax forms are due in April."], ["the ocean"] * 2)
    assert on > off
    assert fluency_from_ppl(2.0) == 1.0 and fluency_from_ppl(1000.0) == 0.0 and fluency_from_ppl(float("inf")) == 0.0
    assert fluency_from_ppl(10.0) > fluency_from_ppl(100.0)


def test_kl_zero_at_zero_strength(model, tokenizer, sae):
    iv = build("sae_bias", {"strength": 0.0}, 32, sae)
    with torch.no_grad():
        iv.b.normal_()
    assert kl_to_base(model, tokenizer, sae.hook, iv, ["the movie", "a day"]) == 0.0
    iv.strength = 3.0
    assert kl_to_base(model, tokenizer, sae.hook, iv, ["the movie", "a day"]) > 0.0


def test_compare_end_to_end_on_tiny_model(concept_dir, tmp_path, sae):
    from saebasis.eval.compare import compare

    sae.sae.save_model(tmp_path / "sae")
    iv = build("sae_bias", {}, 32, sae)
    with torch.no_grad():
        iv.b.normal_()
    sae_spec = {"path": str(tmp_path / "sae"), "hook": sae.hook}
    save_run(tmp_path / "bias_run", iv, {"sae": sae_spec, "hook": sae.hook, "model": {"name": "tiny-llama"}})
    stack = [f"sae.path={tmp_path / 'sae'}", "sae.hook=blocks.1.hook_resid_post", "sae.check=false"]
    cfg = compose("compare", ["model=tiny", "logger=none", f"data={concept_dir}", f"out_dir={tmp_path / 'out'}", "n_val=2",
                              "n_test=2", "n_neutral=2", "max_new_tokens=4", "batch_size=2", *stack,
                              f"stack_overrides=['model=tiny','sae.path={tmp_path / 'sae'}','sae.hook=blocks.1.hook_resid_post','sae.check=false']",
                              f"+methods.bias={{kind: run, run_dir: {tmp_path / 'bias_run'}, strengths: [0.5, 1]}}",
                              "+methods.prompting={kind: prompt, prefix: 'Be happy. '}"])
    result = compare(cfg)
    out = tmp_path / "out"
    for name in ("results.csv", "results.md", "results.json", "score_vs_strength.png", "score_vs_fluency.png"):
        assert (out / name).exists(), name
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"unsteered", "diffmean", "bias", "prompting"}
    assert rows["unsteered"]["kl_neutral"] == 0.0 and rows["bias"]["strength"] in (0.5, 1.0)
    assert rows["diffmean"]["params"] == 32
    data = json.loads((out / "results.json").read_text())
    assert set(data["results"]["bias"]["val_curve"]) == {"0.5", "1.0"}


def test_builtin_concepts_load():
    from saebasis.data import load_concept

    for name, judge in [("sentiment", "vader"), ("ocean", "minilm"), ("cooking", "minilm"), ("sycophancy", "ab")]:
        concept = load_concept(name)
        assert concept.judge == judge and concept.pairs and concept.instructions["val"] and concept.instructions["test"]
    assert len(load_concept("sycophancy").ab) == 48


def test_ab_probability_is_a_probability_and_zero_strength_is_base(model, tokenizer, sae):
    from saebasis.data import ABItem
    from saebasis.eval.metrics import ab_matching_prob

    items = [ABItem("is the movie good?", "(A)", "(B)"), ABItem("is the day bad?", "(B)", "(A)")]
    base = ab_matching_prob(model, tokenizer, None, None, items)
    iv = build("sae_bias", {"strength": 0.0}, 32, sae)
    assert 0.0 <= base <= 1.0 and ab_matching_prob(model, tokenizer, sae.hook, iv, items) == base
