"""Tiny random models and SAEs built from configs: no network, no downloads."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast
from tokenizers import Tokenizer, models, pre_tokenizers

from saebasis.models import prepare
from saebasis.sae import SAEBasis

D_MODEL = 32
D_SAE = 64
N_LAYERS = 3
HOOK = "blocks.1.hook_resid_post"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a fixed vocabulary (unknown words -> [UNK])."""
    words = "the a good bad great awful movie film day weather is was i love hate this it and not very".split()
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )
    return fast


def tiny_llama(seed: int = 0, vocab_size: int = 64):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=D_MODEL, intermediate_size=64, num_hidden_layers=N_LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
        pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    return AutoModelForCausalLM.from_config(cfg)


def tiny_sae(d_in: int = D_MODEL, d_sae: int = D_SAE, hook: str = HOOK, seed: int = 0) -> SAEBasis:
    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    sae.cfg.metadata.hook_name = hook
    return SAEBasis(sae, hook)


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
