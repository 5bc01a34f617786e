"""Two readability tables side by side: counts and means on the cells both read."""

import json

import pytest

from saebasis.interpret.readability_compare import compare, main

A = {
    "ocean": {"bias": {"diff": 0.05, "ci95": [0.01, 0.1]}, "adaptor": {"diff": 0.01, "ci95": [-0.02, 0.04]}},
    "law": {"bias": {"diff": 0.02, "ci95": [-0.01, 0.05]}, "adaptor": {"diff": None, "ci95": None}},
    "only_a": {"bias": {"diff": 0.3, "ci95": [0.1, 0.5]}},
}
B = {
    "ocean": {"bias": {"diff": 0.08, "ci95": [0.02, 0.12]}, "adaptor": {"diff": 0.04, "ci95": [0.01, 0.07]}},
    "law": {"bias": {"diff": 0.01, "ci95": [-0.02, 0.04]}, "adaptor": {"diff": 0.02, "ci95": [0.0, 0.05]}},
}


def test_compare_counts_only_cells_both_read():
    got = compare(A, B)
    assert got["methods"]["bias"] == {
        "concepts": 2,
        "aligned_a": 1,
        "aligned_b": 1,
        "aligned_both": 1,
        "mean_diff_a": pytest.approx(0.035),
        "mean_diff_b": pytest.approx(0.045),
        "b_higher": 1,
    }
    assert got["methods"]["adaptor"]["concepts"] == 1  # law: no alignment in A (no reading), left out
    assert got["methods"]["adaptor"]["aligned_b"] == 1 and got["methods"]["adaptor"]["aligned_a"] == 0
    assert got["total"] == {"concepts": 3, "aligned_a": 1, "aligned_b": 2, "aligned_both": 1}


def test_no_shared_cell_is_refused():
    with pytest.raises(ValueError, match="share no"):
        compare(A, {"space": B["ocean"]})


def test_main_writes_the_page_with_both_saes_quality(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"readability": A}))
    (tmp_path / "b.json").write_text(json.dumps({"readability": B}))
    (tmp_path / "qa.json").write_text(json.dumps({"explained_variance": 0.89, "l0": 31.4, "train_time_s": 691.5}))
    (tmp_path / "qb.json").write_text(json.dumps({"explained_variance": 0.91, "l0": 32.0}))
    main(
        [str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--names", "4096", "16384", "--quality"]
        + [str(tmp_path / "qa.json"), str(tmp_path / "qb.json"), "--out", str(tmp_path / "w.md")]
    )
    page = (tmp_path / "w.md").read_text()
    assert "aligned (alignment CI above 0) 1 with 4096, 2 with 16384, 1 with both" in page
    assert (
        "| 4096 | 0.890 | 31.400 | - | - | 692 |" in page and "| bias | 2 | 1 | 1 | 1 | +0.035 | +0.045 | 1/2 |" in page
    )
    assert json.loads((tmp_path / "w.json").read_text())["total"]["aligned_b"] == 2
