import pytest
import torch

from saebasis.core import hooks
from saebasis.core.sae import SAEBasis, check_compat
from tests.conftest import D_MODEL, tiny_sae


def test_splice_with_unchanged_latents_returns_input_exactly(sae):
    h = torch.randn(2, 5, D_MODEL) * 3
    z = sae.encode(h)
    assert torch.equal(sae.splice(h, z, z.clone()), h)


def test_splice_keeps_error_term(sae):
    h = torch.randn(2, 5, D_MODEL)
    z = sae.encode(h)
    z_new = z.clone()
    z_new[..., 3] += 2.0
    expected = sae.decode(z_new) + sae.error(h)
    assert torch.allclose(sae.splice(h, z, z_new), expected, atol=1e-5)


def test_encode_decode_shapes(sae):
    h = torch.randn(2, 5, D_MODEL)
    assert sae.encode(h).shape == (2, 5, sae.d_sae)
    assert sae.decode(sae.encode(h)).shape == h.shape


def test_save_load_round_trip(sae, tmp_path):
    sae.sae.save_model(tmp_path / "sae")
    loaded = SAEBasis.load(str(tmp_path / "sae"))
    h = torch.randn(3, D_MODEL)
    assert loaded.hook == sae.hook
    assert torch.equal(loaded.encode(h), sae.encode(h))


def test_missing_sae_folder_is_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="needs cfg.json and sae_weights.safetensors"):
        SAEBasis.load(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a release"):
        SAEBasis.load(str(tmp_path / "nope"))


def test_width_mismatch_is_an_error(model, tokenizer):
    wrong = tiny_sae(d_in=D_MODEL * 2)
    with pytest.raises(ValueError, match="SAE/model width mismatch.*d_in=64.*d_model=32"):
        check_compat(wrong, model, tokenizer, ["the movie"])


def _fitted_sae(model, batch, hook):
    """An SAE whose decoder spans the activations at `hook` exactly (identity-like, d_sae = 2 d_model)."""
    sae = tiny_sae(hook=hook)
    with torch.no_grad():
        eye = torch.eye(D_MODEL)
        sae.sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.sae.b_enc.zero_()
        sae.sae.b_dec.zero_()
    return sae


def test_compat_check_passes_fitted_and_warns_on_mismatch(model, tokenizer):
    texts = ["i love this movie", "the weather was awful and bad", "a great day"]
    good = _fitted_sae(model, None, "blocks.1.hook_resid_post")
    report = check_compat(good, model, tokenizer, texts)
    assert report.explained_variance > 0.999 and abs(report.ce_loss_recovered - 1) < 1e-3
    random_sae = tiny_sae(hook="blocks.1.hook_resid_post", seed=3)
    with pytest.warns(UserWarning, match="does not fit this model's activations"):
        check_compat(random_sae, model, tokenizer, texts)
    assert all(not b._forward_hooks and not b._forward_pre_hooks for b in hooks.blocks(model))


def test_compat_ce_from_the_reused_residual_equals_splicing_with_a_hook(model, tokenizer):
    """check_compat re-runs only the blocks after the hook (skip_to_hook); the CE must equal a full forward
    pass with the SAE spliced in by a hook at every position but the first."""
    from saebasis.core.sae import _ce_sum

    texts = ["i love this movie", "the weather was awful and bad today", "a great day"]
    sae = tiny_sae(hook="blocks.1.hook_resid_post", seed=3)
    with pytest.warns(UserWarning):
        report = check_compat(sae, model, tokenizer, texts, batch_size=2)
    sums = {"spliced": [0.0, 0], "zero": [0.0, 0], "clean": [0.0, 0]}
    for start in (0, 2):
        tokenizer.padding_side = "right"
        batch = tokenizer(texts[start : start + 2], return_tensors="pt", padding=True)
        tokenizer.padding_side = "left"
        kept = list(range(1, batch["input_ids"].shape[1]))
        for name, fn in (
            ("clean", lambda x: x),
            ("spliced", lambda x: sae.decode(sae.encode(x))),
            ("zero", torch.zeros_like),
        ):
            with torch.no_grad(), hooks.attach(model, sae.hook, fn, positions=kept):
                total, count = _ce_sum(model, dict(batch))
            sums[name][0] += total
            sums[name][1] += count
    for name in sums:
        assert getattr(report, f"ce_loss_{name}") == pytest.approx(sums[name][0] / sums[name][1], rel=1e-5)
