"""saebasis compare end to end on the tiny model: rows, resume keys, precision, bad specs refused before work,
capability kept."""

import json
import math
from pathlib import Path

import pytest
import torch

from saebasis.config import compose, to_dict
from saebasis.eval.metrics import L0_TOL
from saebasis.interventions import build
from saebasis.runs import load_run, save_run
from tests.conftest import tiny_stack_overrides

HOOK = "blocks.1.hook_resid_post"


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
    from saebasis.experiments.compare import run as compare_mod

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
    import saebasis.experiments.compare.run as compare_mod
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
    import saebasis.experiments.compare.evaluator as compare_mod
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


@pytest.mark.parametrize("bad", [-1, 1.5, "all", True])
def test_compare_refuses_a_bad_capability_setting_before_work(bad):
    from saebasis.experiments.compare import normalise

    cfg = to_dict(compose("compare", []))
    cfg["capability"] = bad
    with pytest.raises(ValueError, match="capability must be 0 \\(off\\) or how many capability items"):
        normalise(cfg)
