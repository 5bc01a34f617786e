"""The embedded GGUF in llama.cpp vs the same weights in saebasis (transformers, dequantised): next-token logits
unsteered, then the steering effect of an exported sae_bias control vector (slow; needs llama-cpp-python)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from saebasis.core.models import GGUF_FILE, embedded_gguf_dir, load_model
from saebasis.core.stack import load_sae
from saebasis.export import export
from saebasis.export.llamacpp import AGREEMENT_PROMPTS
from saebasis.interventions import build

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python absent: bash scripts/setup_llamacpp.sh"
    ),
]

PROMPTS = AGREEMENT_PROMPTS[:10]  # the prompts its bars were set on
HOOK = "blocks.12.hook_resid_post"


@pytest.fixture(scope="module")
def engines():
    from saebasis.export.llamacpp import LlamaCpp

    loaded = load_model("smollm2")
    return loaded, LlamaCpp(embedded_gguf_dir() / GGUF_FILE)


@pytest.fixture(scope="module")
def bias():
    """An SAE-basis bias on the shipped SAE, sparse as training leaves it (a few latents, fixed values)."""
    sae = load_sae({"path": "builtin:smollm2-l12", "hook": HOOK})
    iv = build("sae_bias", {}, sae.W_dec.shape[1], sae)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        latents = torch.randperm(sae.d_sae, generator=gen)[:8]
        iv.b[latents] = torch.rand(8, generator=gen) * 4 + 2
    return iv


def test_unsteered_logits_agree_and_the_exported_bias_steers_llamacpp_as_saebasis(engines, bias, tmp_path):
    from saebasis.export.llamacpp import compare_engines

    loaded, cpp = engines
    path = export(bias, tmp_path / "bias.gguf", "gguf", 2.0, hook=HOOK)
    out = compare_engines(loaded.model, loaded.tokenizer, cpp, PROMPTS, path, bias, HOOK, 2.0)["summary"]
    # unsteered: llama.cpp multiplies Q4_1 weights by 8-bit-quantised activations, transformers the dequantised
    # weights in float32. Measured (docs/export.md): unsteered max |diff| 0.89, top-1 10/10, min cosine 0.998;
    # steering effect cosine min 0.939 (mean 0.974), norm ratio llama.cpp / saebasis 0.94 .. 1.59.
    assert out["min_logit_cosine"] > 0.99 and out["top1_agreement"] >= 0.8
    assert out["min_effect_cosine"] > 0.9, out  # the steering effect: the same direction in both engines
    assert all(0.5 < r < 2.0 for r in out["effect_norm_ratio"]), out


def test_greedy_generation_in_llamacpp_is_the_argmax_chain_of_its_logits(engines):
    """LlamaCpp.generate (scripts/bench/llamacpp_generation.py) decodes greedily: each token is the argmax of the
    logits after the tokens before it."""
    from saebasis.core.activations import chat_prefix

    loaded, cpp = engines
    tok = loaded.tokenizer
    ids = tok(chat_prefix(tok, "Tell me about your weekend."), add_special_tokens=False)["input_ids"]
    new = cpp.generate(ids, 6)
    assert 1 <= len(new) <= 6
    chain = list(ids)
    for token in new:
        assert int(cpp.logits(chain).argmax()) == token
        chain.append(token)
