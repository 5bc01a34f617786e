import pytest
import torch

from saebasis import hooks
from saebasis.config import compose
from saebasis.interventions import build
from saebasis.interventions.sara import SARA, reduced, sara_delta
from saebasis.runs import load_run
from saebasis.train.fit import fit_baseline

D = 32


def test_reduced_history_shapes_and_full_rank_reconstruction():
    x = torch.randn(5, D)  # T=5 tokens
    r = reduced(x, 3)
    assert r.shape == (D, 3)
    u, s, vh = torch.linalg.svd(x.T, full_matrices=False)
    full = reduced(x, 5)  # full rank: R V^T == X
    assert torch.allclose(full @ vh, x.T, atol=1e-5)
    assert torch.allclose(full, u * s, atol=1e-6)


def test_sara_hand_computed_three_token_example():
    # d_model = 2, histories are already diagonal so the SVD is readable by hand.
    x_o = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # T=3: X_o = [[3,0,0],[0,1,0]]
    x_a = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # U = I, S = (2, 1)
    x_r = torch.tensor([[0.0, 2.0], [1.0, 0.0]])  # neuron 1 dominates: U = [[0,1],[1,0]] up to sign, S = (2, 1)
    r_o, r_a, r_r = reduced(x_o, 2, True), reduced(x_a, 2, True), reduced(x_r, 2, True)
    # R_o = [[3,0],[0,1]], R_a = [[2,0],[0,1]], R_r = [[0,1],[2,0]]
    assert torch.allclose(r_o, torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(r_r, torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    # neuron 0: cos((3,0),(2,0)) = 1, cos((3,0),(0,1)) = 0 -> Delta 1; neuron 1: cos((0,1),(0,1)) = 1, cos((0,1),(2,0)) = 0 -> 1
    assert torch.allclose(sara_delta(r_o, r_a, r_r), torch.tensor([1.0, 1.0]))
    # swapping attract and repel flips the sign
    assert torch.allclose(sara_delta(r_o, r_r, r_a), torch.tensor([-1.0, -1.0]))


@pytest.mark.parametrize("mode", ["faithful", "stable"])
def test_sara_attract_equals_repel_is_identity(mode):
    hist = [torch.randn(4, D), torch.randn(6, D)]
    sara = build("sara", {"mode": mode, "strength": 2.0}, D).fit(hist, hist)
    h = torch.randn(1, 5, D)
    assert torch.equal(sara(h), h)


def test_sara_faithful_decodes_with_k1_and_rejects_batches(model, tokenizer):
    sara = build("sara", {"mode": "faithful", "strength": 1.0}, D).fit([torch.randn(6, D)], [torch.randn(6, D)])
    ids = torch.tensor([[4, 5, 6, 7]])
    with hooks.attach(model, "blocks.1.hook_resid_pre", sara):
        model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert sara.k_seen == [4, 1, 1]  # prefill k = T_o = 4, then one token per cached step
    with pytest.raises(ValueError, match="faithful is batch size 1"):
        sara(torch.randn(2, 3, D))


def test_sara_stable_is_fixed_after_prompt():
    sara = build("sara", {"mode": "stable", "strength": 1.0}, D).fit([torch.randn(8, D)], [torch.randn(8, D)])
    h = torch.randn(2, 6, D)
    sara(h)
    delta = sara._delta.clone()
    step = torch.randn(2, 1, D)
    out = sara(step)  # decode step: Delta unchanged
    assert torch.equal(sara._delta, delta)
    assert torch.allclose(out, step * (1 + delta[:, None, :]))


def test_diffmean_recovers_planted_vector():
    neg = torch.randn(20, D)
    v = torch.randn(D)
    iv = build("diffmean", {}, D).fit(neg + v, neg)
    assert torch.allclose(iv.v, v, atol=1e-5)
    h = torch.randn(1, 3, D)
    assert torch.allclose(iv(h), h + v, atol=1e-5)


def test_pca_recovers_planted_direction_with_sign():
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(D), dim=0)
    neg = torch.randn(50, D)
    pos = neg + (2.0 + 0.1 * torch.randn(50, 1)) * u + 0.01 * torch.randn(50, D)
    iv = build("pca", {}, D).fit(pos, neg)
    direction = torch.nn.functional.normalize(iv.v, dim=0)
    assert direction @ u > 0.99 and abs(iv.v.norm() - 2.0) < 0.1
    iv_flipped = build("pca", {}, D).fit(neg, pos)
    assert torch.nn.functional.normalize(iv_flipped.v, dim=0) @ u < -0.99


@pytest.mark.parametrize("method", ["diffmean", "pca", "sara"])
def test_fit_baseline_end_to_end_round_trip(method, concept_dir, tmp_path, sae):
    sae.sae.save_model(tmp_path / "sae")
    hook = "blocks.2.hook_resid_pre" if method == "sara" else "blocks.1.hook_resid_post"
    cfg = compose("fit_baseline", [
        "model=tiny", f"intervention={method}", f"data={concept_dir}", f"sae.path={tmp_path / 'sae'}",
        "sae.hook=blocks.1.hook_resid_post", "sae.check=false", f"hook={hook}", f"run_dir={tmp_path / 'run'}",
    ])
    result = fit_baseline(cfg)
    run = load_run(result["run_dir"])
    assert run.cfg["method"] == method and run.metrics["n_pairs"] == 6
    h = torch.randn(1, 4, D)
    run.intervention.strength = 0.0
    assert run.intervention(h) is h  # strength 0: identity
    run.intervention.strength = 1.0
    scores = run.intervention.latent_scores()
    assert scores is not None and scores.shape == (64,)


def test_fit_baseline_validates_before_heavy_work(concept_dir, tmp_path):
    from saebasis.validate import ConfigError

    base = ["model=tiny", "sae=none", f"data={concept_dir}", f"run_dir={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match="layer 7 is out of range"):
        fit_baseline(compose("fit_baseline", base + ["hook=blocks.7.hook_resid_post"]))
    with pytest.raises(ConfigError, match="must be a finite number"):
        fit_baseline(compose("fit_baseline", base + ["hook=blocks.1.hook_resid_post", "intervention.strength=nan"]))
    assert not (tmp_path / "run").exists()
