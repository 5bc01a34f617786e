import json

import pytest
import torch

from saebasis.config import compose
from saebasis.runs import load_run
from saebasis.train.module import NonFiniteLoss
from saebasis.train.train import train

EXPERIMENTS = ["sae_bias", "sae_adaptor_sparse", "sae_adaptor_lowrank", "residual_adaptor", "residual_vector"]


@pytest.fixture
def tiny_overrides(tmp_path, concept_dir, sae):
    sae.sae.save_model(tmp_path / "sae")
    return ["model=tiny", "logger=none", f"data={concept_dir}", f"sae.path={tmp_path / 'sae'}",
            "sae.hook=blocks.1.hook_resid_post", "sae.check=false", "batch_size=2", "max_len=24", "n_samples=1",
            "trainer.enable_progress_bar=false", f"run_dir={tmp_path / 'run'}"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_of_each_experiment(experiment, tiny_overrides, tmp_path):
    result = train(compose("train", [f"experiment={experiment}", "debug=fast", *tiny_overrides]))
    run = load_run(result["run_dir"])
    assert run.cfg["hook"] == "blocks.1.hook_resid_post" and run.metrics["steps"] == 1
    h = torch.randn(1, 3, 32)
    run.intervention.strength = 0.0
    assert run.intervention(h) is h


def test_training_moves_parameters_and_logs(tiny_overrides):
    result = train(compose("train", ["experiment=residual_vector", "trainer.max_epochs=2", "lr=0.1", "kl_coef=0.1", *tiny_overrides]))
    run = load_run(result["run_dir"])
    assert run.intervention.v.abs().sum() > 0
    assert "val/resid_change_norm" in run.metrics and "train/loss" in run.metrics
    assert run.metrics["samples"] and set(run.metrics["samples"][0]) == {"prompt", "unsteered", "steered"}


def test_preference_objective_runs(tiny_overrides):
    result = train(compose("train", ["experiment=sae_bias", "objective=preference", "trainer.max_epochs=1", *tiny_overrides]))
    assert result["steps"] >= 1


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


def test_closed_form_methods_are_refused(tiny_overrides):
    with pytest.raises(ValueError, match="fit-baseline intervention=diffmean"):
        train(compose("train", ["intervention=diffmean", *tiny_overrides]))


def test_generate_command_steers_and_zero_is_unsteered(tiny_overrides, tmp_path):
    from saebasis.generate import generate

    run = train(compose("train", ["experiment=residual_vector", "lr=0.5", "trainer.max_epochs=2", *tiny_overrides]))["run_dir"]
    base = ["max_new_tokens=6", f"run={run}", "prompt=the movie"]
    zero = generate(compose("generate", base + ["strength=0", "compare_unsteered=true"]))
    assert zero["steered"] == zero["unsteered"]
    strong = generate(compose("generate", base + ["strength=50", "compare_unsteered=true"]))
    assert strong["steered"] != strong["unsteered"]
    with pytest.raises(ValueError, match="strength must be a finite number"):
        generate(compose("generate", base + ["strength=nan"]))


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_post", "blocks.1.hook_resid_pre"])
def test_cached_activations_give_the_same_logits(model, tokenizer, sae, concept_dir, hook):
    from saebasis.data import load_concept
    from saebasis.interventions import build
    from saebasis.train.datamodule import ConceptDataModule
    from saebasis.train.module import SteeringModule

    iv = build("residual_vector", {}, 32, sae)
    with torch.no_grad():
        iv.v.normal_()
    dm = ConceptDataModule(load_concept(str(concept_dir)), tokenizer, batch_size=3, max_len=24, fixed_batches=True)
    module = SteeringModule(iv, model, hook, {"cache_activations": True, "objective": "sft"}, dm)
    batch = next(iter(dm.train_dataloader()))
    full = module._forward(batch["pos"])
    cached = module._forward(batch["pos"], key=("pos", batch["ids"]))  # fills the cache
    again = module._forward(batch["pos"], key=("pos", batch["ids"]))  # served from it
    assert len(module.cache) == 1
    assert torch.allclose(cached, full, atol=1e-5) and torch.equal(cached, again)


def test_training_with_cached_activations(tiny_overrides):
    result = train(compose("train", ["experiment=residual_vector", "cache_activations=true", "trainer.max_epochs=2", "lr=0.1", *tiny_overrides]))
    assert load_run(result["run_dir"]).intervention.v.abs().sum() > 0 and result["steps"] == 6  # 5 train pairs, batch 2, 2 epochs
