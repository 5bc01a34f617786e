"""`saebasis plateau`: edge detection, the random families (mixtures included), the two sweeps, the KL with and
without the shared template tokens, the command end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import HOOK

from saebasis.core import hooks
from saebasis.experiments.plateau.analysis import (
    Prompt,
    alive_latents,
    alive_rows,
    covariance_matched,
    covariance_mixture,
    isotropic,
    kl_sweep,
    mean_kl,
    method_sweep,
    neutral_prompts,
    plateau_edge,
    real_mixture,
    size_grid,
)
from saebasis.interventions import build


# -- the edge -------------------------------------------------------------------------------------------
def test_edge_of_piecewise_power_law_is_exact():
    """KL = 1e-4 (eps / 0.5)^2 on the plateau, then ~ eps^8 after a cliff: the 0.1-nat crossing is known in closed
    form and log-log interpolation between grid points recovers it exactly; sharpness is the slope there."""
    edge_true, slope = 3.0, 8.0
    sizes = size_grid(0.25, 64.0, 2.0)

    def kl(eps):  # a power law with exponent 8 through (edge_true, 0.1) on [2, 4]; quadratic below 2
        return 0.1 * (eps / edge_true) ** slope if eps >= 2 else 0.1 * (2 / edge_true) ** slope * (eps / 2) ** 2

    edge = plateau_edge(sizes, [kl(s) for s in sizes], 0.1)
    assert edge.status == "crossed"
    assert edge.size == pytest.approx(edge_true, rel=1e-9)
    assert edge.sharpness == pytest.approx(slope, rel=1e-9)


def test_edge_of_a_sigmoid_within_interpolation_tolerance():
    """A smooth plateau-then-cliff curve: on a fine grid the interpolated edge is within one grid step's error."""
    edge_true = 5.0
    kl = lambda e: (
        2.0 / (1 + math.exp(-6 * (math.log(e) - math.log(edge_true)))) - 2.0 / (1 + math.exp(6 * math.log(20)))
    )
    target = kl(edge_true)  # the threshold placed at the known point
    sizes = size_grid(0.1, 100.0, 2**0.125)
    edge = plateau_edge(sizes, [kl(s) for s in sizes], target)
    assert edge.status == "crossed" and edge.size == pytest.approx(edge_true, rel=2e-3)
    assert edge.sharpness > 1


def test_edge_statuses():
    sizes = [1.0, 2.0, 4.0]
    assert plateau_edge(sizes, [0.01, 0.02, 0.05], 0.1).status == "not_reached"
    assert math.isnan(plateau_edge(sizes, [0.01, 0.02, 0.05], 0.1).size)
    below = plateau_edge(sizes, [0.5, 1.0, 2.0], 0.1)
    assert below.status == "below_grid" and below.size == 1.0 and below.sharpness == pytest.approx(1.0)
    with pytest.raises(ValueError, match="threshold"):
        plateau_edge(sizes, [0.5, 1.0, 2.0], 0.0)


def test_size_grid():
    assert size_grid(0.25, 4.0, 2.0) == [0.25, 0.5, 1.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="size grid"):
        size_grid(1.0, 0.5, 2.0)


# -- random families ------------------------------------------------------------------------------------
def planted_acts(n: int = 4000, d: int = 16, seed: int = 0) -> torch.Tensor:
    """Anisotropic activations: std 10 along e_0, 0.1 along e_{d-1}, 1 elsewhere, mean 3 (centring matters)."""
    g = torch.Generator().manual_seed(seed)
    std = torch.ones(d)
    std[0], std[-1] = 10.0, 0.1
    return torch.randn(n, d, generator=g) * std + 3.0


@pytest.mark.parametrize("norm", [1.0, 7.5])
def test_families_have_the_requested_norm(sae, norm):
    g = torch.Generator().manual_seed(0)
    acts = planted_acts(d=sae.d_model)
    rows, _ = alive_rows(sae, alive_latents(sae, acts), 16, norm, g)
    for u in (
        isotropic(16, sae.d_model, norm, g),
        covariance_matched(acts, 16, norm, g),
        rows,
        covariance_mixture(acts, 16, norm, g),
        real_mixture(acts, 16, norm, g),
    ):
        assert u.shape == (16, sae.d_model)
        torch.testing.assert_close(u.norm(dim=-1), torch.full((16,), norm), rtol=1e-6, atol=1e-6)


def test_covariance_family_follows_the_covariance():
    """Samples' mean squared component along the top eigenvector (var 100) >> along the bottom one (var 0.01);
    isotropic samples have no preference. The mean (3 in every coordinate) is removed, not sampled."""
    acts = planted_acts()
    g = torch.Generator().manual_seed(1)
    u = covariance_matched(acts, 512, 1.0, g)
    top, bottom, other = (u[:, 0] ** 2).mean(), (u[:, -1] ** 2).mean(), (u[:, 1:-1] ** 2).mean()
    assert top > 0.5 and bottom < 1e-3 and bottom < other < top and top / bottom > 1e3
    assert float((u.mean(0) @ torch.ones(acts.shape[1])).abs()) < 0.2  # not drawn towards the mean
    iso = isotropic(512, acts.shape[1], 1.0, g)
    assert 0.5 < float((iso[:, 0] ** 2).mean() / (iso[:, -1] ** 2).mean()) < 2


def test_covariance_family_is_exact_in_distribution():
    """z = X^T g / sqrt(N - 1) has covariance exactly Sigma: the unnormalised draw's empirical covariance matches."""
    acts = planted_acts(n=200, d=6)
    x = acts - acts.mean(0)
    sigma = x.T @ x / (len(x) - 1)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(20000, len(x), generator=g) @ x / math.sqrt(len(x) - 1)
    torch.testing.assert_close(z.T @ z / len(z), sigma, rtol=0.05, atol=0.05 * float(sigma.diag().max()))


@pytest.mark.parametrize("family", [covariance_mixture, real_mixture])
def test_mixture_families_are_reproducible_with_a_seed(family):
    acts = planted_acts(n=300, d=8)
    a, b = (family(acts, 12, 2.0, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, family(acts, 12, 2.0, torch.Generator().manual_seed(6)))


def test_cov_mixture_cancels_the_mean_and_follows_the_covariance():
    """Activations that vary only in the first 3 coordinates around a large mean (50 everywhere): z1 - z2 has no
    component outside those 3 coordinates (the mean cancels; a direction towards one random point would carry it),
    and as a unit direction it has the covariance family's law (z1 - z2 ~ N(0, 2 Sigma))."""
    g = torch.Generator().manual_seed(3)
    acts = torch.full((500, 8), 50.0)
    acts[:, :3] += torch.randn(500, 3, generator=g) * torch.tensor([5.0, 1.0, 0.2])
    u = covariance_mixture(acts, 256, 1.0, g)
    assert float(u[:, 3:].abs().max()) < 1e-5
    planted = planted_acts()
    mix, cov = covariance_mixture(planted, 4000, 1.0, g), covariance_matched(planted, 4000, 1.0, g)
    for k in (0, 1, planted.shape[1] - 1):  # mean squared component per coordinate agrees with the covariance family's
        assert float((mix[:, k] ** 2).mean()) == pytest.approx(float((cov[:, k] ** 2).mean()), rel=0.1, abs=2e-4)


def test_real_mixture_rows_are_differences_of_distinct_real_activations():
    """Every row is (a_i - a_j) / |a_i - a_j| for two rows of the activations with a non-zero difference (rows 0, 1
    and 2 are identical, as the same template token in three prompts would be: their pairs must never be drawn)."""
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(6, 4, generator=g)
    acts[1] = acts[0]
    acts[2] = acts[0]
    allowed = torch.stack([acts[i] - acts[j] for i in range(6) for j in range(6) if not torch.equal(acts[i], acts[j])])
    allowed = allowed / allowed.norm(dim=-1, keepdim=True)  # [pairs, d]
    u = real_mixture(acts, 200, 1.0, torch.Generator().manual_seed(1))
    assert float((u @ allowed.T).max(dim=-1).values.min()) == pytest.approx(1.0, abs=1e-6)  # each row is one of them
    with pytest.raises(ValueError, match="identical"):
        real_mixture(acts[:3], 4, 1.0, torch.Generator().manual_seed(0))


def test_alive_rows_use_only_alive_latents(sae):
    acts = planted_acts(n=50, d=sae.d_model)
    alive = alive_latents(sae, acts)
    assert alive.any() and not alive.all()  # the tiny SAE leaves some latents silent on these activations
    rows, idx = alive_rows(sae, alive, 8, 2.0, torch.Generator().manual_seed(0))
    assert alive[idx].all() and len(set(idx.tolist())) == len(idx)
    w = sae.W_dec[idx].detach()
    torch.testing.assert_close(rows, 2.0 * w / w.norm(dim=-1, keepdim=True))
    with pytest.raises(ValueError, match="No SAE latent fires"):
        alive_rows(sae, torch.zeros_like(alive), 4)


# -- the sweeps -----------------------------------------------------------------------------------------
def _prompts(model, tokenizer, texts=("the day is good", "a bad film and the weather")):
    out = []
    for t in texts:
        ids = tokenizer(t, return_tensors="pt")["input_ids"][0]
        out.append(Prompt(ids, hooks.run_to_hook(model, HOOK, input_ids=ids[None])[0]))
    return out


def test_kl_sweep_matches_a_plain_forward_and_is_zero_at_zero(model, tokenizer):
    """The sweep skips the upstream blocks and batches (direction, size) rows; the same KL must come out of a
    plain full forward with h + eps u added at every position but the first."""
    prompts = _prompts(model, tokenizer)
    u = isotropic(3, 32, 1.0, torch.Generator().manual_seed(0))
    sizes = [0.0, 0.5, 4.0]
    kl = kl_sweep(model, HOOK, prompts, u, sizes, batch_size=4).all
    assert kl.shape == (3, 3) and float(kl[:, 0].abs().max()) < 1e-6
    j, s = 2, 4.0
    total, count = 0.0, 0
    for p in prompts:
        base = model(input_ids=p.ids[None]).logits[0].log_softmax(-1)
        shift = lambda h: h + s * u[j] * (torch.arange(h.shape[1]) > 0)[None, :, None]
        with hooks.attach(model, HOOK, shift):
            logp = model(input_ids=p.ids[None]).logits[0].log_softmax(-1)
        total += float((logp.exp() * (logp - base)).sum(-1)[1:].sum())
        count += len(p.ids) - 1
    assert float(kl[j, 2]) == pytest.approx(total / count, rel=1e-4)


def test_method_sweep_of_a_constant_method_agrees_with_the_kl_sweep(model, tokenizer, sae):
    """A clamp in add mode is h + s v: its strength sweep must equal the direction sweep at sizes s |v|, and the
    residual change it reports is s |v|."""
    prompts = _prompts(model, tokenizer)
    iv = build("clamp", {"latents": [3, 7], "values": [2.0, -1.0], "mode": "add"}, 32, sae)
    v = iv.folded().detach()
    curve = method_sweep(model, HOOK, prompts, iv, [0.5, 2.0], batch_size=8)
    kl = kl_sweep(model, HOOK, prompts, (v / v.norm())[None], [0.5 * float(v.norm()), 2.0 * float(v.norm())]).all
    torch.testing.assert_close(torch.tensor(curve.kl), kl[0], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(
        torch.tensor(curve.delta_norm), torch.tensor([0.5, 2.0]) * float(v.norm()), rtol=1e-4, atol=1e-6
    )


# -- the shared template tokens -------------------------------------------------------------------------
def test_mean_kl_with_and_without_the_shared_tokens_by_hand():
    """Two prompts whose first 3 positions are the shared opening (position 0 is the sink; KL is given for
    positions 1..): the shared positions carry KL 10, the rest 1, 2, 3 and 4. With them the mean is 50 / 8; without
    them it is exactly the mean over the non-shared positions, (1 + 2 + 3 + 4) / 4."""
    a = torch.tensor([[10.0, 10.0, 1.0, 2.0, 3.0], [0.5, 0.5, 0.5, 0.5, 0.5]])  # [rows, positions 1..5]
    b = torch.tensor([[10.0, 10.0, 4.0], [0.5, 0.5, 0.5]])  # [rows, positions 1..3]
    kl = mean_kl([a, b], shared=[3, 3])
    torch.testing.assert_close(kl.all, torch.tensor([50 / 8, 0.5]))
    torch.testing.assert_close(kl.unshared, torch.tensor([10 / 4, 0.5]))
    assert float(kl.unshared[0]) == float(torch.cat([a[0, 2:], b[0, 2:]]).mean())
    none = mean_kl([a, b], shared=[0, 0])  # no shared opening (or only the sink): both means are the same
    torch.testing.assert_close(none.unshared, none.all)
    torch.testing.assert_close(mean_kl([a, b], shared=[1, 1]).unshared, none.all)


def test_kl_sweep_without_shared_tokens_matches_a_plain_forward(model, tokenizer):
    """With prompts marked as sharing their first 2 positions, `unshared` is the plain forward's mean KL over
    positions >= 2 of every prompt, and `all` stays the mean over positions >= 1."""
    prompts = [p._replace(shared=2) for p in _prompts(model, tokenizer)]
    u = isotropic(2, 32, 1.0, torch.Generator().manual_seed(4))
    kl = kl_sweep(model, HOOK, prompts, u, [3.0], batch_size=2)
    per_pos = []
    for p in prompts:
        base = model(input_ids=p.ids[None]).logits[0].log_softmax(-1)
        with hooks.attach(model, HOOK, lambda h: h + 3.0 * u[1] * (torch.arange(h.shape[1]) > 0)[None, :, None]):
            logp = model(input_ids=p.ids[None]).logits[0].log_softmax(-1)
        per_pos.append((logp.exp() * (logp - base)).sum(-1))  # [pos]
    assert float(kl.unshared[1, 0]) == pytest.approx(float(torch.cat([k[2:] for k in per_pos]).mean()), rel=1e-4)
    assert float(kl.all[1, 0]) == pytest.approx(float(torch.cat([k[1:] for k in per_pos]).mean()), rel=1e-4)
    assert float(kl.all[1, 0]) != pytest.approx(float(kl.unshared[1, 0]), rel=1e-3)


def test_neutral_prompts_find_the_shared_template_opening():
    """With a chat template, every prompt starts with the same opening: `shared` is its length, and those
    positions hold the same tokens and (causal model) the same residuals in every prompt."""
    from saebasis.core.models import tiny_model
    from saebasis.corpus.acts import template_prefix

    loaded = tiny_model()
    prompts = neutral_prompts(loaded.model, loaded.tokenizer, HOOK, ["the day is good", "a film"])
    n = len(template_prefix(loaded.tokenizer))
    assert n > 1 and all(p.shared == n for p in prompts)
    assert torch.equal(prompts[0].ids[:n], prompts[1].ids[:n])
    torch.testing.assert_close(prompts[0].h[:n], prompts[1].h[:n])
    assert not torch.equal(prompts[0].ids[n : n + 2], prompts[1].ids[n : n + 2])


# -- the command ----------------------------------------------------------------------------------------
def _saved_sae(tmp_path, sae):
    sae.sae.save_model(tmp_path / "sae")
    return {"path": str(tmp_path / "sae"), "hook": HOOK}


def _cfg(tmp_path, concept_dir, sae_path=None, **over):
    from saebasis.config import compose

    sae = [f"sae.path={sae_path}", f"sae.hook={HOOK}", "sae.check=false"] if sae_path else ["sae=none"]
    base = [
        "model=tiny",
        *sae,
        f"data={concept_dir}",
        "n_prompts=2",
        "n_cov_prompts=3",
        "n_random=3",
        "size_min=0.125",
        "size_max=8",
        "strength_min=0.25",
        "strength_max=4",
        f"out_dir={tmp_path / 'out'}",
    ]
    return compose("plateau", base + [f"{k}={v}" for k, v in over.items()])


def test_plateau_end_to_end_on_a_constant_run(tmp_path, concept_dir, sae):
    from saebasis.experiments.plateau.command import plateau
    from saebasis.runs import save_run

    iv = build("clamp", {"latents": [3], "values": [4.0], "mode": "add"}, 32, sae)
    save_run(tmp_path / "run", iv, {"sae": _saved_sae(tmp_path, sae), "hook": HOOK, "model": {"name": "tiny-llama"}})
    out = plateau(_cfg(tmp_path, concept_dir, run=tmp_path / "run"))
    for key in ("json", "md", "png"):
        assert (tmp_path / "out" / f"plateau.{key}").stat().st_size > 0
    saved = json.loads((tmp_path / "out" / "plateau.json").read_text())
    assert (
        set(saved["families"])
        == set(saved["families_unshared"])
        == {"isotropic", "covariance", "cov_mixture", "real_mixture", "alive_rows"}
    )
    assert all(
        len(f["kl"]) == 3 and len(f["kl"][0]) == len(saved["learned"]["sizes"]) for f in saved["families"].values()
    )
    assert min(saved["n_shared"]) > 1  # the tiny model's chat template opens every prompt the same way
    assert saved["n_tokens_unshared"] == saved["n_tokens"] - sum(n - 1 for n in saved["n_shared"])
    assert len(saved["learned"]["kl_unshared"]) == len(saved["learned"]["kl"])
    assert saved["learned"]["vector_norm"] == pytest.approx(float(iv.folded().norm()), rel=1e-5)
    if out["learned"]["edge"]["status"] == "crossed":
        assert out["suggested_strength"] == pytest.approx(
            1.25 * out["learned"]["edge"]["size"] / saved["learned"]["vector_norm"]
        )
    table = (tmp_path / "out" / "plateau.md").read_text()
    assert "isotropic random" in table and "covariance-matched" in table and "alive SAE decoder rows" in table
    assert "covariance-random mixture" in table and "real mixture" in table
    assert "after the shared template opening" in table


def test_plateau_end_to_end_on_a_nonconstant_method(tmp_path, concept_dir, sae):
    """A clamp in clamp mode depends on h (folded() is None): its strength is swept and the random families are
    measured at the residual-change sizes it produced."""
    from saebasis.experiments.plateau.command import plateau
    from saebasis.runs import save_run

    iv = build("clamp", {"latents": [3, 9], "values": [6.0, 5.0], "mode": "clamp"}, 32, sae)
    save_run(tmp_path / "run", iv, {"sae": _saved_sae(tmp_path, sae), "hook": HOOK, "model": {"name": "tiny-llama"}})
    out = plateau(_cfg(tmp_path, concept_dir, run=tmp_path / "run"))
    learned = out["learned"]
    assert learned["vector_norm"] is None and learned["strengths"] == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert learned["sizes"] == sorted(learned["sizes"]) and learned["sizes"][0] > 0
    assert out["families"]["isotropic"]["sizes"] == sorted(learned["sizes"])


def test_plateau_on_one_latent(tmp_path, concept_dir, sae):
    from saebasis.experiments.plateau.command import plateau

    info = _saved_sae(tmp_path, sae)
    cfg = _cfg(tmp_path, concept_dir, direction="latent:5", sae_path=info["path"])
    out = plateau(cfg)
    assert out["learned"]["label"] == "SAE latent 5 (decoder row)"
    assert out["learned"]["vector_norm"] == pytest.approx(float(sae.W_dec[5].norm()), rel=1e-5)


def test_bad_input_fails_before_the_model_loads(tmp_path, concept_dir, sae, monkeypatch):
    import saebasis.experiments.plateau.command as cmd

    monkeypatch.setattr(
        cmd, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the input was checked")
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cmd.plateau(_cfg(tmp_path, concept_dir, run=tmp_path / "nope"))
    info = _saved_sae(tmp_path, sae)
    with pytest.raises(ValueError, match="out of range.*64 latents"):
        cmd.plateau(_cfg(tmp_path, concept_dir, direction="latent:64", sae_path=info["path"]))
    with pytest.raises(ValueError, match="latent:<i>"):
        cmd.plateau(_cfg(tmp_path, concept_dir, direction="row7"))
    with pytest.raises(ValueError, match="exactly one"):
        cmd.plateau(_cfg(tmp_path, concept_dir))
    with pytest.raises(ValueError, match="n_random"):
        cmd.plateau(_cfg(tmp_path, concept_dir, run=tmp_path / "nope", n_random=0))
    with pytest.raises(ValueError, match="families must be.*real_mixture"):
        cmd.plateau(_cfg(tmp_path, concept_dir, run=tmp_path / "nope", families="[isotropic,cov_mix]"))
