import subprocess
import sys

import pytest
import torch

from saebasis.core import hooks
from saebasis.core.models import load_model
from tests.conftest import tiny_llama, tiny_tokenizer


def test_load_local_folder_like_a_hub_model(tmp_path):
    model, tok = tiny_llama(), tiny_tokenizer()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    ids = torch.tensor([[4, 5, 6]])
    assert torch.equal(loaded.model(ids).logits, model.eval()(ids).logits)
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token is not None


def test_missing_model_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="Could not load model"):
        load_model(str(tmp_path / "no-such-model"))


def test_cli_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "saebasis.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("demo", "train-sae", "sae-info", "train", "fit-baseline", "generate", "compare", "interpret", "sweep"):
        assert f"  {cmd} " in out


def test_cli_unknown_command_exits_2():
    proc = subprocess.run([sys.executable, "-m", "saebasis.cli", "fly"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown command 'fly'" in proc.stderr


@pytest.mark.slow
def test_embedded_model_loads_and_hooks():
    loaded = load_model("smollm2")
    cfg = loaded.model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size) == ("llama", 30, 576)
    ids = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hello."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    base = loaded.model.generate(ids, max_new_tokens=8, do_sample=False)
    with hooks.attach(loaded.model, "blocks.12.hook_resid_post", lambda h: h):
        assert torch.equal(loaded.model.generate(ids, max_new_tokens=8, do_sample=False), base)
    assert loaded.tokenizer.decode(base[0, ids.shape[1] :]).strip()


def test_transformers4_folder_writes_the_rope_theta_dtype_and_tokenizer_4x_reads(tmp_path):
    """transformers 5 stores rope_theta under rope_parameters (4.x would fall back to 1e4) and a tokenizer class 4.x
    lacks; the copy for peers in a 4.x venv states both the 4.x way, links the weights, and refreshes on change."""
    import json

    from saebasis.core.models import tiny_model, transformers4_folder

    lm = tiny_model(rope_parameters={"rope_type": "default", "rope_theta": 12345.0})
    lm.model.save_pretrained(tmp_path / "src")
    lm.tokenizer.save_pretrained(tmp_path / "src")
    (tmp_path / "src" / "chat_template.jinja").write_text("{{ messages }}")
    out = transformers4_folder(tmp_path / "src", tmp_path / "tf4")
    config = json.loads((out / "config.json").read_text())
    assert config["rope_theta"] == 12345.0 and config["torch_dtype"] == "float32"
    tok = json.loads((out / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast" and tok["chat_template"] == "{{ messages }}"
    assert (out / "model.safetensors").is_symlink() and (out / "model.safetensors").resolve() == (
        tmp_path / "src" / "model.safetensors"
    ).resolve()
    assert load_model(str(out)).model.config.rope_parameters["rope_theta"] == 12345.0  # still loads under 5.x
    assert transformers4_folder(tmp_path / "src", tmp_path / "tf4") == out  # unchanged source: reused
    (tmp_path / "src" / "chat_template.jinja").write_text("{{ other }}")
    transformers4_folder(tmp_path / "src", tmp_path / "tf4")
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == "{{ other }}"
