import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)

from saebasis.core import hooks

SMALL = dict(vocab_size=50, num_attention_heads=2)
FAMILIES = {
    "llama": LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, **SMALL),
    "mistral": MistralConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_key_value_heads=2, **SMALL),
    "qwen2": Qwen2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_key_value_heads=2, **SMALL),
    "gemma": GemmaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, head_dim=8, num_key_value_heads=2, **SMALL
    ),
    "gemma2": Gemma2Config(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, head_dim=8, num_key_value_heads=2, **SMALL
    ),
    "gpt2": GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50),
    "gpt_neox": GPTNeoXConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, **SMALL),
}


@pytest.fixture(params=sorted(FAMILIES))
def family_model(request):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(FAMILIES[request.param]).eval()


def test_hook_names_resolve_for_each_family(family_model):
    for layer in (0, 1):
        for kind in ("pre", "post"):
            module, point = hooks.resolve(family_model, f"blocks.{layer}.hook_resid_{kind}")
            assert module is hooks.blocks(family_model)[layer]
            assert point.layer == layer and point.kind == kind


def test_attach_identity_is_bit_identical_and_removed(family_model):
    ids = torch.randint(0, 50, (2, 7))
    clean = family_model(ids).logits
    for hook in ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"):
        with hooks.attach(family_model, hook, lambda h: h):
            assert torch.equal(family_model(ids).logits, clean)
    assert torch.equal(family_model(ids).logits, clean)
    assert all(not b._forward_hooks and not b._forward_pre_hooks for b in hooks.blocks(family_model))


def test_attach_changes_output_and_reads_the_right_residual(family_model):
    ids = torch.randint(0, 50, (1, 5))
    out = family_model(ids, output_hidden_states=True)
    # hidden_states[L] is the input of block L (resid_pre); before the final norm hidden_states[L+1] = resid_post
    pre = hooks.run_to_hook(family_model, "blocks.1.hook_resid_pre", input_ids=ids)
    assert torch.allclose(pre, out.hidden_states[1], atol=1e-6)
    post = hooks.run_to_hook(family_model, "blocks.0.hook_resid_post", input_ids=ids)
    assert torch.allclose(post, out.hidden_states[1], atol=1e-6)
    with hooks.attach(family_model, "blocks.0.hook_resid_post", lambda h: h + 1.0):
        assert not torch.allclose(family_model(ids).logits, out.logits)


def test_hooks_removed_on_exception(model):
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.attach(model, "blocks.0.hook_resid_post", lambda h: h * 2):
            raise RuntimeError("boom")
    assert all(not b._forward_hooks and not b._forward_pre_hooks for b in hooks.blocks(model))


def test_unknown_hook_and_layer_out_of_range(model):
    with pytest.raises(ValueError, match="Unknown hook 'blocks.1.hook_mlp_out'"):
        hooks.resolve(model, "blocks.1.hook_mlp_out")
    with pytest.raises(ValueError, match="layer 9 is out of range; this model has 3 layers"):
        hooks.resolve(model, "blocks.9.hook_resid_post")


def test_hf_block_names_map_to_resid_post():
    assert hooks.parse_hook("model.layers.12").name == "blocks.12.hook_resid_post"


def test_attach_during_generate_with_kv_cache_and_positions(model):
    ids = torch.randint(4, 20, (1, 5))
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    base = model.generate(ids, **kw)
    with hooks.attach(model, "blocks.1.hook_resid_post", lambda h: h):
        assert torch.equal(model.generate(ids, **kw), base)
    seen = []

    def spy(h):
        seen.append(h.shape[1])
        return h + 5.0

    with hooks.attach(model, "blocks.1.hook_resid_post", spy, positions=[2, 6]):
        steered = model.generate(ids, **kw)
    assert seen[0] == 5 and all(s == 1 for s in seen[1:])  # prefill, then one token per cached step
    assert not torch.equal(steered, base)
    # positions restrict the change: only absolute positions 2 and 6 differ from identity
    calls = []

    def record(h):
        calls.append(h.clone())
        return h + 1.0

    with hooks.attach(model, "blocks.0.hook_resid_post", record, positions=[6]):
        model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert len(calls) == 3  # prefill (positions 0-4), then positions 5 and 6
