import math

import pytest
import torch

from saebasis.data import ABItem
from saebasis.eval.metrics import ab_matching_prob, harmonic_mean, kl_to_base, latent_l0
from saebasis.eval.protocol import (
    bootstrap_ci,
    choose_strength,
    hierarchical_bootstrap_ci,
    report,
    search_strength,
    select_strength,
)
from saebasis.interventions import build
from saebasis.judges import fluency_from_ppl, sentiment_scores, similarity_scores
from saebasis.runs import save_run

HOOK = "blocks.1.hook_resid_post"


# -- protocol and metrics: exact on small fixtures ---------------------------------------------
def test_harmonic_mean_exact():
    assert harmonic_mean(1.0, 1.0, 1.0) == 1.0
    assert harmonic_mean(0.5, 1.0, 1.0) == pytest.approx(3 / (2 + 1 + 1))
    assert harmonic_mean(0.9, 0.0, 0.8) == 0.0


def test_choose_strength_on_val_and_ties():
    assert choose_strength({0.5: 0.2, 1.0: 0.6, 2.0: 0.4}) == 1.0
    assert choose_strength({-1.0: 0.5, 1.0: 0.5, 0.5: 0.5}) == 0.5  # tie: the smallest |strength|
    with pytest.raises(ValueError, match="non-empty strength grid"):
        choose_strength({})


def test_select_strength_averages_seeds_then_chooses():
    # seed 0 prefers 1.0, seed 1 prefers 2.0; means over seeds: 1.0 -> 0.5, 2.0 -> 0.55
    val = {0: {1.0: [0.8, 0.6], 2.0: [0.3, 0.5]}, 1: {1.0: [0.3, 0.3], 2.0: [0.7, 0.7]}}
    chosen = select_strength(val)
    assert chosen.strength == 2.0 and chosen.curve == pytest.approx({1.0: 0.5, 2.0: 0.55})
    with pytest.raises(ValueError, match="sweep every seed alike"):
        select_strength({0: {1.0: [0.1]}, 1: {2.0: [0.2]}})


def _counted(curve):
    """score_at over a synthetic curve, recording the strengths evaluated in order."""
    calls = []

    def score_at(s):
        calls.append(s)
        return curve(s)

    return score_at, calls


def test_search_strength_extends_until_the_optimum_is_interior():
    peak16 = lambda s: -abs(math.log2(s) - 4)
    score_at, calls = _counted(peak16)
    chosen = search_strength(score_at, [0.5, 1, 2])
    assert chosen.strength == 16.0 and not chosen.on_edge
    assert calls == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0] and list(chosen.curve) == calls  # 32 shows 16 is interior
    score_at, calls = _counted(peak16)
    assert search_strength(score_at, [8, 16, 32]) == (16.0, {8.0: -1.0, 16.0: 0.0, 32.0: -1.0}, False) and calls == [
        8,
        16,
        32,
    ]
    score_at, calls = _counted(lambda s: -abs(math.log2(s) + 3))  # peak at 1/8: extended downward
    assert search_strength(score_at, [0.5, 1]) == (
        0.125,
        {0.0625: -1.0, 0.125: 0.0, 0.25: -1.0, 0.5: -2.0, 1.0: -3.0},
        False,
    )


def test_search_strength_flags_an_optimum_the_cap_keeps_on_an_edge():
    score_at, calls = _counted(lambda s: s)  # keeps increasing
    chosen = search_strength(score_at, [0.5, 1, 2], max_steps=10, cap=64)  # the absolute cap
    assert chosen.strength == 64.0 and chosen.on_edge and calls == [0.5, 1, 2, 4, 8, 16, 32, 64]
    chosen = search_strength(_counted(lambda s: s)[0], [1, 2], max_steps=2)  # the step cap: 2 steps per side
    assert chosen.strength == 8.0 and chosen.on_edge
    chosen = search_strength(_counted(lambda s: -s)[0], [0.5, 1], min_strength=0.1)  # smaller is better, floor at 0.1
    assert chosen.strength == 0.125 and chosen.on_edge
    score_at, calls = _counted(lambda s: -s)  # 0 (no steering) is a natural end, not a cap: not flagged
    assert search_strength(score_at, [0, 1, 2]) == (0.0, {0.0: 0.0, 1.0: -1.0, 2.0: -2.0}, False) and calls == [0, 1, 2]


def test_search_strength_averages_seeds_and_breaks_ties_gently():
    # seed 0 prefers 1, seed 1 prefers 2 more strongly: mean over seeds 1 -> 0.5, 2 -> 0.55, 4 -> 0.2 (interior)
    per_seed = {1.0: {0: [0.8, 0.6], 1: [0.3, 0.3]}, 2.0: {0: [0.3, 0.5], 1: [0.7, 0.7]}, 4.0: {0: [0.2], 1: [0.2]}}
    chosen = search_strength(per_seed.__getitem__, [1, 2, 4])
    assert (
        chosen.strength == 2.0 and chosen.curve == pytest.approx({1.0: 0.5, 2.0: 0.55, 4.0: 0.2}) and not chosen.on_edge
    )
    plateau = {0.5: 0.4, 1.0: 0.4, 2.0: 0.4, 4.0: 0.3}  # tie between 1 and 2 -> the smaller |strength|; the plateau
    assert search_strength(plateau.__getitem__, [1, 2, 4]) == (
        1.0,
        {1.0: 0.4, 2.0: 0.4, 4.0: 0.3},
        False,
    )  # reaches inside: not extended
    flat = {0.5: 0.3, 1.0: 0.4, 2.0: 0.4, 4.0: 0.3}
    with pytest.raises(ValueError, match="non-empty strength grid"):
        search_strength(flat.__getitem__, [])


def test_bootstrap_ci_contains_mean_and_seeds_widen_it():
    values = [0.1, 0.5, 0.9, 0.4, 0.6, 0.3]
    lo, hi = bootstrap_ci(values)
    assert lo <= sum(values) / len(values) <= hi
    assert bootstrap_ci([0.7] * 5) == pytest.approx((0.7, 0.7))
    same = [[0.4, 0.6, 0.5, 0.5]] * 2  # identical seeds: nothing to add
    apart = [[0.1, 0.3, 0.2, 0.2], [0.7, 0.9, 0.8, 0.8]]  # same spread within, seeds far apart
    lo_s, hi_s = hierarchical_bootstrap_ci(same)
    lo_a, hi_a = hierarchical_bootstrap_ci(apart)
    assert lo_a <= 0.5 <= hi_a and (hi_a - lo_a) > 2 * (hi_s - lo_s)
    rep = report({0: apart[0], 1: apart[1]})
    assert rep.mean == pytest.approx(0.5) and rep.n_seeds == 2 and rep.n_examples == 4
    with pytest.raises(ValueError, match="test split is empty"):
        report({0: []})


# -- judges -------------------------------------------------------------------------------------
def test_judges_order_clear_cases():
    pos, neg = sentiment_scores(["What a wonderful, happy, lovely day!", "This is awful, horrible and sad."])
    assert pos > 0.5 and neg == 0.0
    on, off = similarity_scores(
        ["The sea waves crash on the sandy beach.", "Tax forms are due in April."], ["the ocean"] * 2
    )
    assert on > off
    assert fluency_from_ppl(2.0) == 1.0 and fluency_from_ppl(1000.0) == 0.0 and fluency_from_ppl(float("inf")) == 0.0
    assert fluency_from_ppl(10.0) > fluency_from_ppl(100.0)
    assert fluency_from_ppl(math.sqrt(2.0 * 1000.0)) == pytest.approx(0.5)  # log-linear: the geometric midpoint is 0.5


@pytest.mark.slow
def test_fluency_prefers_fluent_text_under_the_embedded_model():
    from saebasis.core.models import load_model
    from saebasis.judges import fluency_scores

    loaded = load_model("smollm2")
    fluent = "The weather was warm, so we walked to the park and had lunch under a tree."
    shuffled = "tree lunch warm park the had, walked so we under and a to weather was The the."
    prompts = ["Tell me about your afternoon."] * 3
    good, bad, empty = fluency_scores(loaded.model, loaded.tokenizer, prompts, [fluent, shuffled, ""])
    assert good > 0.5 and bad < 0.2 and empty == 0.0  # measured: 0.63 (ppl 20) vs 0.0 (ppl ~6000)


# -- intervention metrics -----------------------------------------------------------------------
def test_kl_zero_at_zero_strength(model, tokenizer, sae):
    iv = build("sae_bias", {}, 32, sae)
    with torch.no_grad():
        iv.b.normal_()
    assert kl_to_base(model, tokenizer, sae.hook, iv, ["the movie", "a day"], strength=0.0) == 0.0
    assert kl_to_base(model, tokenizer, sae.hook, iv, ["the movie", "a day"], strength=3.0) > 0.0


def test_latent_l0_counts_the_latents_each_method_changes(model, tokenizer, sae):
    neutral = ["the movie was long", "a day in town"]
    bias = build("sae_bias", {}, 32, sae)
    with torch.no_grad():
        bias.b[[1, 5, 7]] = torch.tensor([0.5, -1.0, 2.0])
    assert latent_l0(model, tokenizer, sae, HOOK, bias, neutral) == (3.0, "intervention")
    adaptor = build("sae_adaptor", {}, 32, sae)  # identity at init: B = 0
    assert latent_l0(model, tokenizer, sae, HOOK, adaptor, neutral) == (0.0, "intervention")
    vec = build("residual_vector", {}, 32, sae)
    with torch.no_grad():
        vec.v.normal_()
    l0, basis = latent_l0(model, tokenizer, sae, HOOK, vec, neutral)
    assert basis == "sae_encoding" and 0 < l0 <= sae.d_sae
    assert latent_l0(model, tokenizer, sae, HOOK, bias, neutral, strength=0.0) == (0.0, "none")
    assert math.isnan(latent_l0(model, tokenizer, sae, "blocks.0.hook_resid_post", vec, neutral)[0])


def test_ab_probability_is_a_probability_and_zero_strength_is_base(model, tokenizer, sae):
    items = [ABItem("is the movie good?", "(A)", "(B)"), ABItem("is the day bad?", "(B)", "(A)")]
    base = ab_matching_prob(model, tokenizer, None, None, items)
    iv = build("sae_bias", {}, 32, sae)
    with torch.no_grad():
        iv.b.normal_()
    assert 0.0 <= base <= 1.0 and ab_matching_prob(model, tokenizer, sae.hook, iv, items, strength=0.0) == base
    flipped = [ABItem(i.question, i.not_matching, i.matching) for i in items]
    assert ab_matching_prob(model, tokenizer, None, None, flipped) == pytest.approx(1 - base, abs=1e-6)


def test_seeded_sampling_is_reproducible_and_greedy_ignores_seed(model, tokenizer):
    from saebasis.core.generation import generate_timed

    prompts = ["the movie", "a day", "the weather"]
    kw = dict(max_new_tokens=6, batch_size=2)
    a = generate_timed(model, tokenizer, prompts, do_sample=True, seed=3, **kw)
    b = generate_timed(model, tokenizer, prompts, do_sample=True, seed=3, **kw)
    assert a.responses == b.responses and a.token_slots == 3 * 6
    assert (
        generate_timed(model, tokenizer, prompts, seed=1, **kw).responses
        == generate_timed(model, tokenizer, prompts, seed=2, **kw).responses
    )


def test_results_table_flags_edge_strengths_and_judges_that_disagree(tmp_path):
    from saebasis.eval.plots import write_tables

    base = {k: 0.5 for k in ("score", "ci_low", "ci_high", "concept", "instruction", "fluency", "concept2")}
    rows = [
        {**base, "method": "bias", "strength": 64.0, "score": 0.8, "score2": 0.6, "on_edge": True},
        {**base, "method": "adaptor", "strength": 1.0, "score": 0.7, "score2": 0.7, "on_edge": False},
    ]
    write_tables(tmp_path, rows)
    md = (tmp_path / "results.md").read_text()
    assert (
        "| bias | 64.000\u2020 |" in md
        and "| adaptor | 1.000 |" in md
        and "\u2020 chosen strength still on an edge" in md
    )
    assert "disagree on the winner: bias by score, adaptor by score2" in md
    assert (tmp_path / "results.csv").read_text().splitlines()[0].endswith(",on_edge")
    write_tables(tmp_path, [{**rows[1], "score2": 0.7}, {**rows[0], "on_edge": False, "score2": 0.9}])
    assert (
        "\u2020" not in (tmp_path / "results.md").read_text()
        and "disagree" not in (tmp_path / "results.md").read_text()
    )


@pytest.mark.parametrize(
    "method, cfg", [("sae_bias", {}), ("sae_adaptor", {"k_in": 8, "k_out": 4, "rank": 2}), ("diffmean", {})]
)
def test_params_count_exactly_what_the_run_folder_stores(method, cfg, sae, tmp_path):
    """n_params == the numbers in intervention.safetensors: a working mask (alive_only's support) is not a parameter."""
    from safetensors.torch import load_file

    from saebasis.eval.metrics import n_params

    iv = build(method, cfg, 32, sae)
    if method == "sae_bias":
        iv.restrict_to(torch.arange(sae.d_sae) % 2 == 0)
    save_run(tmp_path / "run", iv, {"hook": HOOK, "model": {"name": "tiny-llama"}})
    stored = load_file(tmp_path / "run" / "intervention.safetensors")
    assert n_params(iv) == sum(t.numel() for t in stored.values()) > 0
