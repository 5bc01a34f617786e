"""Peers as methods, each through its own library (optional: skipped with the reason when it is missing)."""

import pytest
import torch

from saebasis.core import hooks
from saebasis.interventions import build
from saebasis.runs import load_run, save_run
from tests.conftest import D_MODEL

HOOK = "blocks.1.hook_resid_pre"  # LoRA lives in block 1, the block that reads this residual


@pytest.fixture
def lora():
    pytest.importorskip("peft", reason="LoRA is a peer through peft: pip install -e '.[peers]'")
    return lambda **cfg: build("lora", cfg, D_MODEL)


def _perturbed(iv, model):
    iv.materialize(model, HOOK)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in iv.parameters():
            p.normal_(0, 0.3)
    return iv


def _logits(model, batch, iv=None, strength=1.0):
    with torch.no_grad(), hooks.steering(model, HOOK, iv, strength):
        return model(**batch).logits


@pytest.mark.parametrize("targets", [["o_proj"], ["all-linear"]])
def test_lora_identity_at_init_and_at_zero(lora, model, batch, targets):
    iv = lora(target_modules=targets)
    base = _logits(model, batch)
    assert torch.equal(_logits(model, batch, iv), base)  # B = 0 at init (peft's default)
    _perturbed(iv, model)
    assert not torch.equal(_logits(model, batch, iv), base)
    assert torch.equal(_logits(model, batch, iv, 0.0), base)
    rows = _logits(model, batch, iv, torch.tensor([0.0, 1.0, 0.0]))  # per-row strengths: rows at 0 unchanged
    assert torch.equal(rows[0], base[0]) and torch.equal(rows[2], base[2])
    assert torch.allclose(rows[1], _logits(model, batch, iv)[1], atol=1e-5)


def test_lora_strength_scales_the_delta(lora, model):
    iv = _perturbed(lora(), model)
    o_proj = hooks.blocks(model)[1].self_attn.o_proj
    x = torch.randn(2, 4, o_proj.in_features)
    with hooks.steering(model, HOOK, iv, 1.0):
        hooks.blocks(model)[1](
            torch.randn(2, 4, D_MODEL), position_embeddings=model.model.rotary_emb(x, torch.arange(4)[None])
        )
        layer = hooks.blocks(model)[1].self_attn.o_proj
        one = layer(x) - o_proj(x)
    with hooks.steering(model, HOOK, iv, 2.5):
        hooks.blocks(model)[1](
            torch.randn(2, 4, D_MODEL), position_embeddings=model.model.rotary_emb(x, torch.arange(4)[None])
        )
        two = hooks.blocks(model)[1].self_attn.o_proj(x) - o_proj(x)
    assert torch.allclose(two, 2.5 * one, atol=1e-5)
    a, b = iv.adapters["self_attn-o_proj"].lora_A.weight, iv.adapters["self_attn-o_proj"].lora_B.weight
    assert torch.allclose(one, (8.0 / 4) * x @ a.T @ b.T, atol=1e-5)  # alpha / rank * B A x


def test_lora_gradients_reach_only_its_parameters(lora, model, batch):
    iv = lora(target_modules=["all-linear"])
    iv.materialize(model, HOOK)
    with torch.no_grad():
        for name, p in iv.named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.requires_grad_(False)
    with hooks.steering(model, HOOK, iv):
        model(**batch).logits.pow(2).mean().backward()
    assert all(p.grad is None for p in model.parameters())
    assert len(list(iv.parameters())) == 14 and all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in iv.parameters()
    )


def test_lora_leaves_the_model_unchanged_after_the_context_also_on_exceptions(lora, model, batch):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [type(m) for m in model.modules()]
    base = _logits(model, batch)
    iv = _perturbed(lora(target_modules=["all-linear"]), model)
    with pytest.raises(RuntimeError, match="boom"), hooks.steering(model, HOOK, iv):
        raise RuntimeError("boom")
    with hooks.steering(model, HOOK, iv):
        model(**batch)
    assert [type(m) for m in model.modules()] == modules
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert not any(hook for m in model.modules() for hook in (m._forward_pre_hooks, m._forward_hooks))
    assert torch.equal(_logits(model, batch), base)


def test_lora_save_load_bit_for_bit(lora, model, batch, tmp_path):
    iv = _perturbed(lora(rank=2, target_modules=["o_proj", "down_proj"]), model)
    save_run(tmp_path / "r", iv, {"sae": None})
    loaded = load_run(tmp_path / "r").intervention
    assert sorted(loaded.state_dict()) == sorted(iv.state_dict())
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in iv.state_dict().items())
    assert torch.equal(_logits(model, batch, loaded, 1.5), _logits(model, batch, iv, 1.5))
    h = torch.randn(2, 5, D_MODEL)
    assert torch.equal(loaded(h, 0.0), h)


def test_lora_residual_form_is_the_blocks_output_change(lora, model):
    iv = _perturbed(lora(), model)
    h = torch.randn(1, 5, D_MODEL)
    block, kw = hooks.blocks(model)[1], {"position_embeddings": model.model.rotary_emb(h, torch.arange(5)[None])}
    with torch.no_grad(), hooks.steering(model, HOOK, iv, 0.5):
        steered = block(h, **kw)
    with torch.no_grad():
        assert torch.allclose(iv(h, 0.5), h + steered - block(h, **kw), atol=1e-5)


def test_lora_cached_activations_give_the_same_logits(lora, model, tokenizer, concept_dir):
    """With cache_activations the blocks before the hook are skipped; the adapted block (after it) still runs."""
    from saebasis.data import load_concept
    from saebasis.training.datamodule import ConceptDataModule
    from saebasis.training.module import SteeringModule

    iv = _perturbed(lora(target_modules=["all-linear"]), model)
    dm = ConceptDataModule(load_concept(str(concept_dir)), tokenizer, batch_size=3, max_len=24)
    batch = next(iter(dm.train_dataloader()))["pos"]
    plain = SteeringModule(iv, model, HOOK, {"objective": "sft"}, dm)._forward(batch)
    cached = SteeringModule(iv, model, HOOK, {"cache_activations": True, "objective": "sft"}, dm)
    cached._forward(batch)
    mask = batch["attention_mask"].bool()
    again = cached._forward(batch)  # from the cache
    assert torch.allclose(again[mask], plain[mask], atol=1e-5) and not torch.allclose(
        again, cached._forward(batch, steer=False)
    )


def test_lora_trains_through_saebasis_train(lora, tmp_path, concept_dir):
    from saebasis.config import compose
    from saebasis.training.train import train

    overrides = [
        "experiment=lora",
        "model=tiny",
        "sae=none",
        "logger=none",
        f"data={concept_dir}",
        f"hook={HOOK}",
        "batch_size=2",
        "max_len=24",
        "n_samples=1",
        "trainer.max_epochs=2",
        "lr=0.05",
        "trainer.enable_progress_bar=false",
        f"run_dir={tmp_path / 'run'}",
    ]
    result = train(compose("train", overrides))
    run = load_run(result["run_dir"])
    assert result["steps"] == 6 and run.cfg["method"] == "lora" and result["adapted"] == ["self_attn.o_proj"]
    assert run.intervention.adapters["self_attn-o_proj"].lora_B.weight.abs().sum() > 0  # moved off its zero init
    assert result["n_params"] == 2 * 4 * D_MODEL


# -- CAA through steering-vectors --------------------------------------------------------------------------------

CAA_HOOK = "blocks.1.hook_resid_post"  # steering-vectors' decoder_block 1


@pytest.fixture
def caa_fit(tmp_path, concept_dir):
    pytest.importorskip(
        "steering_vectors", reason="CAA is a peer through steering-vectors: bash scripts/setup_peers.sh"
    )
    from saebasis.config import compose
    from saebasis.training.fit import fit_baseline

    def fit(*extra):
        cfg = compose(
            "fit_baseline",
            [
                "experiment=caa",
                "model=tiny",
                "sae=none",
                f"data={concept_dir}",
                f"hook={CAA_HOOK}",
                f"run_dir={tmp_path / 'caa'}",
                "overwrite=true",
                *extra,
            ],
        )
        return fit_baseline(cfg)

    return fit


def test_caa_fit_through_steering_vectors_matches_saebasis_last_token_diffmean(caa_fit, concept_dir, tmp_path):
    from saebasis.config import compose
    from saebasis.training.fit import fit_baseline

    result = caa_fit()
    assert result["fit_check_cosine"] > 0.999999  # the library's vector vs saebasis' own activations at the last token
    last = fit_baseline(
        compose(
            "fit_baseline",
            [
                "experiment=diffmean_last",
                "model=tiny",
                "sae=none",
                f"data={concept_dir}",
                f"hook={CAA_HOOK}",
                f"run_dir={tmp_path / 'dm'}",
            ],
        )
    )
    v_caa, v_dm = load_run(result["run_dir"]).intervention.v, load_run(last["run_dir"]).intervention.v
    assert torch.allclose(v_caa, v_dm, atol=1e-5)


def test_caa_applied_by_the_library_is_saebasis_addition_and_round_trips(caa_fit, batch):
    from saebasis.core.stack import load_stack

    run = load_run(caa_fit()["run_dir"])
    iv = run.intervention
    model = load_stack({"model": run.cfg["model"], "sae": None, "hook": CAA_HOOK}).model
    base = _logits_at(model, batch, CAA_HOOK)
    lib = _logits_at(model, batch, CAA_HOOK, iv, 4.0)  # steering-vectors' hook
    with torch.no_grad(), hooks.attach(model, CAA_HOOK, lambda h: h + 4.0 * iv.v):
        own = model(**batch).logits
    assert torch.allclose(lib, own, atol=1e-5) and not torch.allclose(lib, base)
    assert torch.equal(_logits_at(model, batch, CAA_HOOK, iv, 0.0), base)
    rows = _logits_at(model, batch, CAA_HOOK, iv, torch.tensor([0.0, 4.0, 0.0]))
    assert (
        torch.equal(rows[0], base[0]) and torch.equal(rows[2], base[2]) and torch.allclose(rows[1], lib[1], atol=1e-5)
    )
    h = torch.randn(1, 3, D_MODEL)
    assert torch.equal(iv(h, 2.0), h + 2.0 * iv.v) and iv(h, 0.0) is h
    assert not any(hook for m in model.modules() for hook in (m._forward_hooks, m._forward_pre_hooks))


def _logits_at(model, batch, hook, iv=None, strength=1.0):
    with torch.no_grad(), hooks.steering(model, hook, iv, strength):
        return model(**batch).logits


@pytest.mark.parametrize("peer", ["lora", "caa"])
def test_peer_generate_grid_matches_one_strength_at_a_time(peer, model, tokenizer):
    """The leaderboard's path: one batched generate over a strength grid (per-row strengths, KV cache)."""
    from saebasis.core.generation import generate, generate_grid

    pytest.importorskip({"lora": "peft", "caa": "steering_vectors"}[peer])
    if peer == "lora":
        iv, hook = _perturbed(build("lora", {}, D_MODEL), model), HOOK
    else:
        iv, hook = build("caa", {}, D_MODEL), CAA_HOOK
        torch.manual_seed(0)
        iv.v.normal_(0, 2.0)
    prompts = ["the movie", "a day is"]
    grid, _ = generate_grid(model, tokenizer, prompts, iv, hook, [0.0, 1.0], max_new_tokens=5)
    assert grid[0.0] == generate(model, tokenizer, prompts, None, hook, max_new_tokens=5)[0]
    assert grid[1.0] == generate(model, tokenizer, prompts, iv, hook, max_new_tokens=5)[0] != grid[0.0]
