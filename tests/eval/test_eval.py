import json
import math
from pathlib import Path

import pytest
import torch

from saebasis.config import compose, to_dict
from saebasis.data import ABItem
from saebasis.eval.metrics import L0_TOL, ab_matching_prob, harmonic_mean, kl_to_base, latent_l0
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
from saebasis.runs import load_run, save_run
from tests.conftest import tiny_stack_overrides

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


# -- compare end to end on the tiny model ---------------------------------------------------------
def _compare_cfg(tmp_path, sae, data, methods: dict, *extra: str) -> dict:
    stack = tiny_stack_overrides(tmp_path, sae)
    cfg = to_dict(
        compose(
            "compare",
            [
                *stack,
                "logger=none",
                f"data={data}",
                f"out_dir={tmp_path / 'out'}",
                "n_val=2",
                "n_test=2",
                "n_neutral=2",
                "max_new_tokens=4",
                "batch_size=2",
                *extra,
            ],
        )
    )
    cfg["stack_overrides"] = stack
    cfg["methods"].update(methods)
    return cfg


def _bias_run(tmp_path, sae):
    iv = build("sae_bias", {}, 32, sae)
    with torch.no_grad():
        iv.b.normal_()
    save_run(
        tmp_path / "bias_run",
        iv,
        {"sae": {"path": str(tmp_path / "sae"), "hook": HOOK}, "hook": HOOK, "model": {"name": "tiny-llama"}},
    )
    return {"kind": "run", "run_dir": str(tmp_path / "bias_run"), "strengths": [0.5, 1]}


def test_compare_end_to_end_on_tiny_model(concept_dir, tmp_path, sae):
    from saebasis.experiments.compare import compare

    train = {
        "kind": "train",
        "strengths": [1],
        "overrides": [
            "experiment=sae_bias",
            "debug=fast",
            "batch_size=2",
            "max_len=24",
            "trainer.enable_progress_bar=false",
        ],
    }
    methods = {"prompting": {"kind": "prompt", "prefix": "Be happy. "}, "trained": train}
    (concept_dir / "concept.yaml").write_text(
        "name: tiny\ndescription: positive sentiment\njudge: vader\nsecond_judge: textblob\n"
    )
    cfg = _compare_cfg(tmp_path, sae, concept_dir, methods, "seeds=[0,1]", "capability=12")
    cfg["methods"]["bias"] = _bias_run(tmp_path, sae)  # after _compare_cfg saved the SAE the run points to
    result = compare(cfg)
    out = tmp_path / "out"
    for name in ("results.csv", "results.md", "results.json", "score_vs_strength.png", "score_vs_fluency.png"):
        assert (out / name).stat().st_size > 0, name
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"unsteered", "diffmean", "bias", "prompting", "trained"}
    assert rows["unsteered"]["kl_neutral"] == 0.0 and rows["unsteered"]["gen_overhead"] == 1.0
    assert rows["prompting"]["kl_neutral"] is None
    b = load_run(tmp_path / "bias_run").intervention.bias  # L0 counts |strength * b_i| > L0_TOL at the chosen strength
    assert rows["diffmean"]["params"] == 32 and rows["bias"]["latent_l0"] == int(
        ((rows["bias"]["strength"] * b).abs() > L0_TOL).sum()
    )
    assert rows["trained"]["n_seeds"] == 2 and rows["diffmean"]["n_seeds"] == 1  # greedy closed form: one replicate
    assert (tmp_path / "out" / "runs" / "trained-seed1").is_dir()
    for r in rows.values():
        assert r["ci_low"] <= r["score"] <= r["ci_high"] and 0.0 <= r["score"] <= 1.0
    data = json.loads((out / "results.json").read_text())
    curve = data["results"]["bias"][
        "val_curve"
    ]  # the start grid [0.5, 1], extended x2 / /2 while the optimum sat on an edge
    assert data["complete"] and {"0.5", "1.0"} <= set(curve) and str(rows["bias"]["strength"]) in curve
    assert all(isinstance(r["on_edge"], bool) for r in rows.values()) and not rows["unsteered"]["on_edge"]
    assert len(data["results"]["bias"]["test_responses"]["0"]) == 2
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("method,strength,score") and len(csv_lines) == 6
    for r in rows.values():  # the second judge (textblob) beside vader, and their agreement
        assert 0.0 <= r["concept2"] <= 1.0 and 0.0 <= r["score2"] <= 1.0 and "judge_rho" in r
    assert "concept2 | score2 | judge_rho" in (out / "results.md").read_text()
    assert all(r["capability_items"] == 12 for r in rows.values())  # capability kept at each chosen strength
    assert rows["unsteered"]["capability_kept"] is not None  # the tiny model answers some of the 12 right
    from saebasis.core.stack import load_stack
    from saebasis.eval.capability import capability_kept, load_items, select_items

    assert rows["unsteered"]["capability_kept"] == 1.0
    bias = rows["bias"]
    assert bias["capability_kept"] == pytest.approx(bias["capability_acc"] / rows["unsteered"]["capability_acc"])
    stack = load_stack(cfg)  # the same tiny model: the row is capability_kept at the chosen strength
    want = capability_kept(
        stack.model,
        stack.tokenizer,
        load_run(tmp_path / "bias_run").intervention,
        HOOK,
        bias["strength"],
        select_items(load_items(), 12),
    )
    assert bias["capability_kept"] == pytest.approx(want.kept) and bias["capability_ci_low"] == want.ci[0]


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


def test_compare_ab_concept_selects_on_ab(tmp_path, concept_dir, sae):
    from saebasis.experiments.compare import compare

    (concept_dir / "concept.yaml").write_text("name: agree\ndescription: agreeing with the user\njudge: ab\n")
    items = [
        {"question": f"is {x} good?\n(A) yes\n(B) no", "matching": "(A)", "not_matching": "(B)", "split": s}
        for x, s in [("tea", "val"), ("rain", "val"), ("mud", "test"), ("ice", "test")]
    ]
    (concept_dir / "ab.jsonl").write_text("\n".join(json.dumps(i) for i in items))
    cfg = _compare_cfg(tmp_path, sae, concept_dir, {}, "select_by=ab", "methods.diffmean.strengths=[1,4]")
    result = compare(cfg)
    rows = {r["method"]: r for r in result["rows"]}
    assert all(0.0 <= r["ab_matching"] <= 1.0 for r in rows.values())
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["results"]["diffmean"]["val_metric"] == "ab_matching" and {"1.0", "4.0"} <= set(
        data["results"]["diffmean"]["val_curve"]
    )
    assert "ab_matching" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize(
    "methods, pattern",
    [
        ({"x": {"kind": "magic"}}, r"methods.x: kind must be one of"),
        ({"p": {"kind": "prompt", "prefix": 3}}, r"methods.p: kind prompt needs a prefix"),
        ({"r": {"kind": "run"}}, r"methods.r: kind run needs run_dir"),
        ({"f": {"kind": "fit", "strengths": []}}, r"strengths must be a non-empty list"),
    ],
)
def test_compare_rejects_bad_method_specs_before_heavy_work(tmp_path, concept_dir, sae, methods, pattern, monkeypatch):
    from saebasis.experiments import compare as compare_mod

    monkeypatch.setattr(
        compare_mod, "load_stack", lambda *_a, **_k: pytest.fail("loaded the model before validating methods")
    )
    with pytest.raises(ValueError, match=pattern):
        compare_mod.compare(_compare_cfg(tmp_path, sae, concept_dir, methods))


def test_compare_loads_the_model_once_for_every_method(concept_dir, tmp_path, sae, monkeypatch):
    import saebasis.core.stack
    from saebasis.experiments.compare import compare

    loads = []
    real = saebasis.core.stack.load_model
    monkeypatch.setattr(saebasis.core.stack, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    fast = ["debug=fast", "batch_size=2", "max_len=24", "trainer.enable_progress_bar=false"]
    methods = {
        "bias": {"kind": "train", "strengths": [1], "overrides": ["experiment=sae_bias", *fast]},
        "vector": {"kind": "train", "strengths": [1], "overrides": ["experiment=residual_vector", *fast]},
        "dm": {"kind": "fit", "strengths": [1], "overrides": ["intervention=diffmean"]},
    }
    result = compare(_compare_cfg(tmp_path, sae, concept_dir, methods, "strength_search.max_steps=0"))
    assert {r["method"] for r in result["rows"]} >= {"bias", "vector", "dm"}
    assert len(loads) == 1, f"{len(loads)} model loads for {len(methods) + 1} methods: the stack must be shared"


def test_compare_resume_keys_on_the_composed_config_not_the_spec(concept_dir, tmp_path, sae, monkeypatch):
    """A resumed compare reuses a cell only when the method's composed config is the same: the same spec under
    other stack overrides (as after an edited experiment file or a changed default) is made again."""
    import saebasis.experiments.compare as compare_mod
    from saebasis.experiments.compare import compare, config_key, method_config, saved_key

    fast = ["debug=fast", "batch_size=2", "trainer.enable_progress_bar=false"]
    methods = {
        "bias": {"kind": "train", "strengths": [1], "overrides": ["experiment=sae_bias", *fast]},
        "dm": {"kind": "fit", "strengths": [1], "overrides": ["intervention=diffmean"]},
    }
    cfg = _compare_cfg(tmp_path, sae, concept_dir, methods, "strength_search.max_steps=0", "resume=true")
    cfg["stack_overrides"] = [*cfg["stack_overrides"], "max_len=24"]
    compare(cfg)
    out = tmp_path / "out"
    run_dir = out / "runs" / "bias-seed0"
    assert saved_key(run_dir) == config_key(method_config("bias", methods["bias"], cfg, out, 0))  # JSON round trip
    made = []
    for fn in ("train", "fit_baseline"):
        real = getattr(compare_mod, fn)
        monkeypatch.setattr(
            compare_mod, fn, lambda c, _real=real, **kw: made.append(Path(c["run_dir"]).name) or _real(c, **kw)
        )
    again = _compare_cfg(tmp_path, sae, concept_dir, methods, "strength_search.max_steps=0", "resume=true")
    again["stack_overrides"] = [*again["stack_overrides"], "max_len=24"]
    compare(again)
    assert made == []  # same composed configs: every cell reused
    blob = json.loads((out / "results.json").read_text())
    for res in blob["results"].values():
        del res["config_keys"]  # a results.json from before keys were stored: read back from the run folders
    (out / "results.json").write_text(json.dumps(blob))
    import shutil

    shutil.rmtree(out / "cells")  # and no cells (a board written before cells): results.json alone is reused
    compare(again)
    assert made == []
    changed = _compare_cfg(tmp_path, sae, concept_dir, methods, "strength_search.max_steps=0", "resume=true")
    changed["stack_overrides"] = [*changed["stack_overrides"], "max_len=20"]  # same specs, other configs
    compare(changed)
    assert sorted(made) == ["bias-seed0", "diffmean", "dm"]  # diffmean: the config default beside the two
    assert saved_key(run_dir) == config_key(method_config("bias", methods["bias"], changed, out, 0))


def test_compare_autocast_generates_judges_and_trains_in_bf16_and_never_resumes_across_precisions(
    concept_dir, tmp_path, sae, monkeypatch
):
    """autocast=bfloat16: every generate and judge call runs under torch.autocast(bf16), trained methods are
    trained with Lightning's bf16-mixed (so their resume key differs), and a board judged in fp32 is not reused in
    bf16 (or back)."""
    import saebasis.experiments.compare as compare_mod
    from saebasis.experiments.compare import compare, method_config

    seen = []
    real_generate = compare_mod.generate_timed
    monkeypatch.setattr(
        compare_mod,
        "generate_timed",
        lambda *a, **k: (
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))) or real_generate(*a, **k)
        ),
    )
    fast = ["debug=fast", "batch_size=2", "max_len=24", "trainer.enable_progress_bar=false"]
    methods = {"bias": {"kind": "train", "strengths": [1], "overrides": ["experiment=sae_bias", *fast]}}
    cfg = _compare_cfg(
        tmp_path, sae, concept_dir, methods, "strength_search.max_steps=0", "resume=true", "autocast=bfloat16"
    )
    out = tmp_path / "out"
    assert method_config("bias", methods["bias"], cfg, out, 0)["trainer"]["precision"] == "bf16-mixed"
    assert (
        method_config("bias", methods["bias"], {**cfg, "autocast": None}, out, 0)["trainer"]["precision"] == "32-true"
    )
    first = compare(cfg)
    assert len(seen) > 2 and all(on and dtype == torch.bfloat16 for on, dtype in seen)
    assert all(math.isfinite(r["score"]) for r in first["rows"])
    seen.clear()
    compare(cfg)
    assert len(seen) == 0  # same precision: every method reused, so nothing is generated (not even the reference)
    seen.clear()
    fp32 = _compare_cfg(tmp_path, sae, concept_dir, methods, "strength_search.max_steps=0", "resume=true")
    compare(fp32)
    assert seen and not any(on for on, _ in seen)  # judged again, in full precision
    with pytest.raises(ValueError, match="autocast must be null"):
        compare(_compare_cfg(tmp_path, sae, concept_dir, methods, "autocast=int8"))


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


@pytest.mark.parametrize("bad", [-1, 1.5, "all", True])
def test_compare_refuses_a_bad_capability_setting_before_work(bad):
    from saebasis.experiments.compare import normalise

    cfg = to_dict(compose("compare", []))
    cfg["capability"] = bad
    with pytest.raises(ValueError, match="capability must be 0 \\(off\\) or how many capability items"):
        normalise(cfg)
