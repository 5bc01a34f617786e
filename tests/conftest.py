"""Tiny random models and SAEs built from configs: no network, no downloads."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from saebasis.core.models import prepare
from saebasis.core.sae import SAEBasis

D_MODEL = 32
D_SAE = 64
N_LAYERS = 3
HOOK = "blocks.1.hook_resid_post"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a fixed vocabulary (unknown words -> [UNK])."""
    words = [
        "the",
        "a",
        "good",
        "bad",
        "great",
        "awful",
        "movie",
        "film",
        "day",
        "weather",
        "is",
        "was",
        "i",
        "love",
        "hate",
        "this",
        "it",
        "and",
        "not",
        "very",
    ]
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )
    return fast


def tiny_llama(seed: int = 0, vocab_size: int = 64):
    """saebasis' one tiny-model factory (`model=tiny`) with this file's word-level vocabulary: the fixtures and
    the CLI's tiny model are the same architecture (d_model 32, 3 layers)."""
    from saebasis.core.models import tiny_model

    torch.manual_seed(seed)  # callers that re-seed after building rely on the old global-RNG behaviour
    return tiny_model(
        seed=seed,
        tokenizer=tiny_tokenizer(),
        vocab_size=vocab_size,
        max_position_embeddings=128,
        bos_token_id=2,
        eos_token_id=3,
    ).model


def tiny_sae(d_in: int = D_MODEL, d_sae: int = D_SAE, hook: str = HOOK, seed: int = 0) -> SAEBasis:
    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    sae.cfg.metadata.hook_name = hook
    return SAEBasis(sae, hook)


def tiny_stack_overrides(folder, sae: SAEBasis) -> list[str]:
    """The overrides that point any command (train, fit-baseline, compare, demo, leaderboard) at the tiny model and
    `sae`, saved once under `folder`: the one place tests spell the tiny stack."""
    sae.sae.save_model(folder / "sae")
    return ["model=tiny", f"sae.path={folder / 'sae'}", f"sae.hook={sae.hook}", "sae.check=false"]


@pytest.fixture
def tiny_stack(tmp_path, sae) -> list[str]:
    return tiny_stack_overrides(tmp_path, sae)


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def model(tokenizer):
    return prepare(tiny_llama(), tokenizer)


@pytest.fixture
def sae():
    return tiny_sae()


@pytest.fixture
def batch(tokenizer):
    texts = ["i love this movie and the day is great", "the weather was awful", "a bad film"]
    return dict(tokenizer(texts, return_tensors="pt", padding=True))


def write_concept(root, n_pairs: int = 6):
    """A tiny concept folder in the saebasis.data format (for tests that need a dataset)."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / "concept.yaml").write_text("name: tiny\ndescription: positive sentiment\njudge: vader\n")
    pos = ["i love this great movie", "a good day", "great weather and good film"]
    neg = ["i hate this awful movie", "a bad day", "awful weather and bad film"]
    rows = [{"prompt": f"the movie {i}", "positive": pos[i % 3], "negative": neg[i % 3]} for i in range(n_pairs)]
    (root / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (root / "neutral.jsonl").write_text(
        "\n".join(json.dumps({"prompt": p}) for p in ["the day", "a film", "the weather"])
    )
    instr = [{"instruction": f"tell me about the film {i}", "split": "val" if i % 2 else "test"} for i in range(4)]
    (root / "instructions.jsonl").write_text("\n".join(json.dumps(r) for r in instr))
    return root


@pytest.fixture
def concept_dir(tmp_path):
    return write_concept(tmp_path / "concept")


@pytest.fixture
def stack(model, tokenizer, sae):
    """The tiny model, its tokenizer and SAE as a frozen stack, built in memory (nothing saved): what
    train_core / fit_intervention and the Python API take. CLI tests name their SAE by folder instead
    (tiny_stack_overrides)."""
    from saebasis.core.stack import Stack

    return Stack(model, tokenizer, sae, HOOK, None)
