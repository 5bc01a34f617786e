"""The leaderboard: aggregation on hand-made results (exact), and end to end on the tiny model with a resume."""

from __future__ import annotations

import json
import math
from statistics import mean

import pytest

from saebasis.config import compose
from saebasis.eval.board import (
    ab_matching,
    board_agreement,
    capability,
    concept_bootstrap_ci,
    contrast_agreement,
    contrasts,
    costs,
    families,
    overall,
    paired_difference,
    ranks,
    timings,
    tradeoff_points,
)
from saebasis.experiments.board_render import markdown
from saebasis.experiments.leaderboard import leaderboard, time_left
from tests.conftest import write_concept


def load_script(name: str):
    """A board script's code: a package module under saebasis/experiments/ (scripts/<name>.py only runs its main)."""
    import importlib

    return importlib.import_module(f"saebasis.experiments.{name}")


def _blob(scores: dict[str, float], edges=()) -> dict:
    return {
        "config": {},
        "results": {
            m: {"row": {"method": m, "score": s, "on_edge": m in edges}, "test_scores": {"0": [s, s]}}
            for m, s in scores.items()
        },
    }


def _board(per_concept: dict[str, dict[str, float]]) -> dict:
    """A published leaderboard.json's overall / per_concept, from {concept: {method: score}}."""
    results = {c: _blob(s) for c, s in per_concept.items()}
    methods = list(next(iter(per_concept.values())))
    return {"overall": overall(results), "per_concept": {m: {c: s[m] for c, s in per_concept.items()} for m in methods}}


def test_board_agreement_is_exact_on_hand_made_boards(tmp_path):
    a = _board({"c1": {"x": 0.9, "y": 0.5, "z": 0.1}, "c2": {"x": 0.8, "y": 0.6, "z": 0.2}})
    same = board_agreement(a, a)
    assert (
        same["rho_scores"] == pytest.approx(1.0)
        and same["rho_ranks"] == pytest.approx(1.0)
        and same["same_winners"] == 2
    )
    assert [r["place_a"] for r in same["methods"]] == [1, 2, 3] == [r["place_b"] for r in same["methods"]]
    # b: c1 reversed (x last), c2 the same; an extra method only b ran is left out
    b = _board({"c1": {"x": 0.1, "y": 0.5, "z": 0.9, "w": 1.0}, "c2": {"x": 0.8, "y": 0.6, "z": 0.2, "w": 0.0}})
    agree = board_agreement(a, b)
    assert {r["method"] for r in agree["methods"]} == {"x", "y", "z"}
    assert agree["concepts"]["c1"] == {
        "rho": pytest.approx(-1.0),
        "winner_a": ["x"],
        "winner_b": ["z"],
        "same_winner": False,
    }
    assert agree["concepts"]["c2"]["rho"] == pytest.approx(1.0) and agree["concepts"]["c2"]["same_winner"]
    assert agree["same_winners"] == 1
    # mean scores: a x 0.85, y 0.55, z 0.15; b x 0.45, y 0.55, z 0.55
    # -> ranks [3, 2, 1] vs [1, 2.5, 2.5] (ties averaged)
    assert agree["rho_scores"] == pytest.approx(-math.sqrt(3) / 2)
    # a third concept only b ran changes nothing: every figure is on the shared concepts
    c3 = _board(
        {
            "c1": {"x": 0.1, "y": 0.5, "z": 0.9},
            "c2": {"x": 0.8, "y": 0.6, "z": 0.2},
            "c3": {"x": 0.0, "y": 0.0, "z": 1.0},
        }
    )
    assert (
        board_agreement(a, c3)["rho_scores"] == pytest.approx(-math.sqrt(3) / 2)
        and board_agreement(a, c3)["n_concepts"] == 2
    )
    with pytest.raises(ValueError, match="share 1 method"):
        board_agreement(a, _board({"c1": {"x": 0.1, "q": 0.2}, "c2": {"x": 0.3, "q": 0.4}}))
    script = load_script("compare_boards")
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    script.main(
        [
            str(tmp_path / "a.json"),
            str(tmp_path / "b.json"),
            "--names",
            "fp32",
            "bf16",
            "--out",
            str(tmp_path / "ab.md"),
        ]
    )
    page = (tmp_path / "ab.md").read_text()
    assert "the same winner on 1 of 2 concepts" in page and "| c1 | -1.00 | x | z | no |" in page
    assert json.loads((tmp_path / "ab.json").read_text())["names"] == ["fp32", "bf16"]


def test_contrast_agreement_says_which_orderings_each_board_resolves(tmp_path):
    # board a: x beats y by exactly 0.4 on every concept and instruction (CI [0.4, 0.4]: resolved); z ties x.
    # board b: x - y is +0.8, -0.8, 0 on the three concepts (CI spans 0: not resolved); z - x is +0.2 everywhere.
    a = {c: _blob({"x": 0.6, "y": 0.2, "z": 0.6}) for c in ("c1", "c2", "c3")}
    b = {
        "c1": _blob({"x": 0.9, "y": 0.1, "z": 1.0}),
        "c2": _blob({"x": 0.1, "y": 0.9, "z": 0.3}),
        "c3": _blob({"x": 0.5, "y": 0.5, "z": 0.7}),
    }
    rows = contrast_agreement(
        a, b, [("x", "y"), ("z", "x"), ("y", "x"), ("x", "w")]
    )  # (y, x) is (x, y) again; w is on neither
    assert [(r["a"], r["b"]) for r in rows] == [("x", "y"), ("z", "x")]
    xy, zx = rows
    assert xy["in_a"]["diff"] == pytest.approx(0.4) and xy["in_a"]["ci_low"] == pytest.approx(0.4)
    assert xy["in_b"]["diff"] == pytest.approx(0.0) and xy["in_b"]["ci_low"] < 0 < xy["in_b"]["ci_high"]
    assert xy["resolved"] == "a only" and zx["resolved"] == "b only"
    assert (
        contrast_agreement(a, {c: _blob({"x": 0.1, "y": 0.5}) for c in a}, [("x", "y")])[0]["resolved"]
        == "both, opposite signs"
    )
    with pytest.raises(ValueError, match="share no concept"):
        contrast_agreement(a, {"c9": b["c1"]}, [("x", "y")])
    # the script: published pages list the pairs, the out_dirs hold the per-instruction scores
    for name, board in (("a", a), ("b", b)):
        for concept, blob in board.items():
            (tmp_path / name / "concepts" / concept).mkdir(parents=True)
            (tmp_path / name / "concepts" / concept / "results.json").write_text(json.dumps({**blob, "complete": True}))
        page = _board({c: {m: r["row"]["score"] for m, r in blob["results"].items()} for c, blob in board.items()})
        page["contrasts"] = [{"a": "x", "b": "y"}] if name == "a" else [{"a": "z", "b": "x"}]
        (tmp_path / f"{name}.json").write_text(json.dumps(page))
    script = load_script("compare_boards")
    script.main(
        [
            str(tmp_path / "a.json"),
            str(tmp_path / "b.json"),
            "--names",
            "fp32",
            "bf16",
            "--out",
            str(tmp_path / "ab.md"),
            "--results",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
        ]
    )
    text = (tmp_path / "ab.md").read_text()
    assert "Of 2: resolved on both 0, with opposite signs 0, on fp32 only 1, on bf16 only 1, on neither 0." in text
    assert "| x | y | **+0.400 [+0.400, +0.400]** |" in text and "| fp32 only |" in text
    with pytest.raises(SystemExit, match="no concepts/"):
        script.main(
            [str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--results", str(tmp_path), str(tmp_path / "b")]
        )


def test_time_left_divides_the_time_spent_by_the_cells_saved_meanwhile():
    assert (
        time_left([(600.0, 1.0), (300.0, 0.5)], 4)
        == "~0.7 h left (4 concept(s) at 10.0 min, from the 1.5 computed in this run)"
    )
    # a resumed concept with 17 of 20 cells saved before: its 3.5 minutes are 3 cells' worth, not a concept's
    assert time_left([(210.0, 0.15)], 8) == "~3.1 h left (8 concept(s) at 23.3 min, from the 0.15 computed in this run)"
    assert time_left([], 2.85) == "2.85 concept(s) to compute, no estimate until one has run here"
    assert time_left([(5.0, 1.0)], 0) == "nothing left to compute"


def test_a_concepts_progress_counts_the_cells_saved_in_a_window_by_any_worker(tmp_path):
    from saebasis.experiments import cells
    from saebasis.experiments.leaderboard import share_left

    for method, finished in (("a", 10.0), ("b", 20.0)):
        cells.write_cell(tmp_path, method, {"cell": {"record": {"worker": 1, "finished": finished}}})
    cells.cell_path(tmp_path, "d").write_text("{torn")  # unreadable: not saved
    rows = ["a", "b", "c", "d"]
    assert cells.saved_between(tmp_path, rows) == 2 and cells.saved_between(tmp_path, rows, 15.0) == 1
    assert cells.saved_between(tmp_path, rows, 0.0, 15.0) == 1 and cells.saved_between(tmp_path / "none", rows) == 0
    assert share_left(tmp_path, rows) == 0.5 and share_left(tmp_path, rows, make_only=True) == 1.0


def test_a_row_added_to_a_finished_concept_is_work_left(tmp_path):
    from saebasis.experiments.leaderboard import judged

    folder = tmp_path / "concepts" / "ocean"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"complete": True, "results": {"a": {}, "b": {}}}))
    assert judged(tmp_path, "ocean") and judged(tmp_path, "ocean", ["a", "b"])
    assert not judged(tmp_path, "ocean", ["a", "b", "added"])  # its time estimate counts the added row's cell
    (folder / "results.json").write_text("{torn")
    assert not judged(tmp_path, "ocean") and not judged(tmp_path, "missing")


def test_a_page_and_a_resume_agree_on_a_torn_results_file(tmp_path):
    from saebasis.experiments.leaderboard import finished_concepts, judged

    for name, text in {"law": json.dumps({"complete": True, "results": {"a": {}}}), "ocean": "{torn"}.items():
        (tmp_path / "concepts" / name).mkdir(parents=True)
        (tmp_path / "concepts" / name / "results.json").write_text(text)
    (tmp_path / "concepts" / "space").mkdir()  # no results.json yet
    done, left = finished_concepts(tmp_path, ["ocean", "law", "space"])
    assert list(done) == ["law"] and left == ["ocean", "space"]  # the torn one is left, as a resume computes it again
    assert judged(tmp_path, "law") and not judged(tmp_path, "ocean")


def test_ranks_wins_and_mean_rank_are_exact():
    results = {"a": _blob({"x": 0.9, "y": 0.5, "z": 0.5}), "b": _blob({"x": 0.2, "y": 0.8, "z": 0.1}, edges=("y",))}
    r = ranks({m: {c: results[c]["results"][m]["row"]["score"] for c in results} for m in ("x", "y", "z")})
    assert r == {"x": {"a": 1, "b": 2}, "y": {"a": 2.5, "b": 1}, "z": {"a": 2.5, "b": 3}}  # ties share the mean rank
    rows = {row["method"]: row for row in overall(results)}
    assert rows["x"]["wins"] == 1 and rows["y"]["wins"] == 1 and rows["z"]["wins"] == 0
    assert rows["x"]["mean_rank"] == 1.5 and rows["y"]["mean_rank"] == 1.75 and rows["z"]["mean_rank"] == 2.75
    assert rows["y"]["edges"] == 1 and math.isclose(rows["x"]["mean_score"], 0.55)
    assert [row["method"] for row in overall(results)] == ["x", "y", "z"]


def test_concept_bootstrap_resamples_concepts_first():
    low, high = concept_bootstrap_ci({"a": [1.0] * 20, "b": [0.0] * 20})
    assert low == 0.0 and high == 1.0  # two concepts far apart: the CI spans both, whatever the examples say
    low, high = concept_bootstrap_ci({"a": [0.5] * 5, "b": [0.5] * 5})
    assert low == high == 0.5


def test_family_means_and_costs_are_exact():
    """Families come from each concept's concept.yaml (built-ins: sentiment / topic / behaviour); a folder that is
    gone counts as "other"; costs average what each method changes, leaving out what a method never has."""
    results = {
        "sentiment": _blob({"x": 0.9, "y": 0.3}),
        "ocean": _blob({"x": 0.2, "y": 0.6}),
        "cooking": _blob({"x": 0.4, "y": 0.8}),
        "gone": {**_blob({"x": 0.5}), "config": {"data": "/no/such/folder"}},
    }
    for concept, kl in (("sentiment", 0.1), ("ocean", 0.3), ("cooking", float("nan"))):
        results[concept]["results"]["x"]["row"].update(kl_neutral=kl, params=10, latent_l0=4.0)
    fams = families(results)
    assert {f: v["concepts"] for f, v in fams.items()} == {
        "sentiment": ["sentiment"],
        "topic": ["ocean", "cooking"],
        "other": ["gone"],
    }
    assert math.isclose(fams["topic"]["scores"]["x"], 0.3) and math.isclose(fams["topic"]["scores"]["y"], 0.7)
    assert "y" not in fams["other"]["scores"]
    cost = costs(results)
    assert (
        math.isclose(cost["x"]["kl_neutral"], 0.2) and cost["x"]["params"] == 10 and cost["x"]["latent_l0"] == 4.0
    )  # NaN left out
    assert "kl_neutral" not in cost.get("y", {})
    points = {p["method"]: p for p in tradeoff_points(results)}
    assert (
        points["x"]["latents"] == 4.0
        and math.isclose(points["x"]["kl"], 0.2)
        and math.isclose(points["x"]["score"], 0.5)
    )
    assert points["y"]["latents"] is None and points["y"]["kl"] is None  # plotted only where it changes latents
    results["ocean"]["results"]["y"]["row"].update(
        kl_neutral=None, latent_l0=0.0
    )  # a prompt: no KL, so no latents either
    results["cooking"]["results"]["y"]["row"].update(kl_neutral=0.5, latent_l0=2.0)
    assert costs(results)["y"]["latent_l0"] == 2.0  # the prompt's 0.0 is left out, not averaged in
    text = markdown(results, 60.0)
    assert "| method | sentiment (1) | topic (2) | other (1) |" in text
    assert "| y | 0.300 | **0.700** | – |" in text and "| x | **0.900** | 0.300 | **0.500** |" in text


def test_capability_kept_is_averaged_over_concepts_tabled_and_plotted(tmp_path):
    results = {"a": _blob({"x": 0.9, "y": 0.3, "z": 0.5}), "b": _blob({"x": 0.2, "y": 0.6, "z": 0.5})}
    for concept, kept in (("a", 0.8), ("b", 0.6)):
        results[concept]["results"]["x"]["row"].update(capability_kept=kept, capability_items=110)
    results["a"]["results"]["y"]["row"].update(capability_kept=1.0, capability_items=110)
    results["b"]["results"]["y"]["row"].update(capability_kept=float("nan"))  # unmeasured: left out
    got = capability(results)
    assert set(got) == {"x", "y"} and math.isclose(got["x"]["kept"], 0.7) and got["x"]["concepts"] == 2
    assert got["x"]["ci_low"] >= 0.6 and got["x"]["ci_high"] <= 0.8 and got["y"]["kept"] == 1.0
    assert math.isclose(costs(results)["x"]["capability_kept"], 0.7)
    text = markdown(results, 60.0)
    section = text.split("## Capability kept")[1].split("##")[0]
    assert "110 items" in section and "| x | 0.550 | 0.700 |" in section and "| lowest concept |" in section
    assert "b 0.600" in section and "| z |" not in section  # z was not measured
    from saebasis.experiments.board_render import capability_plot

    assert capability_plot(tmp_path, results).endswith("capability.png") and (tmp_path / "capability.png").exists()
    assert "## Capability kept" not in markdown({"a": _blob({"x": 0.9})}, 1.0)  # nothing measured: no section


def test_time_per_cell_is_averaged_over_concepts_and_tabled():
    results = {"a": _blob({"x": 0.9, "y": 0.3}), "b": _blob({"x": 0.2, "y": 0.6})}
    for concept, make, cell in (("a", 80.0, 200.0), ("b", 10.0, 100.0)):
        results[concept]["results"]["x"]["row"]["fit_time_s"] = make
        results[concept]["results"]["x"]["eval_time_s"] = cell
    results["a"]["results"]["y"]["eval_time_s"] = 30.0  # y: a cell time on one concept, no make time
    got = timings(results)
    assert got["x"] == {"make_s": 45.0, "cell_s": 150.0, "concepts": 2}
    assert got["y"] == {"cell_s": 30.0, "concepts": 1}
    section = markdown(results, 60.0).split("## Time per cell")[1].split("##")[0]
    assert "| x | 45.0 | 150.0 |" in section and "| y | – | 30.0 |" in section
    assert timings({"a": _blob({"x": 0.9})}) == {} and "## Time per cell" not in markdown({"a": _blob({"x": 0.9})}, 1.0)


def test_ab_matching_is_tabled_only_for_concepts_with_ab_items_and_exactly():
    results = {"sentiment": _blob({"x": 0.9, "y": 0.3}), "sycophancy": _blob({"x": 0.1, "y": 0.2})}
    results["sycophancy"]["results"]["x"]["row"]["ab_matching"] = 0.648
    results["sycophancy"]["results"]["y"]["row"]["ab_matching"] = float("nan")  # not measured: left out, not 0
    assert ab_matching(results) == {"sycophancy": {"x": 0.648}}
    text = markdown(results, 60.0)
    assert "## A/B matching" in text and "| method | sycophancy |" in text
    assert "| x | 0.648 |" in text and "| y | – |" in text
    assert "## A/B matching" not in markdown({"sentiment": results["sentiment"]}, 60.0)


def test_paired_differences_pair_by_instruction_average_seeds_and_flag_only_resolved_orderings():
    def cell(**seeds):
        return {"row": {"score": 0.0}, "test_scores": {k.strip("s"): v for k, v in seeds.items()}}

    results = {
        "c1": {"results": {"a": cell(s0=[1.0, 0.0], s1=[0.0, 1.0]), "b": cell(s0=[0.0, 0.0]), "z": cell(s0=[1.0])}},
        "c2": {"results": {"a": cell(s0=[0.5, 0.5]), "b": cell(s0=[0.5, 0.5])}},
    }
    d = paired_difference(results, "a", "b")
    assert (
        math.isclose(d["diff"], 0.25) and d["a_higher"] == 1 and d["concepts"] == 2
    )  # seeds averaged per instruction first
    assert d["ci_low"] == 0.0 and math.isclose(d["ci_high"], 0.5)  # two concepts: the CI spans both
    assert paired_difference(results, "a", "z") is None  # different instructions (lengths): never paired
    assert paired_difference(results, "a", "missing") is None
    shifted = {"c": {"results": {"a": cell(s0=[0.9, 0.1, 0.5]), "b": cell(s0=[0.8, 0.0, 0.4])}}}
    d = paired_difference(shifted, "a", "b")  # paired per instruction: every difference is 0.1, so the CI is a point
    assert math.isclose(d["ci_low"], 0.1) and math.isclose(d["ci_high"], 0.1)
    sure = {c: {"results": {"x": cell(s0=[0.9, 0.8, 0.7]), "y": cell(s0=[0.1, 0.2, 0.3])}} for c in ("c1", "c2", "c3")}
    for c in sure.values():
        for m in c["results"].values():
            m["row"]["score"] = mean(m["test_scores"]["0"])
    rows = contrasts(sure, pairs=[["y", "x"], ["x", "y"], ["x", "nobody"]])
    assert [(r["a"], r["b"]) for r in rows] == [("x", "y"), ("y", "x")]  # leader first, duplicates and unknowns dropped
    assert math.isclose(rows[0]["diff"], 0.6) and rows[0]["ci_low"] > 0 and rows[0]["a_higher"] == 3
    text = markdown(sure, 1.0, pairs=[["y", "x"]])
    assert "| x | y | **+0.600** |" in text and "| y | x | **-0.600** |" in text


@pytest.fixture
def tiny_board(tmp_path, tiny_stack):
    stack = tiny_stack
    concepts = [str(write_concept(tmp_path / name)) for name in ("alpha", "beta")]
    quoted = ",".join(f"'{o}'" for o in [*stack, "batch_size=2", "max_len=24"])
    overrides = [
        *stack,
        f"stack_overrides=[{quoted}]",
        "seeds=[0]",
        "n_val=2",
        "n_test=2",
        "n_neutral=2",
        "max_new_tokens=3",
        "batch_size=4",
        "strength_search.max_steps=1",
        "readability_overrides=['n_docs=8','top_k=3']",
        f"out_dir={tmp_path / 'board'}",
    ]
    return tmp_path, concepts, overrides


METHODS = {
    "unsteered": {"kind": "none"},
    "bias": {"kind": "train", "overrides": ["experiment=sae_bias", "trainer.max_epochs=1"], "strengths": [1]},
    "dm": {"kind": "fit", "overrides": ["experiment=diffmean"], "strengths": [1]},
    "ghost": {"kind": "fit", "overrides": ["intervention=diffmean"], "strengths": [1], "optional": True},
}


def board_cfg(overrides: list[str]) -> dict:
    from saebasis.config import to_dict

    return {**to_dict(compose("leaderboard", overrides)), "methods": METHODS}


def test_leaderboard_end_to_end_and_resume(tiny_board, monkeypatch, capsys):
    tmp_path, concepts, overrides = tiny_board
    import saebasis.experiments.compare.run as compare_mod

    real_fit = compare_mod.fit_baseline

    def fit_or_missing(cfg, **kw):  # the optional 'ghost' peer's library is "not installed"
        if "ghost" in str(cfg["run_dir"]):
            raise ModuleNotFoundError("No module named 'ghostlib'")
        return real_fit(cfg, **kw)

    monkeypatch.setattr(compare_mod, "fit_baseline", fit_or_missing)
    first = leaderboard(board_cfg([*overrides, f"concepts=[{concepts[0]}]"]))
    said = capsys.readouterr().out.split("contrasts name methods this board does not have: ")[1].split("]")[0]
    assert "'lora', 'loreft'" in said  # the defaults' pairs whose methods this board lacks: said, the board runs
    page = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "## Paired differences" in page and "| prompting | sae_latent |" not in page
    board = tmp_path / "board"
    assert (board / "concepts" / "alpha" / "results.json").exists() and not (board / "concepts" / "beta").exists()
    assert "ghost" in (board / "leaderboard.md").read_text() and "Skipped" in (board / "leaderboard.md").read_text()
    read = json.loads((board / "leaderboard.json").read_text())["readability"]["alpha"]
    assert set(read) == {"bias"}, read  # the SAE-basis run is read; the residual DiffMean (no SAE) is not
    assert (
        read["bias"]["coverage"].endswith("/3")
        and "| bias | " in (board / "leaderboard.md").read_text().split("be read?")[1]
    )
    report = board / "concepts" / "alpha" / "runs" / "bias-seed0" / "interpret" / "report.json"
    stamp = report.stat().st_mtime_ns
    calls = []

    def no_training(cfg, **kw):
        calls.append(str(cfg["run_dir"]))
        raise RuntimeError(f"trained {cfg['run_dir']}")

    monkeypatch.setattr(compare_mod, "train", no_training)
    with pytest.raises(RuntimeError, match="trained"):  # beta's bias must train: proves the guard bites
        leaderboard(board_cfg([*overrides, f"concepts=[{concepts[0]},{concepts[1]}]"]))
    assert len(calls) == 1 and "/beta/" in calls[0], calls  # alpha's finished cells were all skipped
    assert json.loads((board / "concepts" / "alpha" / "results.json").read_text())["complete"]
    monkeypatch.undo()
    monkeypatch.setattr(compare_mod, "fit_baseline", fit_or_missing)
    second = leaderboard(board_cfg([*overrides, f"concepts=[{concepts[0]},{concepts[1]}]"]))
    log = capsys.readouterr().out  # alpha was finished before: no estimate from its seconds-long resume
    assert (
        "[saebasis leaderboard] alpha: " in log
        and "(1/2); 1 concept(s) to compute, no estimate until one has run here" in log
    )
    assert "[saebasis leaderboard] beta: " in log and "(2/2); nothing left to compute" in log
    table = json.loads((board / "leaderboard.json").read_text())
    assert {r["method"] for r in table["overall"]} == {"unsteered", "bias", "dm"}
    assert all(r["concepts"] == 2 for r in table["overall"]) and (board / "heatmap.png").exists()
    assert (board / "tradeoff.png").stat().st_size > 0
    assert set(table["capability"]) == {"unsteered", "bias", "dm"} and (board / "capability.png").exists()
    assert report.stat().st_mtime_ns == stamp and set(table["readability"]) == {"alpha", "beta"}  # alpha read once
    assert first["md"] == second["md"] and "<script" not in (board / "leaderboard.html").read_text()
    publish = load_script("publish_board")
    (board / "concepts" / "gamma").mkdir()  # an unfinished concept (no results.json): left out, said
    publish.main([str(board), "tiny", "--preset", "quick", "--docs", str(tmp_path / "docs")])
    page = (tmp_path / "docs" / "results" / "leaderboard_tiny.md").read_text()
    assert page.startswith("# saebasis leaderboard (2 concepts,") and "| method | alpha | beta |" in page
    assert (tmp_path / "docs" / "img" / "leaderboard_tiny.png").exists() and (
        tmp_path / "docs" / "img" / "leaderboard_tiny_tradeoff.png"
    ).exists()
    assert (tmp_path / "docs" / "img" / "leaderboard_tiny_capability.png").exists()
    assert "not finished, left out: gamma" in capsys.readouterr().out


def test_make_only_trains_and_reads_every_cell_and_the_board_then_reuses_the_runs(tiny_board, monkeypatch, capsys):
    tmp_path, concepts, overrides = tiny_board
    import saebasis.experiments.compare.evaluator as evaluator_mod
    import saebasis.experiments.compare.run as compare_mod

    methods = {k: v for k, v in METHODS.items() if k != "ghost"}
    cfg = {**board_cfg([*overrides, f"concepts=[{concepts[0]}]", "make_only=true"]), "methods": methods}
    monkeypatch.setattr(evaluator_mod, "generate_timed", lambda *a, **k: pytest.fail("make_only generated text"))
    leaderboard(cfg)
    said = capsys.readouterr().out
    assert "make_only: the runs of 1 concept(s) made" in said and "another worker" not in said
    board = tmp_path / "board"
    runs = board / "concepts" / "alpha" / "runs"
    assert (runs / "bias-seed0" / "intervention.safetensors").exists() and (
        runs / "dm" / "intervention.safetensors"
    ).exists()
    assert not (board / "concepts" / "alpha" / "results.json").exists()  # nothing judged
    read = json.loads((board / "leaderboard.json").read_text())["readability"]["alpha"]
    assert set(read) == {"bias"} and read["bias"]["coverage"].endswith("/3")
    assert (
        "nothing judged yet" in (board / "leaderboard.md").read_text()
        and "| bias |" in (board / "leaderboard.md").read_text()
    )
    monkeypatch.undo()
    made = []
    for fn in ("train", "fit_baseline"):
        monkeypatch.setattr(
            compare_mod, fn, lambda c, **kw: made.append(c["run_dir"]) or pytest.fail(f"remade {c['run_dir']}")
        )
    leaderboard({**cfg, "make_only": False})
    assert made == [] and json.loads((board / "concepts" / "alpha" / "results.json").read_text())["complete"]


def test_only_keeps_the_named_rows_in_the_sets_order_and_refuses_other_names():
    from saebasis.experiments.compare import keep_methods

    methods = {"a": {"kind": "none"}, "b": {"kind": "fit"}, "c": None, "d": {"kind": "train"}}
    assert list(keep_methods(methods)) == ["a", "b", "d"]  # null drops a row
    assert list(keep_methods(methods, ["d", "a"])) == ["a", "d"] and list(keep_methods(methods, "b")) == ["b"]
    for bad in (["a", "typo"], ["c"], []):  # a misspelt row, a null row, nothing named
        with pytest.raises(ValueError, match=r"only must name methods of the method set.*\['a', 'b', 'd'\]"):
            keep_methods(methods, bad)


def test_leaderboard_only_makes_the_named_rows_and_a_misnamed_row_stops_it_before_the_model(tiny_board, monkeypatch):
    tmp_path, concepts, overrides = tiny_board
    import saebasis.core.stack as stack_mod

    methods = {k: v for k, v in METHODS.items() if k != "ghost"}
    cfg = board_cfg([*overrides, f"concepts=[{concepts[0]}]", "make_only=true"])
    with monkeypatch.context() as m:
        m.setattr(stack_mod, "load_stack", lambda *a, **k: pytest.fail("loaded the model before checking only"))
        with pytest.raises(ValueError, match=r"got \['dmm'\].*\['bias', 'dm', 'unsteered'\]"):
            leaderboard({**cfg, "methods": methods, "only": ["dmm"]})
    leaderboard({**cfg, "methods": methods, "only": ["dm"]})
    runs = tmp_path / "board" / "concepts" / "alpha" / "runs"
    assert (runs / "dm" / "intervention.safetensors").exists() and not (runs / "bias-seed0").exists()


def test_board_state_round_trips_runs_and_results_without_checkpoints(tmp_path):
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    board = tmp_path / "a" / "full"
    (board / "concepts" / "x" / "runs" / "bias-seed0").mkdir(parents=True)
    (board / "concepts" / "x" / "runs" / "bias-seed0.ckpt").mkdir()
    (board / "concepts" / "x" / "runs" / "bias-seed0.ckpt" / "last.ckpt").write_bytes(b"\0" * 10)
    results = '{"complete": false, "results": {"bias": {}, "dm": {}, "big": {}}}'  # finished; lr not yet
    (board / "concepts" / "x" / "results.json").write_text(results)
    for run_name in ("bias-seed0", "bias-seed1", "dm", "lr-seed1", "big"):
        (board / "concepts" / "x" / "runs" / run_name).mkdir(exist_ok=True)
        (board / "concepts" / "x" / "runs" / run_name / "cfg.json").write_text("{}")
    (board / "concepts" / "x" / "runs" / "big" / "intervention.safetensors").write_bytes(b"\0" * (2**20 + 1))
    (board / "concepts" / "x" / "cells").mkdir()
    (board / "concepts" / "x" / "cells" / "lr.lock").write_text('{"pid": 1, "host": "elsewhere"}')  # a worker's claim
    (board / "concepts" / "x" / "cells" / "dm.json").write_text("{}")
    env = {"BOARD_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run(
        ["bash", str(root / "scripts" / "board_state.sh"), *a], env=env, capture_output=True, text=True, cwd=root
    )
    assert run("pack", str(board)).returncode == 0 and (tmp_path / "state" / "full.tar.gz").exists()
    back = tmp_path / "b" / "full"
    assert run("unpack", str(back)).returncode == 0
    assert (back / "concepts" / "x" / "results.json").read_text() == results
    kept = {p.name for p in (back / "concepts" / "x" / "runs").iterdir()}
    assert kept == {
        "bias-seed0",
        "dm",
        "lr-seed1",
    }  # finished cells keep only their seed-0 run (a small fitted method's one run; readability); unfinished all
    assert (back / "concepts" / "x" / "runs" / "bias-seed0" / "cfg.json").exists()
    assert not (back / "concepts" / "x" / "runs" / "bias-seed0.ckpt").exists()  # checkpoints are not carried
    assert (back / "concepts" / "x" / "cells" / "dm.json").exists()  # finished cells travel ...
    assert not (back / "concepts" / "x" / "cells" / "lr.lock").exists()  # ... a claim does not: it is this machine's
    missing = run("unpack", str(tmp_path / "c" / "other"))
    assert missing.returncode == 1 and "no " in missing.stderr


def test_leaderboard_hands_its_precision_to_every_concept():
    from saebasis.config import to_dict
    from saebasis.experiments.leaderboard import concept_cfg

    assert concept_cfg(to_dict(compose("leaderboard", ["autocast=bfloat16"])), "ocean")["autocast"] == "bfloat16"
    assert concept_cfg(to_dict(compose("leaderboard", [])), "ocean")["autocast"] is None  # fp32 unless asked


def test_two_workers_build_one_board_and_compute_every_cell_once(tmp_path, tiny_stack):
    """A Hydra multirun of 2 joblib workers on one out_dir; the concepts are one entry, a folder of concept folders
    created here (a new concept is one folder: its prompting prefix comes from its concept.yaml)."""
    import subprocess
    import sys
    from pathlib import Path

    mine = tmp_path / "my_concepts"
    for name in ("alpha", "beta"):
        write_concept(mine / name)
        with open(mine / name / "concept.yaml", "a") as f:
            f.write(f'prompt: "Talk about {name}. "\n')
    confs = tmp_path / "confs" / "methods"
    confs.mkdir(parents=True)
    (confs / "tiny.yaml").write_text(
        "unsteered: {kind: none}\nprompting: {kind: prompt}\n"
        "bias: {kind: train, overrides: [experiment=sae_bias, trainer.max_epochs=1], strengths: [1]}\n"
        "dm: {kind: fit, overrides: [experiment=diffmean], strengths: [1]}\n"
    )
    quoted = ",".join(f"'{o}'" for o in [*tiny_stack, "batch_size=2", "max_len=24"])
    board = tmp_path / "board"
    cli = Path(sys.executable).with_name("saebasis")
    args = [
        str(cli),
        "leaderboard",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "worker=0,1",
        f"hydra.searchpath=[file://{tmp_path / 'confs'}]",
        f"hydra.sweep.dir={tmp_path / 'hydra'}",
        "methods=tiny",
        *tiny_stack,
        f"stack_overrides=[{quoted}]",
        f"concepts=[{mine}]",
        "seeds=[0]",
        "n_val=2",
        "n_test=2",
        "n_neutral=2",
        "max_new_tokens=3",
        "batch_size=4",
        "strength_search.max_steps=1",
        "readability=false",
        "contrasts=[]",
        f"out_dir={board}",
    ]
    run = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    from saebasis.experiments.cells import computations

    computed = {c: [r["method"] for r in computations(board / "concepts" / c)] for c in ("alpha", "beta")}
    assert {c: sorted(m) for c, m in computed.items()} == {
        c: ["bias", "dm", "prompting", "unsteered"] for c in computed
    }
    workers = {r["worker"] for c in computed for r in computations(board / "concepts" / c)}
    assert workers <= {0, 1}
    table = json.loads((board / "leaderboard.json").read_text())
    assert table["complete"] and set(table["per_concept"]["dm"]) == {"alpha", "beta"}  # merged from both workers' cells
    assert {r["method"] for r in table["overall"]} == {"unsteered", "prompting", "bias", "dm"}
    for name in ("alpha", "beta"):
        blob = json.loads((board / "concepts" / name / "results.json").read_text())
        assert blob["complete"] and blob["config"]["methods"]["prompting"]["prefix"] == f"Talk about {name}. "
        cell = json.loads((board / "concepts" / name / "cells" / "bias.json").read_text())
        assert cell["cell"]["record"]["worker"] in (0, 1) and cell["row"]["method"] == "bias"


def test_a_cell_another_worker_holds_is_left_to_it_then_computed_once(tiny_board, capsys):
    import os

    from saebasis.experiments.cells import computations

    tmp_path, concepts, overrides = tiny_board
    methods = {k: v for k, v in METHODS.items() if k in ("unsteered", "dm")}
    cfg = {**board_cfg([*overrides, f"concepts=[{concepts[0]}]", "readability=false"]), "methods": methods}
    cells = tmp_path / "board" / "concepts" / "alpha" / "cells"
    cells.mkdir(parents=True)
    (cells / "dm.lock").write_text(str(os.getpid()))  # a live process holds dm
    first = leaderboard(cfg)
    assert (
        first["pending"] == ["alpha"] and "dm: being computed by another worker, left to it" in capsys.readouterr().out
    )
    blob = json.loads((cells.parent / "results.json").read_text())
    assert not blob["complete"] and set(blob["results"]) == {"unsteered"}
    assert not json.loads((tmp_path / "board" / "leaderboard.json").read_text())["complete"]
    (cells / "dm.lock").unlink()  # its owner finished without saving: the next worker computes it
    second = leaderboard(cfg)
    assert second["pending"] == [] and json.loads((tmp_path / "board" / "leaderboard.json").read_text())["complete"]
    assert sorted(r["method"] for r in computations(cells.parent)) == ["dm", "unsteered"]  # each once
    third = leaderboard(cfg)  # everything saved: nothing computed again
    assert third["pending"] == [] and len(computations(cells.parent)) == 2


def test_board_state_forget_drops_cells_so_the_next_run_computes_them(tmp_path):
    from saebasis.experiments.board_state import forget, main

    concept = tmp_path / "board" / "concepts" / "x"
    for name in ("bias-seed0", "bias-seed1", "bias-seed0.ckpt", "dm", "lr-seed0"):
        (concept / "runs" / name).mkdir(parents=True)
        (concept / "runs" / name / "cfg.json").write_text("{}")
    (concept / "cells").mkdir()
    for method in ("bias", "dm", "lr"):
        (concept / "cells" / f"{method}.json").write_text("{}")
    blob = {"complete": True, "results": {"bias": {"row": {}}, "dm": {"row": {}}, "lr": {"row": {}}}}
    (concept / "results.json").write_text(json.dumps(blob))
    gone = forget(tmp_path / "board", "x", ["bias", "dm"])
    assert {p.name for p in gone} == {"bias.json", "dm.json", "bias-seed0", "bias-seed1", "bias-seed0.ckpt", "dm"}
    assert sorted(p.name for p in (concept / "runs").iterdir()) == ["lr-seed0"]
    assert sorted(p.name for p in (concept / "cells").iterdir()) == ["lr.json"]
    after = json.loads((concept / "results.json").read_text())
    assert after == {"complete": False, "results": {"lr": {"row": {}}}}  # the resume recomputes bias and dm
    (concept / "cells" / "lr.lock").write_text('{"pid": 1}')  # a worker's claim: refused, nothing removed
    assert main(["forget", str(tmp_path / "board"), "x", "lr"]) == 1
    assert (concept / "cells" / "lr.json").exists() and (concept / "runs" / "lr-seed0").exists()
    with pytest.raises(FileNotFoundError, match="no cell, result or run of 'ghost'"):
        forget(tmp_path / "board", "x", ["ghost"])
    with pytest.raises(FileNotFoundError, match="no concept 'y'"):
        forget(tmp_path / "board", "y", ["lr"])
    assert main(["forget", str(tmp_path / "board"), "x"]) == 2  # no method named: usage
