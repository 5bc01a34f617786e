"""The intervention contract, for every registered method that runs on a bare residual: strength is an argument,
a [batch] tensor steers each row at its own strength, rows at 0 are untouched, and a batched strength grid gives
the same logits and greedy text as one strength at a time."""

from __future__ import annotations

import pytest
import torch

from saebasis.core import hooks
from saebasis.core.generation import generate_grid, generate_timed
from saebasis.interventions import build
from saebasis.interventions.base import check_strength
from tests.conftest import D_MODEL

CONFIGS = {
    "sae_bias": {},
    "sae_adaptor": {"rank": 3, "act": "relu"},
    "sae_adaptor_sparse": {"rank": 2, "k_in": 8, "k_out": 4},
    "residual_adaptor": {"rank": 3, "act": "gelu"},
    "residual_vector": {},
    "clamp": {"latents": [1, 5], "values": [2.0, -1.0], "mode": "clamp"},
    "clamp_add": {"latents": [1, 5], "values": [2.0, -1.0], "mode": "add"},
    "diffmean": {},
    "sae_latent": {"k": 2},
    "sae_targeted": {"k": 2},
    "pca": {},
    "sara": {"mode": "stable"},
    "loreft": {"rank": 3},  # a peer trained by pyreft, applied natively: no library needed here
    "loreft_prompt": {"rank": 3, "positions": "f1+l2"},
}


def method_of(name: str) -> str:
    return {"clamp_add": "clamp", "sae_adaptor_sparse": "sae_adaptor", "loreft_prompt": "loreft"}.get(name, name)


def steered(name: str, sae):
    torch.manual_seed(0)
    iv = build(method_of(name), CONFIGS[name], D_MODEL, sae)
    if name == "sara":
        iv.fit_histories([torch.randn(7, D_MODEL)], [torch.randn(9, D_MODEL)])
    with torch.no_grad():
        for t in [*iv.parameters(), *(b for b in iv.buffers() if b.is_floating_point() and b.ndim > 0)]:
            if name not in ("sara",):
                t.normal_()
    return iv


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_per_row_strength_identity_at_zero_and_rows_independent(name, sae):
    iv = steered(name, sae)
    h = torch.randn(3, 5, D_MODEL)
    s = torch.tensor([0.0, 0.5, 2.0])
    out = iv(h, s)
    assert torch.equal(out[0], h[0])  # a row at strength 0 is exactly its input
    for i in (1, 2):
        iv.begin_generation(None)
        alone = iv(h[i : i + 1], float(s[i]))
        assert torch.allclose(out[i], alone[0], atol=1e-5), f"row {i} depends on the other rows"
    assert iv(h, torch.zeros(3)) is h and iv(h, 0.0) is h


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), True, "2", None, torch.tensor([[1.0]]), torch.tensor([1, 2])]
)
def test_one_rule_for_bad_strengths(bad, sae):
    with pytest.raises(ValueError, match="strength"):
        check_strength(bad)
    with pytest.raises(ValueError, match="strength"):
        steered("sae_bias", sae)(torch.randn(2, 3, D_MODEL), bad)


def test_per_row_strength_must_match_the_batch(sae):
    with pytest.raises(ValueError, match="per-row strength has 2 entries for a batch of 3"):
        steered("residual_vector", sae)(torch.randn(3, 4, D_MODEL), torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("name", ["sae_bias", "sae_adaptor", "residual_adaptor", "sara", "loreft", "loreft_prompt"])
def test_batched_strengths_match_sequential_logits(name, sae, model, batch):
    iv = steered(name, sae)
    iv = iv.to(torch.float32)
    strengths = torch.tensor([0.0, 0.5, 1.5])
    ids = batch["input_ids"][:1].repeat(3, 1)
    mask = batch["attention_mask"][:1].repeat(3, 1)
    with torch.no_grad():
        iv.begin_generation(mask)
        with hooks.steering(model, sae.hook, iv, strengths):
            together = model(input_ids=ids, attention_mask=mask).logits
        for i, s in enumerate(strengths.tolist()):
            iv.begin_generation(mask[i : i + 1])
            with hooks.steering(model, sae.hook, iv, s):
                alone = model(input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1]).logits
            assert torch.allclose(together[i], alone[0], atol=1e-5), f"strength {s}: batched != sequential"


def test_a_strength_grid_in_one_generate_call_gives_the_same_greedy_text(sae, model, tokenizer):
    iv = steered("residual_vector", sae)
    with torch.no_grad():
        iv.v.mul_(0.5)
    prompts = ["the movie", "a day in town"]
    grid, _ = generate_grid(model, tokenizer, prompts, iv, sae.hook, [0.0, 1.0, 3.0], max_new_tokens=5, batch_size=6)
    for s in (0.0, 1.0, 3.0):
        one = generate_timed(model, tokenizer, prompts, iv, sae.hook, 5, batch_size=2, strength=s).responses
        assert grid[s] == one, f"strength {s}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_bf16_residual_is_steered_in_fp32_and_returned_in_bf16(name, sae):
    """A model loaded in bf16 (`model.dtype=bfloat16`, the GPU benchmarks) hands its hooks bf16 residuals while an
    intervention keeps fp32 parameters: every method must accept them, return bf16, and agree with its fp32 result
    to bf16 precision."""
    iv = steered(name, sae)
    h = torch.randn(2, 5, D_MODEL)
    s = torch.tensor([0.5, 1.0])
    want = iv(h.bfloat16().float(), s)  # the same (rounded) input in fp32
    iv.begin_generation(None)
    got = iv(h.bfloat16(), s)
    assert got.dtype == torch.bfloat16 and got.shape == h.shape
    scale = want.abs().max()
    assert (got.float() - want).abs().max() <= 0.02 * scale, f"{name}: bf16 result differs from fp32 beyond rounding"
