"""SAE-targeted steering: the effect approximator recovers a planted linear effect map, its solve hits the target,
FGAA's filters, the effects measured on a tiny model (the same-pass read equals an unsteered re-read), the cache,
and fit-baseline end to end."""

from __future__ import annotations

import pytest
import torch

from saebasis.config import compose
from saebasis.core import hooks
from saebasis.interventions import build
from saebasis.interventions.base import FitData
from saebasis.interventions.sae_targeted import (
    EffectApproximator,
    SAETargetedConfig,
    _continuation_codes,
    antithetic_directions,
    fgaa_target,
    fit_approximator,
    load_or_fit,
    measure_effects,
    unsteered,
)
from saebasis.runs import load_run
from saebasis.training.fit import fit_baseline
from tests.conftest import D_MODEL, D_SAE

SMALL = dict(n_directions=8, new_tokens=3, n_prompts=1, batch_size=4, k=2, max_density=1.0)


def planted(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(D_SAE, D_MODEL, generator=g), torch.randn(D_SAE, generator=g)  # W [d_sae, d_model], b [d_sae]


def test_fit_recovers_a_planted_linear_effect_map_and_its_bias():
    W, b = planted()
    V = antithetic_directions(256, D_MODEL, seed=1) * 3.0  # [n, d_model], norm 3
    even = torch.randn(D_SAE)  # an even (norm-only) effect: at a fixed norm the bias must absorb it
    effects = lambda x: x @ W.T + b + even * x.norm(dim=-1, keepdim=True) ** 2 / 9
    W_fit, b_fit, r2 = fit_approximator(effects, V, ridge=1e-8)
    assert torch.allclose(W_fit, W, atol=1e-3) and torch.allclose(b_fit, b + even, atol=1e-3)
    assert r2 > 0.9999


def test_fit_with_noise_is_close_and_scores_the_held_out_pairs():
    W, b = planted()
    V = antithetic_directions(1024, D_MODEL, seed=2)
    noise = torch.Generator().manual_seed(3)
    W_fit, b_fit, r2 = fit_approximator(
        lambda x: x @ W.T + b + 0.05 * torch.randn(len(x), D_SAE, generator=noise), V, 1e-3
    )
    assert (W_fit - W).norm() / W.norm() < 0.1 and 0.9 < r2 < 1.0


def test_solve_hits_a_reachable_target_and_is_least_squares_otherwise():
    W, b = planted()
    approx = EffectApproximator(W, b, torch.zeros(D_SAE, dtype=torch.bool), {})
    v_star = torch.randn(D_MODEL)
    target = approx.predict(v_star)
    assert torch.allclose(approx.solve(target, 0.0), v_star, atol=1e-4)  # pinv: exact on W's range
    assert torch.allclose(approx.solve(target, 1e-8), v_star, atol=1e-3)  # a tiny ridge: the same
    other = torch.randn(D_SAE)  # not in W's range: the residual is orthogonal to it
    v = approx.solve(other, 0.0)
    assert W.T @ (approx.predict(v) - other) == pytest.approx(torch.zeros(D_MODEL), abs=1e-3)
    assert approx.solve(target, 10.0).norm() < v_star.norm()  # the ridge shrinks


def test_fgaa_target_drops_dense_and_bos_latents_and_keeps_the_top_k():
    cfg = SAETargetedConfig(k=2, max_density=0.1)
    contrast = torch.zeros(8)
    contrast[[1, 3, 5, 6]] = torch.tensor([9.0, 8.0, 2.0, 1.0])
    density = torch.zeros(8)
    density[1] = 0.5  # dense: dropped
    bos = torch.zeros(8, dtype=torch.bool)
    bos[3] = True  # fires on the first token: dropped
    idx, values = fgaa_target(contrast, density, bos, cfg)
    assert idx.tolist() == [5, 6] and values.tolist() == [2.0, 1.0]
    assert fgaa_target(contrast, density, bos, SAETargetedConfig(k=2, max_density=0.1, drop_bos=False))[0].tolist() == [
        3,
        5,
    ]
    with pytest.raises(ValueError, match="only 2 latents rise"):
        fgaa_target(contrast, density, bos, SAETargetedConfig(k=3, max_density=0.1))


def test_fit_steers_towards_the_solved_vector_at_diffmeans_norm(sae):
    W, b = planted()
    iv = build("sae_targeted", {"k": 3, "max_density": 1.0, "drop_bos": False}, D_MODEL, sae)
    iv.use_approximator(EffectApproximator(W, b, torch.zeros(D_SAE, dtype=torch.bool), {"approximator_r2": 1.0}))
    g = torch.Generator().manual_seed(0)
    pos = [torch.randn(5, D_MODEL, generator=g) + 2 for _ in range(4)]
    neg = [torch.randn(5, D_MODEL, generator=g) for _ in range(4)]
    iv.fit(FitData(pos, neg, [torch.randn(6, D_MODEL, generator=g)]))
    contrast = sae.encode(torch.cat(pos)).mean(0) - sae.encode(torch.cat(neg)).mean(0)
    assert set(iv.latents.tolist()) == set(contrast.topk(3).indices.tolist())
    target = torch.zeros(D_SAE)
    target[iv.latents] = iv.gains
    u = iv._approx.solve(target, iv.cfg.solve_ridge)
    diffmean = torch.cat([p.mean(0, keepdim=True) for p in pos]).mean(0) - torch.cat(
        [n.mean(0, keepdim=True) for n in neg]
    ).mean(0)
    assert torch.allclose(iv.folded(), u / u.norm() * diffmean.norm(), atol=1e-5)
    h = torch.randn(2, 3, D_MODEL)
    assert torch.allclose(iv(h, 2.0), h + 2.0 * iv.folded(), atol=1e-6) and iv(h, 0.0) is h
    assert int((iv.latent_scores() > 0).sum()) == 3 and iv.describe()["approximator_r2"] == 1.0


def test_fit_without_an_approximator_names_the_fix(sae):
    iv = build("sae_targeted", {}, D_MODEL, sae)
    with pytest.raises(ValueError, match="prepare"):
        iv.fit(FitData([torch.randn(2, D_MODEL)], [torch.randn(2, D_MODEL)], []))
    with pytest.raises(ValueError, match="even"):
        build("sae_targeted", {"n_directions": 7}, D_MODEL, sae)


def test_effects_read_in_the_steered_pass_equal_an_unsteered_reread(model, tokenizer, sae):
    cfg = SAETargetedConfig(**SMALL)
    ids = tokenizer("the movie", return_tensors="pt")["input_ids"]
    V = torch.randn(2, D_MODEL) * 3
    codes, _, _ = _continuation_codes(model, sae, sae.hook, ids, V, cfg)
    for row in range(2):  # re-generate row by row, then read the written tokens with no steering attached
        seq = ids
        with hooks.attach(model, sae.hook, lambda h, v=V[row]: h + v):
            for _ in range(cfg.new_tokens + 1):
                seq = torch.cat([seq, model(input_ids=seq).logits[:, -1:].argmax(-1)], 1)
        h = hooks.run_to_hook(model, sae.hook, input_ids=seq)[0, ids.shape[1] : ids.shape[1] + cfg.new_tokens]
        assert torch.allclose(codes[row], sae.encode(h).mean(0), atol=1e-4)


def test_measured_effect_of_a_zero_direction_is_zero(model, tokenizer, sae):
    cfg = SAETargetedConfig(**SMALL)
    base = unsteered(model, tokenizer, sae, sae.hook, cfg)
    V = torch.zeros(3, D_MODEL)
    V[1] = 40 * torch.randn(D_MODEL)
    effects = measure_effects(model, tokenizer, sae, sae.hook, V, cfg, base)
    assert effects.shape == (3, D_SAE) and float(base["norm"]) > 0
    assert effects[0].abs().max() < 1e-4 and effects[1].abs().max() > 1e-2


def test_approximator_is_cached_by_model_sae_hook_and_settings(model, tokenizer, sae, tmp_path, monkeypatch):
    monkeypatch.setenv("SAEBASIS_CACHE", str(tmp_path))
    cfg = SAETargetedConfig(**SMALL)
    first = load_or_fit(model, tokenizer, sae, sae.hook, cfg)
    assert len(list((tmp_path / "sae_targeted").iterdir())) == 1
    again = load_or_fit(model, tokenizer, sae, sae.hook, cfg)
    assert torch.equal(first.W, again.W) and torch.equal(first.b, again.b) and again.info == first.info
    assert first.info["tokens_read"] == 8 * 1 * 3 and "fit_seconds" in first.info
    load_or_fit(model, tokenizer, sae, sae.hook, SAETargetedConfig(**{**SMALL, "radius": 0.25}))
    assert len(list((tmp_path / "sae_targeted").iterdir())) == 2


def test_fit_baseline_end_to_end_round_trip(concept_dir, tmp_path, tiny_stack, monkeypatch):
    monkeypatch.setenv("SAEBASIS_CACHE", str(tmp_path / "cache"))
    overrides = [f"intervention.{k}={v}" for k, v in SMALL.items()]
    cfg = compose(
        "fit_baseline",
        [*tiny_stack, "experiment=sae_targeted", f"data={concept_dir}", *overrides, f"run_dir={tmp_path / 'run'}"],
    )
    result = fit_baseline(cfg)
    assert "approximator_r2" in result and len(result["latents"]) == 2
    run = load_run(result["run_dir"])
    h = torch.randn(1, 4, D_MODEL)
    assert torch.equal(run.intervention(h), result["run"].intervention(h))  # saved then loaded: bit for bit
    assert torch.equal(run.intervention.folded(), run.intervention.v) and run.intervention.v.norm() > 0
