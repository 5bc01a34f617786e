"""The SAE adaptor sparse on both sides: read set (k_in), write set (k_out), sparse inference path."""

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig

from saebasis.core.sae import SAEBasis
from saebasis.interventions import build
from saebasis.interventions.sae_rows import SupportCache, read_latents, write_rows
from saebasis.runs import load_run, save_run
from tests.conftest import D_MODEL, HOOK, tiny_sae

SPARSE = {"rank": 3, "k_in": 6, "k_out": 5, "act": "relu"}


def topk_sae(rescale: bool = True) -> SAEBasis:
    torch.manual_seed(1)
    sae = TopKSAE(TopKSAEConfig(d_in=D_MODEL, d_sae=64, k=5, rescale_acts_by_decoder_norm=rescale))
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(64, 1) + 0.5)  # rows of unequal norm: W_eff != W_dec
        sae.b_dec.normal_(0, 0.1)
    return SAEBasis(sae, HOOK)


def jumprelu_sae() -> SAEBasis:
    torch.manual_seed(2)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=D_MODEL, d_sae=64))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.threshold.uniform_(0, 0.3)
    return SAEBasis(sae, HOOK)


BASES = {"standard": tiny_sae, "topk": topk_sae, "topk_no_rescale": lambda: topk_sae(False), "jumprelu": jumprelu_sae}


def _sparse(sae, **cfg):
    iv = build("sae_adaptor", {**SPARSE, **cfg}, D_MODEL, sae)
    with torch.no_grad():
        for p in iv.parameters():
            p.normal_()
        iv.read_idx.copy_(torch.tensor([3, 9, 17, 30, 41, 63])[: iv.read_idx.numel()])
        iv.write_idx.copy_(torch.tensor([0, 5, 9, 22, 60]))
    return iv


@pytest.mark.parametrize("arch", sorted(BASES))
def test_read_latents_equal_the_dense_encoding(arch):
    sae = BASES[arch]()
    h = torch.randn(3, 7, D_MODEL) * 2
    idx = torch.tensor([1, 4, 8, 33, 50])
    z = sae.encode(h)
    assert (z[..., idx] != 0).any()
    assert torch.allclose(read_latents(sae, h, idx, SupportCache()), z[..., idx], atol=1e-5)
    rows = write_rows(sae, idx, SupportCache())
    dz = torch.randn(3, 7, 5)
    full = torch.zeros(3, 7, sae.d_sae).index_copy(-1, idx, dz)
    assert torch.allclose(dz @ rows, sae.decode(z + full) - sae.decode(z), atol=1e-5)  # the splice identity


@pytest.mark.parametrize("arch", sorted(BASES))
@pytest.mark.parametrize("strength", [1.0, -2.5])
def test_sparse_inference_path_equals_the_dense_splice(arch, strength):
    iv = _sparse(BASES[arch]())
    h = torch.randn(2, 5, D_MODEL) * 2
    out = iv(h, strength)
    assert not torch.allclose(out, h)
    assert torch.allclose(out, iv.dense_steer(h, strength), atol=1e-5)


def test_identity_at_init_and_per_row_strength():
    sae = topk_sae()
    iv = build("sae_adaptor", SPARSE, D_MODEL, sae)
    h = torch.randn(3, 4, D_MODEL)
    assert torch.equal(iv(h), h)
    iv = _sparse(sae)
    s = torch.tensor([0.0, 1.5, -1.0])
    out = iv(h, s)
    assert torch.equal(out[0], h[0])  # a row at strength 0 is exactly its input
    assert torch.allclose(out[1:2], iv(h[1:2], 1.5), atol=1e-6) and torch.allclose(out[2:], iv(h[2:], -1.0), atol=1e-6)
    assert iv(h, 0.0) is h


def test_describe_counts_parameters_and_latents_on_the_supports():
    iv = _sparse(tiny_sae())
    r, k_in, k_out = 3, 6, 5
    assert iv.describe() == {
        "n_params": k_in * r + r + r * k_out + k_out,
        "latents_read": k_in,
        "latents_written": k_out,
    }
    with torch.no_grad():
        iv.B[:, 1] = 0
        iv.b[1] = 0
        iv.A[2] = 0
    assert iv.describe()["latents_written"] == k_out - 1 and iv.describe()["latents_read"] == k_in - 1
    scores = iv.latent_scores()
    assert scores.shape == (64,) and set(scores.nonzero()[:, 0].tolist()) == {0, 9, 22, 60}
    dense = build("sae_adaptor", {"rank": 2}, D_MODEL, tiny_sae())
    assert dense.describe()["n_params"] == 64 * 2 + 2 + 2 * 64 + 64 and "read_idx" not in dense.state_dict()


def test_latent_change_is_zero_off_the_write_set_and_matches_the_encoding_change():
    sae = topk_sae()
    iv = _sparse(sae)
    h = torch.randn(6, D_MODEL)
    dz, how = iv.latent_change(h, sae, 0.5)
    off = torch.ones(64, dtype=torch.bool)
    off[iv.write_idx] = False
    assert how == "intervention" and dz.shape == (6, 64) and (dz[:, off] == 0).all() and (dz[:, ~off] != 0).any()


def test_reading_nothing_is_a_bias_on_the_written_latents():
    sae = topk_sae()
    iv = _sparse(sae, k_in=0)
    h = torch.randn(2, 3, D_MODEL)
    delta = iv(h) - h
    assert iv.describe()["latents_read"] == 0
    assert torch.allclose(delta, delta[:1, :1].expand_as(delta), atol=1e-5)  # the same shift at every token


def _train_steps(iv, steps=5, lr=0.05):
    opt = torch.optim.AdamW([p for p in iv.parameters() if p.requires_grad], lr=lr)
    target = torch.randn(D_MODEL)
    for _ in range(steps):
        h = torch.randn(4, 3, D_MODEL)
        ((iv(h) - h - target).pow(2).mean() + iv.penalty()).backward()
        opt.step()
        iv.proximal_step(opt)
        opt.zero_grad()
    return opt


def test_group_lasso_proximal_step_gives_exact_zero_columns():
    iv = build("sae_adaptor", {**SPARSE, "k_out": 8, "group_l1": 0.0}, D_MODEL, tiny_sae())
    opt = _train_steps(iv)
    assert iv.describe()["latents_written"] == 8
    iv.cfg.group_l1 = 1e9  # everything below the threshold: every column exactly 0
    iv.proximal_step(opt)
    assert (iv.B == 0).all() and (iv.b == 0).all() and iv.describe()["latents_written"] == 0
    # a moderate coefficient: the threshold formula, column by column
    iv = build("sae_adaptor", {**SPARSE, "k_out": 8, "group_l1": 0.0}, D_MODEL, tiny_sae())
    opt = _train_steps(iv)
    B, b = iv.B.detach().clone(), iv.b.detach().clone()
    st_B, st_b = opt.state[iv.B], opt.state[iv.b]
    g = opt.param_groups[0]
    D_B = (st_B["exp_avg_sq"] / (1 - g["betas"][1] ** float(st_B["step"]))).sqrt() + g["eps"]
    D_b = (st_b["exp_avg_sq"] / (1 - g["betas"][1] ** float(st_b["step"]))).sqrt() + g["eps"]
    d = (D_B.sum(0) + D_b) / (B.shape[0] + 1)
    norm = (B.pow(2).sum(0) + b.pow(2)).sqrt()
    lam = float((d * norm).median() / g["lr"])  # about half the columns fall below the threshold
    iv.cfg.group_l1 = lam
    iv.proximal_step(opt)
    scale = (1 - g["lr"] * lam / (d * norm)).clamp_min(0)
    assert torch.allclose(iv.B, B * scale) and torch.allclose(iv.b, b * scale)
    zero = scale == 0
    assert zero.any() and (~zero).any() and (iv.B[:, zero] == 0).all() and (iv.b[zero] == 0).all()
    assert iv.describe()["latents_written"] == int((~zero).sum())


def test_latents_written_never_exceed_k_out_while_training():
    iv = build("sae_adaptor", {**SPARSE, "group_l1": 1e-3}, D_MODEL, topk_sae())
    for _ in range(3):
        _train_steps(iv, steps=2)
        assert iv.describe()["latents_written"] <= 5
        dz, _ = iv.latent_change(torch.randn(4, D_MODEL), iv.sae)
        assert int((dz != 0).any(0).sum()) <= 5


def test_save_load_round_trip_keeps_the_supports(tmp_path):
    sae = topk_sae()
    iv = _sparse(sae)
    h = torch.randn(2, 5, D_MODEL)
    save_run(tmp_path / "r", iv, {"sae": None})
    loaded = load_run(tmp_path / "r", sae=sae).intervention
    assert torch.equal(loaded.read_idx, iv.read_idx) and torch.equal(loaded.write_idx, iv.write_idx)
    assert torch.equal(loaded(h), iv(h))


@pytest.mark.parametrize(
    "field,value", [("k_out", 0), ("k_in", -1), ("group_l1", -1.0), ("read_rule", "random"), ("k_out", 65)]
)
def test_bad_support_config_is_explained(field, value):
    with pytest.raises(ValueError, match=field if field != "k_out" or value == 0 else "exceed"):
        build("sae_adaptor", {field: value}, D_MODEL, tiny_sae())
