"""The pre-registered readings (a)-(c) on hand-made boards: planted ratios, orderings and alignments."""

import json
import math

import pytest

from saebasis.experiments.preregistered import main, readings, render

CONCEPTS = [f"c{i}" for i in range(8)]
N = 10  # test instructions per concept


def cell(scores: list[float], concept: float) -> dict:
    return {"row": {"score": sum(scores) / len(scores), "concept": concept}, "test_scores": {"0": scores}}


def board(offset_sae: float = 0.0) -> dict:
    """lora leads; sae_x ties it up to symmetric noise and beats diffmean_last / caa by 0.3 on every instruction;
    sae_latent_output's concept column is exactly twice sae_latent's."""
    results = {}
    for i, c in enumerate(CONCEPTS):
        base = [0.3 + 0.01 * ((i + j) % 5) for j in range(N)]
        noise = [0.1 if j % 2 else -0.1 for j in range(N)]
        sae_x = [b + 0.3 + offset_sae for b in base]
        results[c] = {
            "results": {
                "lora": cell([x + 0.005 + e for x, e in zip(sae_x, noise)], 0.9),
                "sae_x": cell(sae_x, 0.8),
                "diffmean_last": cell(base, 0.5),
                "caa": cell(base, 0.4),
                "sae_latent": cell([0.1] * N, 0.1 + 0.02 * i),
                "sae_latent_output": cell([0.2] * N, 2 * (0.1 + 0.02 * i)),
            }
        }
    return results


def readable(n_aligned: int) -> dict:
    """sae_x aligned (CI above 0) on the first n_aligned concepts; sae_latent read everywhere, aligned nowhere."""
    return {
        c: {
            "sae_x": {"ci95": [0.01, 0.1] if i < n_aligned else [-0.01, 0.1]},
            "sae_latent": {"ci95": [-0.1, 0.1]},
            "sae_latent_output": {"ci95": None},
        }
        for i, c in enumerate(CONCEPTS)
    }


def test_planted_board_meets_all_three_readings():
    got = readings(board(), readable(7))
    assert got["leader"] == "lora"
    assert math.isclose(got["a"]["ratio"], 2.0) and got["a"]["met"]
    assert math.isclose(got["a"]["ci_low"], 2.0) and math.isclose(got["a"]["ci_high"], 2.0)  # every draw is 2x
    rows = {r["method"]: r for r in got["rows"]}
    assert sorted(rows) == ["sae_latent", "sae_latent_output", "sae_x"]  # the rows readability reads, no names
    x = rows["sae_x"]
    assert x["not_below_leader"] and x["vs_leader"]["ci_low"] < 0 < x["vs_leader"]["ci_high"]
    assert math.isclose(x["vs_baselines"]["diffmean_last"]["diff"], 0.3)
    assert x["above_baselines"] == {"diffmean_last": True, "caa": True} and x["passes_b"]
    assert not rows["sae_latent"]["passes_b"]  # below the baselines
    assert got["b"] == {"met": True, "passing": ["sae_x"]}
    assert got["c"]["met"] and got["c"]["best_of_passing"] == 7 and x["read"] == 8
    page = render(got)
    assert "(a) selection: **met**" in page and "2.00x" in page and "| sae_x |" in page


def test_readings_not_met_say_by_how_much():
    got = readings(board(offset_sae=-0.6), readable(6), selected="sae_latent", contrast="sae_latent_output")
    assert math.isclose(got["a"]["ratio"], 0.5) and not got["a"]["met"]
    assert got["b"] == {"met": False, "passing": []} and not got["c"]["met"]
    x = {r["method"]: r for r in got["rows"]}["sae_x"]
    assert x["vs_leader"]["ci_high"] < 0 and x["aligned"] == 6  # resolved below the leader; 6 of 8 aligned
    assert "(b) score: **not met**" in render(got) and "No row passes (b)" in render(got)


def test_one_aligned_concept_short_is_not_met():
    got = readings(board(), readable(6))
    assert got["b"]["met"] and not got["c"]["met"] and got["c"]["best_of_passing"] == 6


def test_missing_rows_are_named():
    results = board()
    for blob in results.values():
        del blob["results"]["caa"]
    with pytest.raises(ValueError, match=r"no row for \['caa'\]"):
        readings(results, readable(7))


def test_main_reads_a_board_folder_and_writes_the_page(tmp_path):
    for concept, blob in board().items():
        (tmp_path / "concepts" / concept).mkdir(parents=True)
        (tmp_path / "concepts" / concept / "results.json").write_text(json.dumps({**blob, "complete": True}))
    (tmp_path / "leaderboard.json").write_text(json.dumps({"readability": readable(7)}))
    got = main([str(tmp_path), "--out", str(tmp_path / "readings.md")])
    assert got["b"]["passing"] == ["sae_x"]
    assert json.loads((tmp_path / "readings.json").read_text())["a"]["met"] is True
    assert "(c) reading: **met**" in (tmp_path / "readings.md").read_text()
    with pytest.raises(SystemExit, match="No leaderboard.json"):
        main([str(tmp_path / "concepts")])


def test_a_row_added_after_the_run_started_is_reported_and_never_counted():
    results, read = board(), readable(7)
    for i, c in enumerate(CONCEPTS):  # far above every row (it would lead and pass (b)), aligned everywhere
        results[c]["results"]["sae_new"] = cell([0.95] * N, 3 * (0.1 + 0.02 * i))
        read[c]["sae_new"] = {"ci95": [0.05, 0.2]}
    counted = readings(results, read)
    assert counted["leader"] == "sae_new" and "sae_new" in counted["b"]["passing"]  # the guard below bites
    got = readings(results, read, added=("sae_new", "never_ran"))
    assert got["leader"] == "lora" and got["b"]["passing"] == ["sae_x"]  # the registered rows' leader and reading
    assert got["c"]["best_of_passing"] == 7
    new = {r["method"]: r for r in got["rows"]}["sae_new"]
    assert new["added"] and new["passes_b"] and new["aligned"] == 8  # its figures are kept, marked
    assert list(got["added"]) == ["sae_new"] and math.isclose(got["added"]["sae_new"]["ratio"], 3.0)
    page = render(got)
    assert "| sae_new (added, not counted) |" in page
    assert (
        "added after the run started, not a reading: `sae_new` / `sae_latent` = 3.00x (CI 3.00-3.00x, 8 concepts)"
        in page
    )
