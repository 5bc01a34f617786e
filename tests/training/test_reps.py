"""objective=reps (RePS, Wu et al. 2025): gradient signs and weights on a hand-made batch, the loss of an intervention
at init equals the loss of the unsteered model, factor sampling, and short training runs of every Lightning-trained
method from the real configs."""

from __future__ import annotations

import math

import pytest
import torch

from saebasis.config import compose
from saebasis.core.stack import load_stack
from saebasis.data import load_concept
from saebasis.interventions import build
from saebasis.training.datamodule import ConceptDataModule
from saebasis.training.module import SteeringModule, check_objective, mean_logp, reps_loss
from saebasis.training.train import train
from tests.conftest import D_MODEL


def hand_made():
    """Two rows of mean log-probs (positive / negative completion, under +a / -a) and unsteered summed log-probs:
    row 0's positive completion is 5 nats less likely than its negative one, row 1's 3 nats more likely."""
    values = {
        name: torch.tensor(v, requires_grad=True)
        for name, v in {
            "plus_pos": [-2.0, -1.0],
            "plus_neg": [-1.5, -1.2],
            "minus_pos": [-1.8, -0.9],
            "minus_neg": [-1.1, -1.3],
            "ref_pos": [-20.0, -10.0],
            "ref_neg": [-15.0, -13.0],
        }.items()
    }
    return values


def test_gradient_signs_on_a_hand_made_batch():
    v = hand_made()
    reps_loss(**v).backward()
    assert bool((v["plus_pos"].grad < 0).all())  # raising y_c's log-prob under +a lowers the loss
    assert bool((v["plus_neg"].grad > 0).all())  # raising y's under +a raises it
    assert bool((v["minus_neg"].grad < 0).all())  # the mirror: raising y's under -a lowers it
    assert bool((v["minus_pos"].grad > 0).all())  # and raising y_c's under -a raises it
    assert v["ref_pos"].grad is None and v["ref_neg"].grad is None  # the weights carry no gradient


def test_weights_are_max_of_the_reference_gap_and_one():
    v = hand_made()
    loss = reps_loss(**v)
    b_plus, b_minus = (
        torch.tensor([5.0, 1.0]),
        torch.tensor([1.0, 3.0]),
    )  # max(ref_neg - ref_pos, 1), max(ref_pos - ref_neg, 1)
    d_plus = b_plus * v["plus_pos"] - v["plus_neg"]
    d_minus = b_minus * v["minus_neg"] - v["minus_pos"]
    want = (-torch.nn.functional.logsigmoid(d_plus) - torch.nn.functional.logsigmoid(d_minus)).mean()
    assert float(loss.detach()) == pytest.approx(float(want.detach()), abs=1e-6)
    loss.backward()
    sig = torch.sigmoid(-d_plus.detach())  # d(-log sigmoid(D))/dD = -sigmoid(-D); the positive term weighs b+
    assert torch.allclose(v["plus_pos"].grad, -b_plus * sig / 2) and torch.allclose(v["plus_neg"].grad, sig / 2)


def test_mean_logp_normalises_by_completion_length():
    logits = torch.zeros(1, 4, 5)  # uniform over 5 tokens: every log-prob is -log 5
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4]]), "completion_mask": torch.tensor([[False, True, True, True]])}
    assert float(mean_logp(logits, batch)) == pytest.approx(-math.log(5))


def test_unknown_objective_and_bad_factors_are_refused():
    with pytest.raises(ValueError, match="not a training objective.*'reps'"):
        check_objective({"objective": "rep"})
    with pytest.raises(ValueError, match="reps_strengths must be positive"):
        check_objective({"objective": "reps", "reps_strengths": [1.0, -1.0]})


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


def module_for(cfg, intervention=None):
    stack = load_stack(cfg)
    dm = ConceptDataModule(load_concept(cfg["data"]), stack.tokenizer, 4, cfg["max_len"], 0.0, 0)
    dm.setup("fit")
    iv = intervention or build(
        cfg["intervention"]["method"],
        {k: v for k, v in cfg["intervention"].items() if k != "method"},
        D_MODEL,
        stack.sae,
    )
    return SteeringModule(iv, stack.model, stack.hook, cfg, dm), next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("cache", [False, True])
def test_identity_at_init_gives_the_unsteered_models_loss(tiny_overrides, cache):
    """At init the intervention changes nothing at any factor, so its RePS loss is the unsteered model's."""
    cfg = dict(compose("train", ["experiment=sae_bias", "objective=reps", *tiny_overrides]))
    cfg = {**cfg, "intervention": dict(cfg["intervention"]), "cache_activations": cache}
    module, batch = module_for(cfg)
    h = torch.randn(2, 3, D_MODEL)
    assert torch.equal(module.intervention(h, 2.0), h) and torch.equal(module.intervention(h, -2.0), h)
    with torch.no_grad():
        loss = module._reps(batch["pos"], batch["neg"], "train")
        base = {k: mean_logp(module._forward(batch[k], steer=False), batch[k]) for k in ("pos", "neg")}
        ref = {k: module._logp(batch[k], steer=False) for k in ("pos", "neg")}
    want = reps_loss(base["pos"], base["neg"], base["pos"], base["neg"], ref["pos"], ref["neg"])
    assert float(loss) == pytest.approx(float(want), abs=1e-5)


def test_factors_are_drawn_from_the_configured_set_and_reproducible(tiny_overrides):
    cfg = dict(
        compose("train", ["experiment=residual_vector", "objective=reps", "reps_strengths=[0.5,3.0]", *tiny_overrides])
    )
    module, _ = module_for({**cfg, "intervention": dict(cfg["intervention"])})
    a = module._factors(64, "train")
    assert set(a.tolist()) == {0.5, 3.0} and torch.equal(a, module._factors(64, "train"))
    assert not torch.equal(a, module._factors(64, "val"))


@pytest.mark.parametrize(
    "experiment",
    ["sae_bias", "sae_adaptor_sparse", "sae_adaptor_lowrank", "residual_adaptor", "residual_vector", "lora"],
)
def test_a_short_reps_run_of_each_trained_method(experiment, tiny_overrides):
    if experiment == "lora":
        pytest.importorskip("peft")
    result = train(compose("train", [f"experiment={experiment}", "objective=reps", "debug=fast", *tiny_overrides]))
    assert result["steps"] == 1 and math.isfinite(result["train/objective"])
    assert result["run"].cfg["config"]["objective"] == "reps"


def test_reps_training_steers_up_at_plus_a_and_down_at_minus_a(tiny_overrides):
    """A steering vector trained with RePS prefers the positive completion at +1 and the negative one at -1 (margins
    of mean log-probs, measured against the unsteered model on the training pairs)."""
    cfg = compose(
        "train",
        [
            "experiment=residual_vector",
            "objective=reps",
            "trainer.max_epochs=6",
            "lr=0.05",
            "val_fraction=0.0",
            *tiny_overrides,
        ],
    )
    result = train(cfg)
    run = result["run"]
    module, batch = module_for({**dict(run.cfg["config"]), "cache_activations": False}, run.intervention)

    def margin(strength):
        with torch.no_grad():
            lp = {
                k: mean_logp(module._forward(batch[k], keep=0, strength=strength, steer=strength != 0), batch[k])
                for k in ("pos", "neg")
            }
        return float((lp["pos"] - lp["neg"]).mean())

    assert margin(1.0) > margin(0.0) > margin(-1.0)
