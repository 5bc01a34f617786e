"""saebasis.experiments.kout_curve: the verdict follows the rule it states, on hand-built rows."""

import pytest

from saebasis.experiments import kout_curve as kc


def row(method, score, lo, hi, kl, l0, params=100, strength=1.0):
    return {
        "method": method,
        "score": score,
        "ci_low": lo,
        "ci_high": hi,
        "kl_neutral": kl,
        "latent_l0": l0,
        "params": params,
        "strength": strength,
    }


def test_verdict_needs_few_latents_a_score_in_the_dense_ci_and_a_kl_no_worse_than_the_bias(tmp_path):
    rows = [
        row("sae_adaptor_lowrank", 0.78, 0.74, 0.80, 0.6, 4094),
        row("sae_bias", 0.65, 0.56, 0.73, 0.12, 338),
        row("kout_8", 0.70, 0.6, 0.75, 0.05, 8),
        row("kout_32", 0.75, 0.7, 0.8, 0.10, 32),
        row("kout_64", 0.77, 0.72, 0.8, 0.30, 64),
        row("kout_128", 0.79, 0.75, 0.82, 0.05, 128),
    ]
    c = kc.curve(rows)
    assert [p["method"] for p in c["points"]] == ["kout_8", "kout_32", "kout_64", "kout_128"]
    assert c["target_met_by"] == ["kout_32"]  # kout_8 scores below the CI, kout_64's KL is worse, kout_128 writes > 64
    assert "met by kout_32" in kc.markdown(c)
    kc.plot(c, tmp_path / "k.png")
    assert (tmp_path / "k.png").stat().st_size > 0


def test_missing_references_are_explained():
    with pytest.raises(ValueError, match="experiment=kout_curve"):
        kc.curve([row("kout_8", 0.7, 0.6, 0.75, 0.05, 8)])
