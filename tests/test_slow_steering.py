"""Integration on the embedded model: the trained SAE-basis bias steers sentiment (slow, runs in CI)."""

import pytest

from saebasis.config import compose
from saebasis.core.generation import generate
from saebasis.core.models import load_model
from saebasis.judges import vader_compound
from saebasis.runs import load_run
from saebasis.training.train import train


@pytest.mark.slow
def test_sae_bias_moves_judged_sentiment_positive(tmp_path):
    result = train(
        compose(
            "train",
            [
                "experiment=sae_bias",
                "logger=none",
                "trainer.max_epochs=2",
                "n_samples=0",
                "sae.check=false",
                "trainer.enable_progress_bar=false",
                f"run_dir={tmp_path / 'run'}",
            ],
        )
    )
    run = load_run(result["run_dir"])
    loaded = load_model("smollm2")
    prompts = [
        "Write a few sentences about your town.",
        "Tell me about a train journey.",
        "Describe a busy street.",
        "Write about a long drive.",
        "Tell me about a neighbour.",
        "Describe an old photograph.",
    ]
    base, _ = generate(loaded.model, loaded.tokenizer, prompts, None, run.cfg["hook"], max_new_tokens=32)
    steered, _ = generate(loaded.model, loaded.tokenizer, prompts, run.intervention, run.cfg["hook"], max_new_tokens=32)
    before, after = sum(vader_compound(base)) / len(base), sum(vader_compound(steered)) / len(steered)
    assert after > before + 0.1, (before, after, steered)
