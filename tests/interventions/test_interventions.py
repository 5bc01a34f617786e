import pytest
import torch

from saebasis.interventions import REGISTRY, build
from saebasis.interventions.residual import sparse_code
from saebasis.runs import load_run, save_run
from tests.conftest import D_MODEL, tiny_sae

LEARNED = {
    "sae_bias": {},
    "sae_adaptor": {"rank": 3, "act": "relu", "l1_coef": 1e-3},
    "residual_adaptor": {"rank": 3, "act": "gelu"},
    "residual_vector": {},
    "clamp": {"latents": [1, 5], "values": [2.0, -1.0], "mode": "clamp"},
}


def _perturb(iv):
    with torch.no_grad():
        for p in iv.parameters():
            p.normal_()
    return iv


def test_every_method_is_registered():
    peers = {"lora", "caa", "loreft"}  # through their own libraries: tests/interventions/test_peers.py, test_loreft.py
    assert set(LEARNED) | {"diffmean", "pca", "sara", "sae_latent", "sae_targeted"} | peers == set(REGISTRY)


@pytest.mark.parametrize("method", sorted(LEARNED))
def test_identity_at_zero_strength(method, sae):
    iv = _perturb(build(method, LEARNED[method], D_MODEL, sae))
    h = torch.randn(2, 5, D_MODEL)
    assert iv(h, 0.0) is h


@pytest.mark.parametrize("method", ["sae_bias", "sae_adaptor", "residual_adaptor", "residual_vector"])
def test_identity_at_init(method, sae):
    iv = build(method, LEARNED[method], D_MODEL, sae)
    h = torch.randn(2, 5, D_MODEL)
    assert torch.equal(iv(h), h)


@pytest.mark.parametrize("method", ["sae_bias", "sae_adaptor", "residual_adaptor", "residual_vector"])
def test_gradients_reach_only_intervention_parameters(method, sae, model, batch):
    from saebasis.core import hooks

    iv = build(method, LEARNED[method], D_MODEL, sae)
    with hooks.attach(model, sae.hook, iv):
        model(**batch).logits.pow(2).mean().backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is None for p in sae.sae.parameters())
    trainable = [p for p in iv.parameters() if p.requires_grad]
    assert trainable and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


@pytest.mark.parametrize("method", sorted(LEARNED))
def test_save_load_bit_for_bit(method, sae, tmp_path):
    iv = _perturb(build(method, LEARNED[method], D_MODEL, sae))
    h = torch.randn(2, 5, D_MODEL)
    save_run(tmp_path / "r", iv, {"sae": None})
    assert torch.equal(load_run(tmp_path / "r", sae=sae).intervention(h), iv(h))


def test_clamp_sets_latents_and_keeps_error_term(sae):
    iv = build("clamp", {"latents": [3], "values": [7.0], "mode": "clamp"}, D_MODEL, sae)
    h = torch.randn(4, D_MODEL)[None]
    z = sae.encode(h)
    expected = z.clone()
    expected[..., 3] = 7.0
    assert torch.allclose(iv(h), sae.decode(expected) + sae.error(h), atol=1e-5)
    with pytest.raises(ValueError, match="out of range for an SAE with d_sae=64"):
        build("clamp", {"latents": [99], "values": [1.0]}, D_MODEL, sae)


def test_pullback_recovers_planted_latents():
    sae = tiny_sae()
    iv = build("residual_adaptor", {"rank": 2}, D_MODEL, sae)
    with torch.no_grad():
        iv.W_out.copy_(torch.stack([3 * sae.W_dec[7], -2 * sae.W_dec[42]]))
        iv.b_out.copy_(sae.W_dec[11])
    pb = iv.pullback()
    assert pb.write_cosine.shape == (3, 64) and pb.read_weights.shape == (64, 2) and pb.read_bias.shape == (2,)
    assert pb.write_cosine.abs().argmax(-1).tolist() == [7, 42, 11]
    assert pb.write_codes.abs().argmax(-1).tolist() == [7, 42, 11]
    assert set(iv.latent_scores().topk(3).indices.tolist()) == {7, 42, 11}
    bare = build("residual_adaptor", {"rank": 2}, D_MODEL, None)  # trained without an SAE, read through one later
    bare.load_state_dict(iv.state_dict())
    assert bare.latent_scores() is None and torch.allclose(bare.latent_scores(sae), iv.latent_scores())
    assert torch.allclose(pb.read_weights, sae.W_dec @ iv.W_in)


def test_sparse_code_of_a_decoder_row_is_one_hot():
    dictionary = torch.nn.functional.normalize(torch.randn(16, 8), dim=-1)
    codes = sparse_code(2.5 * dictionary[4:5], dictionary, k=3)
    assert codes.abs().argmax().item() == 4 and abs(codes[0, 4].item() - 2.5) < 1e-5


def test_mahalanobis_constraint_bounds_whitened_norm(sae):
    iv = build("residual_vector", {"mahalanobis_max": 1.0}, D_MODEL, sae)
    acts = torch.randn(500, D_MODEL) * torch.linspace(0.1, 3, D_MODEL)
    iv.whitener.fit(acts)
    with torch.no_grad():
        iv.v.normal_(0, 10)
    h = torch.randn(1, 3, D_MODEL)
    delta = iv(h) - h
    assert torch.all(iv.whitener.norm(delta) <= 1.0 + 1e-4)
    # the whitened norm penalises low-variance directions more than high-variance ones
    low, high = torch.zeros(D_MODEL), torch.zeros(D_MODEL)
    low[0], high[-1] = 1.0, 1.0
    assert iv.whitener.norm(low) > iv.whitener.norm(high)


@pytest.mark.parametrize(
    "field,value,match", [("rank", 0, "rank must be >= 1"), ("act", "swish", "act must be one of")]
)
def test_bad_config_is_explained(field, value, match, sae):
    with pytest.raises(ValueError, match=match):
        build("sae_adaptor", {field: value}, D_MODEL, sae)


def test_sae_methods_need_an_sae():
    with pytest.raises(ValueError, match="needs an SAE"):
        build("sae_adaptor", {}, D_MODEL, None)


ADDITIVE = ["sae_bias", "sae_adaptor", "residual_adaptor", "residual_vector"]


def _fitted(method, sae, **maha):
    iv = build(method, {**LEARNED[method], **maha}, D_MODEL, sae)
    iv.whitener.fit(torch.randn(400, D_MODEL) * torch.linspace(0.1, 3, D_MODEL))
    return iv


@pytest.mark.parametrize("method", ADDITIVE)
def test_mahalanobis_bound_holds_for_every_additive_method(method, sae):
    iv = _perturb(_fitted(method, sae, mahalanobis_max=0.5))
    h = torch.randn(2, 4, D_MODEL)
    assert iv.whitener.norm(iv(h, 3.0) - h).max() <= 0.5 + 1e-4
    assert iv(h, 0.0) is h


@pytest.mark.parametrize("method", ADDITIVE)
def test_mahalanobis_penalty_is_the_whitened_norm_of_the_change(method, sae):
    def own_l1():
        if method == "sae_adaptor":
            return iv.cfg.l1_coef * (iv.A.abs().sum() + iv.B.abs().sum())
        return iv.cfg.l1_coef * iv.b.abs().sum() if method == "sae_bias" else torch.zeros(())

    iv = _fitted(method, sae, mahalanobis_coef=2.0)
    h = torch.randn(2, 4, D_MODEL)
    assert torch.equal(iv(h), h)  # identity at init: the Mahalanobis term is zero
    assert torch.allclose(iv.penalty().detach(), own_l1().detach())
    _perturb(iv)
    iv.clear_penalty_state()
    delta = iv(h) - h
    penalty = iv.penalty()
    assert torch.allclose(penalty, 2.0 * iv.whitener.norm(delta).pow(2).mean() + own_l1(), rtol=1e-4)
    penalty.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in iv.parameters())


def test_mahalanobis_whitener_round_trips(sae, tmp_path):
    iv = _perturb(_fitted("sae_bias", sae, mahalanobis_max=0.5))
    h = torch.randn(2, 3, D_MODEL)
    save_run(tmp_path / "r", iv, {"sae": None})
    loaded = load_run(tmp_path / "r", sae=sae).intervention
    assert torch.equal(loaded.whitener.W, iv.whitener.W) and torch.equal(loaded(h), iv(h))


def test_folded_matches_steer_under_a_bound(sae):
    iv = _perturb(_fitted("residual_vector", sae, mahalanobis_max=0.5))
    h = torch.randn(1, 2, D_MODEL)
    assert torch.allclose(h + iv.whitener.constrain(3.0 * iv.folded()), iv(h, 3.0), atol=1e-5)


@pytest.mark.parametrize(
    "field,value", [("mahalanobis_coef", -1.0), ("mahalanobis_max", -0.5), ("mahalanobis_shrinkage", 0.0)]
)
def test_bad_mahalanobis_config_is_explained(field, value, sae):
    with pytest.raises(ValueError, match="mahalanobis"):
        build("sae_bias", {field: value}, D_MODEL, sae)


def test_clamp_add_mode_folds_to_the_decoder_rows(sae):
    iv = build("clamp", {"latents": [2, 9], "values": [1.5, -0.5], "mode": "add"}, D_MODEL, sae)
    h = torch.randn(1, 4, D_MODEL)
    z = sae.encode(h)
    z_new = z.clone()
    z_new[..., 2] += 2.0 * 1.5
    z_new[..., 9] += 2.0 * -0.5
    assert torch.allclose(
        iv(h, 2.0), sae.splice(h, z, z_new), atol=1e-5
    )  # the decoder is affine: adding folds to one vector
    assert set(iv.latent_scores().nonzero()[:, 0].tolist()) == {2, 9}


def test_clamp_with_no_latents_is_the_identity(sae):
    iv = build("clamp", {"mode": "clamp"}, D_MODEL, sae)
    h = torch.randn(2, 3, D_MODEL)
    assert torch.equal(iv(h), h)


def test_topk_entries_keeps_k_entries_and_only_they_get_gradient(sae):
    iv = _perturb(build("sae_adaptor", {"rank": 3, "topk_entries": 5}, D_MODEL, sae))
    A, B = iv.weights()
    assert int((A != 0).sum()) == 5 and int((B != 0).sum()) == 5
    iv(torch.randn(2, 3, D_MODEL)).sum().backward()
    assert (iv.A.grad[A == 0] == 0).all() and (iv.A.grad[A != 0] != 0).any()
    assert (iv.B.grad[B == 0] == 0).all() and (iv.B.grad[B != 0] != 0).any()


@pytest.mark.parametrize(
    "method, cfg",
    [
        ("sae_bias", {}),
        ("sae_bias", {"mahalanobis_max": 0.5}),
        ("clamp", {"latents": [2, 9], "values": [1.5, -0.5], "mode": "add"}),
    ],
)
def test_inference_reuses_the_folded_vector_and_follows_every_change(method, cfg, sae):
    iv = _perturb(_fitted(method, sae, **cfg) if cfg.get("mahalanobis_max") else build(method, cfg, D_MODEL, sae))
    h = torch.randn(2, 3, D_MODEL)
    with torch.no_grad():
        first = iv(h)
        assert torch.equal(first, iv(h)) and iv.folded_for_inference() is iv.folded_for_inference()  # memoised
    assert torch.equal(first, iv(h))  # same values as the grad path, bit for bit

    def expected(s):
        shift = s * iv.folded().to(h.dtype)
        bound = getattr(iv, "whitener", None)
        return h + (bound.constrain(shift) if bound is not None else shift)

    with torch.no_grad():
        assert torch.allclose(iv(h, 2.5), expected(2.5), atol=1e-6)  # strength is an argument: no memo key
        [t.mul_(1.5) for t in [*iv.parameters(), *iv.buffers()] if t.is_floating_point() and t.ndim < 2]
        assert torch.allclose(iv(h, 2.5), expected(2.5), atol=1e-6)  # never a stale vector


@pytest.mark.parametrize("nonneg", [False, True])
def test_sae_bias_proximal_step_is_the_soft_threshold_in_adams_metric(nonneg, sae):
    iv = build("sae_bias", {"l1_coef": 0.01, "nonneg": nonneg}, D_MODEL, sae)
    opt = torch.optim.AdamW(iv.parameters(), lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    b = torch.zeros(sae.d_sae)
    b[:4] = torch.tensor([0.5, -0.5, 1e-5, 0.3])
    v = torch.zeros(sae.d_sae)
    v[:4] = torch.tensor([1.0, 4.0, 1.0, 0.0])  # latent 3 never had a gradient
    with torch.no_grad():
        iv.b.copy_(b)
    opt.state[iv.b] = {"step": torch.tensor(2.0), "exp_avg": torch.zeros_like(v), "exp_avg_sq": v.clone()}
    iv.proximal_step(opt)
    tau = 0.1 * 0.01 / ((v / (1 - 0.99**2)).sqrt() + 1e-8)
    expected = (b - tau).clamp_min(0) if nonneg else b.sign() * (b.abs() - tau).clamp_min(0)
    assert torch.equal(iv.b.detach(), expected)
    assert iv.b[2] == 0 and iv.b[3] == 0 and (iv.b[1] == 0) == nonneg  # below threshold / no gradient: exactly 0
    assert iv.penalty().requires_grad is False  # the L1 is reported, not differentiated


def test_sae_bias_penalty_mode_keeps_the_l1_in_the_loss(sae):
    iv = _perturb(build("sae_bias", {"l1_coef": 0.01, "l1_mode": "penalty"}, D_MODEL, sae))
    before = iv.b.detach().clone()
    iv.penalty().backward()
    assert torch.equal(iv.b.grad, 0.01 * before.sign())
    iv.proximal_step(torch.optim.AdamW(iv.parameters()))  # no-op in this mode
    assert torch.equal(iv.b.detach(), before)
    with pytest.raises(ValueError, match="l1_mode"):
        build("sae_bias", {"l1_mode": "lasso"}, D_MODEL, sae)


@pytest.mark.parametrize("mode", ["proximal", "penalty"])
def test_sae_bias_restricted_to_allowed_latents_stays_zero_elsewhere(mode, sae):
    iv = _perturb(build("sae_bias", {"l1_coef": 1e-4, "l1_mode": mode, "alive_only": True}, D_MODEL, sae))
    allowed = torch.arange(sae.d_sae) % 3 == 0
    iv.restrict_to(allowed)
    assert (iv.b[~allowed] == 0).all() and (iv.b[allowed] != 0).all()
    opt = torch.optim.AdamW(iv.parameters(), lr=0.1)
    for _ in range(3):
        (iv(torch.randn(2, 3, D_MODEL)).pow(2).sum() + iv.penalty()).backward()
        opt.step()
        iv.proximal_step(opt)
        opt.zero_grad()
    assert (iv.b[~allowed] == 0).all() and (iv.b[allowed] != 0).any()
    with pytest.raises(ValueError, match="bool mask of shape"):
        iv.restrict_to(torch.ones(sae.d_sae))


def test_mahalanobis_covariance_leaves_the_attention_sink_out(sae, monkeypatch):
    """prepare() fits Sigma on every token but each text's first: a planted first token 1000x the others' norm
    changes nothing."""
    import saebasis.interventions.mahalanobis as maha
    from saebasis.interventions.mahalanobis import inverse_sqrt_cov

    torch.manual_seed(0)
    rest = [torch.randn(6, D_MODEL) for _ in range(5)]
    sink = torch.zeros(1, D_MODEL)
    sink[0, 0] = 1000.0
    monkeypatch.setattr(maha, "collect", lambda *a, **k: [torch.cat([sink, r]) for r in rest])
    iv = build("residual_vector", {"mahalanobis_coef": 1.0}, D_MODEL, sae)
    stack = type("Stack", (), {"model": None, "tokenizer": None, "hook": sae.hook})()
    concept = type("Concept", (), {"neutral": ["a"] * 5, "pairs": []})()
    iv.prepare(stack, concept, 32)
    want = inverse_sqrt_cov(torch.cat(rest), 0.1).float()
    assert torch.allclose(iv.whitener.W, want, atol=1e-5)
    with_sink = inverse_sqrt_cov(torch.cat([torch.cat([sink, r]) for r in rest]), 0.1).float()
    assert not torch.allclose(with_sink, want, atol=1e-2)  # the sink would have changed Sigma: the test can fail
