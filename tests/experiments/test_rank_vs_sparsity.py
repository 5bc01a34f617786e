"""The rank-vs-sparsity experiment: matched budgets are honest, the multirun trains, the summary gives a verdict."""

import subprocess
import sys
from pathlib import Path

import pytest

from saebasis.config import compose, to_dict
from saebasis.interventions import build
from tests.conftest import tiny_sae

ROOT = Path(__file__).resolve().parents[2]
BUDGETS = sorted(p.stem for p in (ROOT / "configs" / "budget").glob("*.yaml"))
NOMINAL = {"1k": 1_000, "4k": 4_000, "16k": 16_000, "64k": 64_000}


@pytest.fixture(scope="module")
def default_width_sae():
    return tiny_sae(d_in=576, d_sae=4096)  # the embedded default's shapes: d_model 576, d_sae 4096


@pytest.mark.parametrize("budget", BUDGETS)
def test_each_budget_matches_its_parameter_count(budget, default_width_sae):
    cfg = to_dict(compose("train", ["experiment=rank_vs_sparsity", f"+budget={budget}"]))
    icfg = dict(cfg["intervention"])
    iv = build(icfg.pop("method"), icfg, 576, default_width_sae)
    n, nominal = iv.describe()["n_params"], NOMINAL[budget.rsplit("_", 1)[1]]
    if budget.startswith("sae_bias"):
        assert n == 4096  # its size is the latents it writes (measured after training)
    elif budget == "residual_1k":
        assert n == 576  # the steering vector: the residual family's smallest member
    elif budget == "sae_lowrank_16k":
        assert n == 12_289  # rank 1: the dense SAE-basis family starts here
    else:
        assert 0.9 * nominal <= n <= 1.1 * nominal, (budget, n)
    assert cfg["n_samples"] == 0 and cfg["cache_activations"]


def test_tiny_multirun_and_summary(tmp_path, concept_dir, tiny_stack):
    out = tmp_path / "multirun"
    args = [
        "train",
        "-m",
        "experiment=rank_vs_sparsity",
        *tiny_stack,
        "batch_size=2",
        "max_len=24",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={out}",
        "+budget=residual_4k,sae_lowrank_16k,sae_sparse_1k,sae_bias_1k",
        f"data={concept_dir}",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "saebasis.cli", *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from saebasis.experiments.rank_vs_sparsity import summarize

    result = summarize(out)
    assert {r["family"] for r in result["rows"]} == {"residual", "sae_lowrank", "sae_sparse", "sae_bias"}
    assert (out / "rank_vs_sparsity.png").exists() and "Verdict (val/loss):" in (
        out / "rank_vs_sparsity.md"
    ).read_text()
    sparse = next(r for r in result["rows"] if r["family"] == "sae_sparse")
    assert sparse["latents_read"] <= 64 and sparse["latents_written"] <= 64
    judged = summarize(
        out,
        "score",
        judged=True,
        overrides=[
            *tiny_stack,
            "n_val=2",
            "n_test=2",
            "n_neutral=2",
            "max_new_tokens=3",
            "batch_size=4",
            "strength_search.max_steps=1",
        ],
    )
    assert all(0.0 <= r["score"] <= 1.0 and r["strength"] > 0 for r in judged["rows"])  # every run scored by compare
    assert (
        set(judged["ci_by_metric"]) == {"val/loss", "score"}
        and "Verdict on score" in (out / "rank_vs_sparsity.md").read_text()
    )
    assert (out / "judged" / concept_dir.name / "results.json").exists()
