"""Export: the vector a method folds to is exactly its applied change; the layer index each format writes; the
files steer the same tiny model as saebasis does, applied by steering-vectors, repeng and lm-eval's own code."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from saebasis.core import hooks
from saebasis.export import FORMATS, block_output_index, export, export_command, export_vector
from saebasis.export.gguf_file import read_gguf
from saebasis.export.lm_eval_file import hookpoint, steer_config
from saebasis.export.vector import llamacpp_layer
from saebasis.interventions import REGISTRY, build
from saebasis.runs import load_run, save_run
from tests.conftest import D_MODEL, N_LAYERS

FOLDING = ["sae_bias", "diffmean", "pca", "sae_latent", "residual_vector", "clamp"]
HOOKS = ["blocks.1.hook_resid_post", "blocks.2.hook_resid_pre"]  # both block output 1 (llama.cpp needs k >= 1)


def randomised(method: str, sae, seed: int = 0, **cfg):
    """A method with random weights (every float parameter / buffer but a whitener's), as after training."""
    if method == "clamp":
        cfg = {"latents": [3, 17], "values": [2.0, -1.5], **cfg}
    iv = build(method, cfg, D_MODEL, sae)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*iv.named_parameters(), *iv.named_buffers()]:
            if t is not None and t.is_floating_point() and "whitener" not in name:
                t.copy_(torch.randn(t.shape, generator=gen))
    return iv


def buildable(method: str, sae) -> bool:
    try:
        build(method, {}, D_MODEL, sae)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("method", FOLDING)
@pytest.mark.parametrize("strength", [0.7, -2.0])
def test_folded_shift_is_exactly_the_change_the_method_applies(method, strength, sae):
    iv = randomised(method, sae)
    h = torch.randn(2, 5, D_MODEL)
    shift = iv.folded_shift(strength)
    assert shift is not None and shift.norm() > 0
    torch.testing.assert_close(iv(h, strength) - h, shift.expand_as(h), rtol=0, atol=1e-6)


def test_folded_shift_follows_the_mahalanobis_bound(sae):
    iv = randomised("sae_bias", sae, mahalanobis_max=0.5)  # whitener W = I until fitted: ||shift|| <= 0.5
    h = torch.randn(1, 4, D_MODEL)
    shift = iv.folded_shift(3.0)
    assert float(shift.norm()) == pytest.approx(0.5, rel=1e-5)
    assert float((3.0 * iv.folded().detach()).norm()) > 0.5  # the bound is active
    torch.testing.assert_close(iv(h, 3.0) - h, shift.expand_as(h), rtol=0, atol=1e-6)


def test_every_method_either_folds_or_refuses_export_with_its_reason(sae, tmp_path):
    for method in sorted(REGISTRY):
        if not buildable(method, sae):
            continue
        iv = build(method, {}, D_MODEL, sae)
        if iv.folded_shift(1.0) is None:
            with pytest.raises(ValueError, match="Cannot export") as err:
                export(iv, tmp_path / f"{method}.gguf", "gguf", 1.0, hook=HOOKS[0])
            assert iv.unfolded_reason() in str(err.value)
        else:  # a method that folds (also one added later): its vector is exactly the change it applies
            iv = randomised(method, sae)
            h = torch.randn(2, 5, D_MODEL)
            torch.testing.assert_close(iv(h, 1.3) - h, iv.folded_shift(1.3).expand_as(h), rtol=0, atol=1e-6)


def test_clamp_in_clamp_mode_refuses_and_names_add_mode(sae, tmp_path):
    iv = build("clamp", {"latents": [1], "values": [2.0], "mode": "clamp"}, D_MODEL, sae)
    with pytest.raises(ValueError, match="mode=add folds"):
        export(iv, tmp_path / "x.gguf", "gguf", 1.0, hook=HOOKS[0])


def test_layer_mapping_from_hook_names():
    assert block_output_index("blocks.5.hook_resid_post") == 5
    assert block_output_index("blocks.5.hook_resid_pre") == 4
    assert block_output_index("model.layers.3") == 3  # an HF block name is its output
    with pytest.raises(ValueError, match="embeddings"):
        block_output_index("blocks.0.hook_resid_pre")


def test_llamacpp_refuses_block_zero_but_repeng_and_the_others_take_it(sae, tmp_path):
    iv = randomised("diffmean", sae)
    with pytest.raises(ValueError, match="direction.0"):
        export(iv, tmp_path / "a.gguf", "gguf", 1.0, hook="blocks.0.hook_resid_post")
    assert set(read_gguf(export(iv, tmp_path / "b.gguf", "repeng", 1.0, hook="blocks.0.hook_resid_post"))) == {0}
    assert llamacpp_layer(export_vector(iv, 1.0, "blocks.3.hook_resid_pre")) == 2


@pytest.mark.parametrize("hook", HOOKS)
def test_gguf_holds_the_shift_at_the_strength_at_the_block_output_index(hook, sae, tmp_path):
    iv = randomised("sae_bias", sae)
    directions = read_gguf(export(iv, tmp_path / "v.gguf", "gguf", 2.5, hook=hook))
    assert list(directions) == [1]
    np.testing.assert_array_equal(directions[1], iv.folded_shift(2.5).numpy().astype(np.float32))


def test_lm_eval_hookpoint_is_the_blocks_module_name_under_base_model(model, sae):
    ev = export_vector(randomised("diffmean", sae), 1.0, "blocks.2.hook_resid_post", model_type="llama")
    assert hookpoint(ev) == "layers.2"
    modules = dict(model.base_model.named_modules())
    assert modules[hookpoint(ev)] is hooks.blocks(model)[2]
    entry = steer_config(ev)["layers.2"]
    assert entry["action"] == "add" and entry["steering_coefficient"] == 1.0 and entry["bias"] is None


def test_unknown_format_and_lm_eval_suffix_are_refused(sae, tmp_path):
    iv = randomised("diffmean", sae)
    with pytest.raises(ValueError, match="Choose one of"):
        export(iv, tmp_path / "x", "onnx", 1.0, hook=HOOKS[0])
    with pytest.raises(ValueError, match=r"\.pt"):
        export(iv, tmp_path / "x.bin", "lm-eval", 1.0, hook=HOOKS[0])
    with pytest.raises(ValueError, match="needs its hook"):
        export(iv, tmp_path / "x.gguf", "gguf", 1.0)


def test_cli_exports_a_saved_run_in_every_format(sae, tmp_path):
    iv = randomised("diffmean", sae)
    run = save_run(tmp_path / "run", iv, {"hook": "blocks.2.hook_resid_pre", "model": {"name": "tiny-llama"}})
    for fmt in FORMATS[:-1]:  # the vector formats (peft: LoRA runs only)
        info = export_command({"run": str(run), "format": fmt, "out": None, "strength": 1.5})
        assert info["layer"] == 1 and info["strength"] == 1.5 and (tmp_path / "run" / "export").is_dir()
    with pytest.raises(ValueError, match="not a LoRA adapter"):
        export_command({"run": str(run), "format": "peft", "out": str(tmp_path / "peft"), "strength": 1.0})
    with pytest.raises(ValueError, match="out of range|blocks"):
        export(load_run(run), tmp_path / "y.gguf", "gguf", 1.0, hook=f"blocks.{N_LAYERS}.hook_resid_post")


# -- the exported files applied by each library's own code: saebasis' steered logits within 1e-5 ---------------
def saebasis_logits(model, iv, hook, strength, ids):
    with hooks.steering(model, hook, iv, strength):
        return model(input_ids=ids).logits


@pytest.fixture
def steered_case(model, sae):
    iv = randomised("sae_bias", sae, seed=1)
    ids = torch.randint(4, 20, (2, 7), generator=torch.Generator().manual_seed(0))
    return model, iv, ids


@pytest.mark.skipif(
    importlib.util.find_spec("steering_vectors") is None, reason="steering-vectors absent: bash scripts/setup_peers.sh"
)
@pytest.mark.parametrize("hook", HOOKS)
def test_steering_vectors_applies_the_export_as_saebasis_does(steered_case, hook, tmp_path):
    from saebasis.export.steering_vectors import load_steering_vector

    model, iv, ids = steered_case
    vector = load_steering_vector(export(iv, tmp_path / "v.safetensors", "steering-vectors", 1.7, hook=hook))
    with torch.no_grad():
        want = saebasis_logits(model, iv, hook, 1.7, ids)
        with vector.apply(model, multiplier=1.0):
            got = model(input_ids=ids).logits
        plain = model(input_ids=ids).logits
    assert (want - plain).abs().max() > 1e-3  # the steering changes the logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("repeng") is None, reason="repeng absent: bash scripts/setup_peers.sh")
@pytest.mark.parametrize("hook", HOOKS)
def test_repeng_applies_the_export_as_saebasis_does(steered_case, hook, tmp_path):
    from saebasis.export.repeng import load_control_vector, require_repeng

    model, iv, ids = steered_case
    vector = load_control_vector(export(iv, tmp_path / "v.gguf", "repeng", 1.7, hook=hook))
    with torch.no_grad():
        want = saebasis_logits(model, iv, hook, 1.7, ids)
        controlled = require_repeng().ControlModel(copy.deepcopy(model), list(vector.directions))
        positions = torch.arange(ids.shape[1]).expand_as(ids)  # repeng's padding mask reads one row per example
        controlled.set_control(vector, coeff=1.0)
        got = controlled(input_ids=ids, position_ids=positions).logits
        controlled.set_control(vector, coeff=2.0)  # repeng's coeff scales the exported shift
        twice = controlled(input_ids=ids, position_ids=positions).logits
        want_twice = saebasis_logits(model, iv, hook, 3.4, ids)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(twice, want_twice, rtol=0, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval absent: bash scripts/setup_lmeval.sh")
@pytest.mark.parametrize("hook", HOOKS)
def test_lm_eval_steered_model_applies_the_export_as_saebasis_does(steered_case, tokenizer, hook, tmp_path):
    from lm_eval.models.hf_steered import SteeredModel

    model, iv, ids = steered_case
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    steer_path = export(iv, tmp_path / "steer.pt", "lm-eval", 1.7, hook=hook)
    lm = SteeredModel(pretrained=str(tmp_path / "hf"), steer_path=str(steer_path), device="cpu", dtype="float32")
    with torch.no_grad():
        want = saebasis_logits(model, iv, hook, 1.7, ids)
        got = lm._model_call(ids)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft absent: bash scripts/setup_peers.sh")
@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"])
def test_lora_exports_a_peft_adapter_that_peft_applies_as_saebasis_does(model, hook, tmp_path):
    from peft import PeftModel

    iv = build("lora", {"rank": 2, "alpha": 4.0, "target_modules": ["o_proj", "down_proj"]}, D_MODEL)
    iv.materialize(model, hook)
    with torch.no_grad():
        for adapter in iv.adapters.values():
            adapter.lora_B.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    ids = torch.randint(4, 20, (2, 7), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="format=peft"):
        export(iv, tmp_path / "x.gguf", "gguf", 1.0, hook=hook)
    folder = export(iv, tmp_path / "adapter", "peft", 1.5, hook=hook)
    with torch.no_grad():
        want = saebasis_logits(model, iv, hook, 1.5, ids)
        plain = model(input_ids=ids).logits
        got = PeftModel.from_pretrained(copy.deepcopy(model), folder)(input_ids=ids).logits
    assert (want - plain).abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
