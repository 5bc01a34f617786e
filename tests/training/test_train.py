import pytest
import torch

from saebasis.config import compose
from saebasis.runs import load_run
from saebasis.training.module import NonFiniteLoss
from saebasis.training.train import train

EXPERIMENTS = ["sae_bias", "sae_adaptor_sparse", "sae_adaptor_lowrank", "residual_adaptor", "residual_vector"]


@pytest.fixture
def tiny_overrides(tmp_path, concept_dir, tiny_stack):
    return [
        *tiny_stack,
        "logger=none",
        f"data={concept_dir}",
        "batch_size=2",
        "max_len=24",
        "n_samples=1",
        "trainer.enable_progress_bar=false",
        f"run_dir={tmp_path / 'run'}",
    ]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_of_each_experiment(experiment, tiny_overrides, tmp_path):
    result = train(compose("train", [f"experiment={experiment}", "debug=fast", *tiny_overrides]))
    run = load_run(result["run_dir"])
    assert run.cfg["hook"] == "blocks.1.hook_resid_post" and run.metrics["steps"] == 1
    h = torch.randn(1, 3, 32)
    assert run.intervention(h, 0.0) is h


def test_training_moves_parameters_and_logs(tiny_overrides):
    result = train(
        compose(
            "train", ["experiment=residual_vector", "trainer.max_epochs=2", "lr=0.1", "kl_coef=0.1", *tiny_overrides]
        )
    )
    run = load_run(result["run_dir"])
    assert run.intervention.v.abs().sum() > 0
    assert "val/resid_change_norm" in run.metrics and "train/loss" in run.metrics
    assert run.metrics["samples"] and set(run.metrics["samples"][0]) == {"prompt", "unsteered", "steered"}


def test_preference_objective_raises_the_positive_margin(tiny_overrides):
    """BiPO / DPO-style training must move log p(pos) - log p(neg) up relative to the unsteered model."""
    from saebasis.core.stack import load_stack
    from saebasis.data import load_concept
    from saebasis.training.datamodule import ConceptDataModule
    from saebasis.training.module import SteeringModule

    cfg = compose(
        "train",
        ["experiment=residual_vector", "objective=preference", "trainer.max_epochs=4", "lr=0.05", *tiny_overrides],
    )
    result = train(cfg)
    assert result["steps"] >= 4
    run = result["run"]
    cfg = {**dict(run.cfg["config"]), "cache_activations": False}
    stack = load_stack(cfg)
    dm = ConceptDataModule(load_concept(cfg["data"]), stack.tokenizer, 4, cfg["max_len"], 0.0, 0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module = SteeringModule(run.intervention, stack.model, stack.hook, cfg, dm)
    with torch.no_grad():
        margin = (module._logp(batch["pos"]) - module._reference_logp(batch["pos"])) - (
            module._logp(batch["neg"]) - module._reference_logp(batch["neg"])
        )
    assert float(margin.mean()) > 0


def test_resume_from_checkpoint_matches_uninterrupted(tiny_overrides, tmp_path):
    base = ["experiment=residual_vector", "lr=0.05", "ckpt_every_n_steps=1", "trainer.max_epochs=2", *tiny_overrides]
    full_result = train(compose("train", base + [f"run_dir={tmp_path / 'full'}"]))
    full = load_run(full_result["run_dir"]).intervention
    part = base + [f"run_dir={tmp_path / 'part'}"]
    train(compose("train", part[:-1] + ["trainer.max_epochs=1", part[-1]]))
    resumed = train(compose("train", part + ["resume=true"]))
    assert resumed["steps"] == full_result["steps"]
    assert torch.allclose(load_run(resumed["run_dir"]).intervention.v, full.v, atol=1e-6)


def test_nan_loss_stops_with_message(tiny_overrides, tmp_path, monkeypatch):
    from saebasis.interventions.residual import ResidualVector

    monkeypatch.setattr(ResidualVector, "penalty", lambda self: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLoss, match="became nan at step 0"):
        train(compose("train", ["experiment=residual_vector", "trainer.max_epochs=1", *tiny_overrides]))
    assert not (tmp_path / "run").exists()  # no half-trained run folder


def test_bad_learning_rate_is_refused_before_training(tiny_overrides, tmp_path):
    from saebasis.validate import ConfigError

    with pytest.raises(ConfigError, match="config field 'lr'"):
        train(compose("train", ["experiment=residual_vector", "lr=nan", *tiny_overrides]))


def test_clamp_is_saved_as_set_and_steers(tiny_overrides):
    result = train(
        compose(
            "train",
            ["experiment=clamp", "intervention.latents=[3,9]", "intervention.values=[5.0,-2.0]", *tiny_overrides],
        )
    )
    run = load_run(result["run_dir"])
    assert result["steps"] == 0 and run.cfg["method"] == "clamp" and run.intervention.cfg.latents == [3, 9]
    sae = run.intervention.sae
    h = torch.randn(1, 3, 32)
    expected = h + 5.0 * sae.W_dec[3] - 2.0 * sae.W_dec[9]
    assert torch.allclose(run.intervention(h), expected, atol=1e-5)


def test_closed_form_methods_are_refused(tiny_overrides):
    with pytest.raises(ValueError, match="fit-baseline intervention=diffmean"):
        train(compose("train", ["intervention=diffmean", *tiny_overrides]))


def test_generate_command_steers_and_zero_is_unsteered(tiny_overrides, tmp_path):
    from saebasis.experiments.generate import generate

    run = train(compose("train", ["experiment=residual_vector", "lr=0.5", "trainer.max_epochs=2", *tiny_overrides]))[
        "run_dir"
    ]
    base = ["max_new_tokens=6", f"run={run}", "prompt=the movie"]
    zero = generate(compose("generate", base + ["strength=0", "compare_unsteered=true"]))
    assert zero["steered"] == zero["unsteered"]
    strong = generate(compose("generate", base + ["strength=50", "compare_unsteered=true"]))
    assert strong["steered"] != strong["unsteered"]
    with pytest.raises(ValueError, match="strength must be a finite number"):
        generate(compose("generate", base + ["strength=nan"]))


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_post"])
def test_cached_activations_give_the_same_logits(model, tokenizer, sae, concept_dir, hook):
    from saebasis.data import load_concept
    from saebasis.interventions import build
    from saebasis.training.datamodule import ConceptDataModule
    from saebasis.training.module import SteeringModule

    iv = build("residual_vector", {}, 32, sae)
    with torch.no_grad():
        iv.v.normal_()
    dm = ConceptDataModule(load_concept(str(concept_dir)), tokenizer, batch_size=3, max_len=24)
    plain = SteeringModule(iv, model, hook, {"objective": "sft"}, dm)
    cached = SteeringModule(iv, model, hook, {"cache_activations": True, "objective": "sft"}, dm)
    batch = next(iter(dm.train_dataloader()))["pos"]
    full, first = plain._forward(batch), cached._forward(batch)  # the first fills the cache
    calls = []
    with hooks_counting(model, calls):
        again = cached._forward(batch)  # served from it: the blocks before the hook never run
    assert len(cached.cache.acts) == 3 and calls == list(range(int(hook.split(".")[1]) + (hook.endswith("post")), 3))
    mask = batch["attention_mask"].bool()
    assert torch.allclose(first[mask], full[mask], atol=1e-5) and torch.equal(first, again)
    assert torch.allclose(
        cached._forward(batch, steer=False)[mask], plain._forward(batch, steer=False)[mask], atol=1e-5
    )
    # an example re-batched with different left padding reuses its cached activations and gives the same logits
    single = {k: v[1:2, (~mask[1]).sum() :] for k, v in batch.items()}
    assert torch.allclose(cached._forward(single)[0], first[1, mask[1]], atol=1e-5)


def hooks_counting(model, calls):
    """Record the index of every real decoder block that runs (the cache's stand-ins are not counted)."""
    from contextlib import ExitStack

    from saebasis.core import hooks

    stack = ExitStack()
    for i, block in enumerate(hooks.blocks(model)):
        handle = block.register_forward_pre_hook(lambda *_, i=i: calls.append(i))
        stack.callback(handle.remove)
    return stack


def test_training_with_cached_activations_matches_uncached(tiny_overrides, tmp_path):
    args = ["experiment=residual_vector", "trainer.max_epochs=2", "lr=0.1", "kl_coef=0.1", *tiny_overrides]
    cached = train(compose("train", [*args, "cache_activations=true", f"run_dir={tmp_path / 'cached'}"]))
    plain = train(compose("train", [*args, f"run_dir={tmp_path / 'plain'}"]))
    assert cached["steps"] == plain["steps"] == 6  # 5 train pairs, batch 2, 2 epochs
    v_cached, v_plain = (load_run(r["run_dir"]).intervention.v for r in (cached, plain))
    assert v_plain.abs().sum() > 0 and torch.allclose(v_cached, v_plain, atol=1e-4)


def test_preference_with_cached_reference(tiny_overrides, tmp_path):
    args = ["experiment=sae_bias", "objective=preference", "trainer.max_epochs=2", "lr=0.1", *tiny_overrides]
    cached = train(compose("train", [*args, "cache_activations=true", f"run_dir={tmp_path / 'cached'}"]))
    plain = train(compose("train", [*args, f"run_dir={tmp_path / 'plain'}"]))
    b_cached, b_plain = (load_run(r["run_dir"]).intervention.b for r in (cached, plain))
    assert b_plain.abs().sum() > 0 and torch.allclose(b_cached, b_plain, atol=1e-4)


def test_cached_activations_on_gpt2_family(tokenizer):
    """GPT-2 adds position embeddings before its blocks: the cache replaces blocks, not inputs_embeds, so it still
    matches."""
    from transformers import AutoModelForCausalLM, GPT2Config

    from saebasis.core.models import prepare
    from saebasis.training.cache import ActivationCache, model_inputs

    torch.manual_seed(0)
    gpt2 = prepare(
        AutoModelForCausalLM.from_config(GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=64)),
        tokenizer,
    )
    batch = dict(
        tokenizer(["i love this movie", "a bad film and the weather is awful"], return_tensors="pt", padding=True)
    )
    cache = ActivationCache(gpt2, "blocks.1.hook_resid_post")
    from saebasis.core import hooks
    from saebasis.interventions import build

    shift = build("residual_vector", {}, 32)
    with torch.no_grad():
        shift.v.fill_(1.0)  # h' = h + 1
    with hooks.steering(gpt2, "blocks.1.hook_resid_post", shift):
        full = gpt2(**model_inputs(batch), use_cache=False).logits
    mask = batch["attention_mask"].bool()
    assert torch.allclose(cache.logits(batch, shift)[mask], full[mask], atol=1e-5)
    assert torch.allclose(cache.logits(batch, shift)[mask], full[mask], atol=1e-5)  # second time from the cache


def test_cache_refuses_a_hook_with_nothing_upstream(model):
    from saebasis.training.cache import ActivationCache

    with pytest.raises(ValueError, match="nothing runs before blocks.0.hook_resid_pre.*cache_activations=false"):
        ActivationCache(model, "blocks.0.hook_resid_pre")


def test_completion_window_gives_the_full_loss(model, tokenizer, concept_dir):
    """The LM head runs only on the last positions that hold completions: the losses must not change."""
    from saebasis.data import load_concept
    from saebasis.training.cache import model_inputs
    from saebasis.training.datamodule import ConceptDataModule
    from saebasis.training.module import completion_window, sequence_logp, sft_loss

    dm = ConceptDataModule(load_concept(str(concept_dir)), tokenizer, batch_size=3, max_len=24)
    batch = next(iter(dm.train_dataloader()))["pos"]
    k = completion_window(batch)
    assert k < batch["input_ids"].shape[1]  # the prompts are longer than the completions: there is something to skip
    full = model(**model_inputs(batch), use_cache=False).logits
    tail = model(**model_inputs(batch), use_cache=False, logits_to_keep=k).logits
    assert tail.shape[1] == k
    assert torch.allclose(sft_loss(tail, batch), sft_loss(full, batch), atol=1e-6)
    assert torch.allclose(sequence_logp(tail, batch), sequence_logp(full, batch), atol=1e-5)


def test_sae_bias_trains_sparse_with_the_proximal_l1_and_dense_without(tiny_overrides, tmp_path):
    base = [
        "experiment=sae_bias",
        "trainer.max_epochs=2",
        "lr=0.05",
        "intervention.l1_coef=0.05",
        "n_samples=0",
        "intervention.alive_only=false",
        *tiny_overrides,
    ]  # every latent free to move
    prox = load_run(train(compose("train", base + [f"run_dir={tmp_path / 'prox'}"]))["run_dir"]).intervention.b
    pen = load_run(
        train(compose("train", base + ["intervention.l1_mode=penalty", f"run_dir={tmp_path / 'pen'}"]))["run_dir"]
    ).intervention.b
    assert 0 < int((prox != 0).sum()) < prox.numel() // 2  # it learned, on a few latents
    assert int((pen != 0).sum()) > 0.9 * pen.numel()  # Adam moves nearly every latent when the L1 is in the loss


def test_alive_latents_leave_out_latents_that_never_fire(tiny_overrides, tmp_path, sae):
    from saebasis.core.stack import load_stack
    from saebasis.data import load_concept
    from saebasis.interventions.sae_bias import alive_latents

    with torch.no_grad():  # latents 0..9 can never fire
        sae.sae.W_enc[:, :10] = 0.0
        sae.sae.b_enc[:10] = -1.0
    sae.sae.save_model(tmp_path / "sae")
    cfg = compose("train", ["experiment=sae_bias", *tiny_overrides])  # alive_only is the default
    stack = load_stack(cfg)
    alive = alive_latents(stack, load_concept(cfg.data), 24)
    assert alive.dtype == torch.bool and not alive[:10].any() and alive[10:].sum() > 10
    b = load_run(train(cfg)["run_dir"]).intervention.b
    assert (b[~alive] == 0).all() and (b[alive] != 0).any()


def test_the_wandb_logger_does_not_hand_wandb_the_deprecated_anonymous_setting(tmp_path, monkeypatch):
    """Lightning passes anonymous=None to wandb.init, which then warns on every first run that it has no effect."""
    import wandb

    from saebasis.training.train import make_logger

    got = {}

    class Called(Exception):
        pass

    def init(**kw):
        got.update(kw)
        raise Called

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb, "run", None)
    logger = make_logger({"logger": {"mode": "offline"}, "run_dir": str(tmp_path / "run")}, tmp_path)
    with pytest.raises(Called):
        logger.experiment
    assert got["project"] == "saebasis" and got["name"] == "run" and "anonymous" not in got
