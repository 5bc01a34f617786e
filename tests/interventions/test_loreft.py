"""LoReFT: saebasis' native application (main venv), and -- when .venv-pyreft exists -- the same logits as pyreft's own
forward, training through pyreft, and the transformers-4 copy of the embedded model folder."""

from __future__ import annotations

import json

import pytest
import torch

from saebasis.core import hooks
from saebasis.interventions import build
from saebasis.interventions.loreft import SETUP, pyreft_python, run_worker
from saebasis.runs import load_run, save_run
from tests.conftest import D_MODEL

HOOK = "blocks.1.hook_resid_post"  # pyreft's layer 1, component block_output


def planted(rank: int = 3, positions: str = "all", d_model: int = D_MODEL, seed: int = 0, scale: float = 2.0):
    """R with orthonormal rows (QR), W and b random: an edit large enough to move the logits."""
    iv = build("loreft", {"rank": rank, "positions": positions}, d_model)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d_model, rank, generator=g))  # [d_model, rank]
    with torch.no_grad():
        iv.R.copy_(q.T)
        iv.W.copy_(scale * torch.randn(rank, d_model, generator=g))
        iv.b.copy_(scale * torch.randn(rank, generator=g))
    return iv


def _logits(model, batch, iv=None, strength=1.0, hook=HOOK):
    if iv is not None:
        iv.begin_generation(batch["attention_mask"])
    with torch.no_grad(), hooks.steering(model, hook, iv, strength):
        return model(**batch).logits


# -- native application (main venv only) ---------------------------------------------------------------------------
def test_identity_at_init_and_at_zero_strength():
    iv = build("loreft", {}, D_MODEL)
    h = torch.randn(2, 5, D_MODEL)
    assert torch.equal(iv(h), h)  # W = R, b = 0 at init: R^T (R h - R h) = 0
    planted_iv = planted()
    assert not torch.allclose(planted_iv(h), h) and planted_iv(h, 0.0) is h
    assert tuple(planted_iv.R.shape) == tuple(planted_iv.W.shape) == (3, D_MODEL) and tuple(planted_iv.b.shape) == (3,)
    assert planted_iv(h).shape == h.shape


def test_a_planted_rank_one_edit_gives_the_hand_computed_output():
    """d = 4, R = e0, W = 2 e1, b = 1: only h0 changes, to h0 + s (2 h1 + 1 - h0)."""
    iv = build("loreft", {"rank": 1}, 4)
    with torch.no_grad():
        iv.R.copy_(torch.tensor([[1.0, 0, 0, 0]]))
        iv.W.copy_(torch.tensor([[0.0, 2, 0, 0]]))
        iv.b.fill_(1.0)
    h = torch.tensor([[[3.0, 5.0, 7.0, 9.0]]])
    assert torch.equal(iv(h, 1.0), torch.tensor([[[11.0, 5.0, 7.0, 9.0]]]))  # 3 + (10 + 1 - 3)
    assert torch.equal(iv(h, 0.5), torch.tensor([[[7.0, 5.0, 7.0, 9.0]]]))  # 3 + 0.5 * 8


def test_matches_the_equation_and_per_row_strengths():
    iv = planted()
    h = torch.randn(3, 4, D_MODEL, dtype=torch.float64)
    R, W, b = (t.detach().double() for t in (iv.R, iv.W, iv.b))
    expected = h + 0.7 * (h @ W.T + b - h @ R.T) @ R  # h + s R^T (W h + b - R h), row vectors
    assert torch.allclose(iv.double()(h, 0.7), expected, atol=1e-10)
    iv = iv.float()
    h = h.float()
    s = torch.tensor([0.0, 0.5, 2.0])
    out = iv(h, s)
    assert torch.equal(out[0], h[0])
    for i in (1, 2):
        assert torch.allclose(out[i], iv(h[i : i + 1], float(s[i]))[0], atol=1e-6)


def test_prompt_only_positions_edit_the_first_and_last_prompt_tokens_once():
    iv = planted(positions="f1+l2")
    h = torch.randn(2, 6, D_MODEL)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # left padding
    iv.begin_generation(mask)
    changed = (iv(h) != h).any(-1)  # [batch, pos]
    assert changed.tolist() == [[False, False, True, False, True, True], [True, False, False, False, True, True]]
    step = torch.randn(2, 1, D_MODEL)
    assert torch.equal(iv(step), step)  # a decode step after the prompt: untouched
    iv.begin_generation(None)  # a bare residual: one unpadded prompt per row
    assert (iv(h) != h).any(-1)[0].tolist() == [True, False, False, False, True, True]
    with pytest.raises(ValueError, match="f<a>\\+l<b>"):
        build("loreft", {"positions": "first5"}, D_MODEL)
    with pytest.raises(ValueError, match="exceeds d_model"):
        build("loreft", {"rank": D_MODEL + 1}, D_MODEL)


def test_gradients_reach_only_its_parameters_and_the_model_is_restored(model, batch):
    iv = planted()
    with hooks.attach(model, HOOK, iv):
        model(**batch).logits.pow(2).mean().backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in iv.parameters())
    with pytest.raises(RuntimeError, match="boom"), hooks.steering(model, HOOK, planted(positions="l1"), 1.0):
        raise RuntimeError("boom")
    assert not any(h for m in model.modules() for h in (m._forward_hooks, m._forward_pre_hooks))


@pytest.mark.parametrize("positions", ["all", "f1+l2"])
def test_save_load_bit_for_bit_and_grid_generation(positions, model, tokenizer, batch, tmp_path):
    from saebasis.core.generation import generate, generate_grid

    iv = planted(positions=positions)
    save_run(tmp_path / "r", iv, {"sae": None})
    loaded = load_run(tmp_path / "r").intervention
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in iv.state_dict().items())
    assert torch.equal(_logits(model, batch, loaded, 1.5), _logits(model, batch, iv, 1.5))
    prompts = ["the movie", "a day is"]
    grid, _ = generate_grid(model, tokenizer, prompts, iv, HOOK, [0.0, 1.0], max_new_tokens=5)
    assert grid[0.0] == generate(model, tokenizer, prompts, None, HOOK, max_new_tokens=5)[0]
    assert grid[1.0] == generate(model, tokenizer, prompts, iv, HOOK, max_new_tokens=5)[0] != grid[0.0]


def test_training_without_pyreft_venv_fails_before_any_heavy_work(monkeypatch, tmp_path, concept_dir):
    from saebasis.config import compose
    from saebasis.training import train as train_module

    monkeypatch.setenv("SAEBASIS_PYREFT_PYTHON", str(tmp_path / "no-venv" / "bin" / "python"))
    monkeypatch.setattr(train_module, "load_stack", lambda *a, **k: pytest.fail("the model was loaded"))
    cfg = compose(
        "train",
        [
            "experiment=loreft",
            "model=tiny",
            "sae=none",
            "logger=none",
            f"data={concept_dir}",
            f"hook={HOOK}",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    with pytest.raises(ImportError, match="bash scripts/setup_pyreft.sh"):
        train_module.train(cfg)
    assert not (tmp_path / "run").exists()


# -- against pyreft itself (needs .venv-pyreft) ----------------------------------------------------------------------
@pytest.fixture
def pyreft_py():
    python = pyreft_python()
    if not python.exists():
        pytest.skip(f"LoReFT's pyreft checks need pyreft's own venv ({python} is missing): {SETUP}")
    return python


def pyreft_logits(python, folder, layer, iv, batch, tmp_path, all_positions: bool, positions=None):
    """pyreft's own forward (ReftModel + LoreftIntervention loaded with pyreft's load_state_dict) on `batch`."""
    from safetensors.torch import load_file, save_file

    save_file(
        {"R": iv.R.detach().contiguous(), "W": iv.W.detach().contiguous(), "b": iv.b.detach().contiguous()},
        tmp_path / "p.safetensors",
    )
    data = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if positions is not None:
        data["positions"] = positions
    save_file({k: v.contiguous() for k, v in data.items()}, tmp_path / "batch.safetensors")
    spec = {
        "model_dir": str(folder),
        "layer": layer,
        "rank": iv.cfg.rank,
        "dtype": "float32",
        "device": "cpu",
        "seed": 0,
        "params": str(tmp_path / "p.safetensors"),
        "data": str(tmp_path / "batch.safetensors"),
        "out": str(tmp_path / "out"),
        "all_positions": all_positions,
    }
    report = run_worker(python, "logits", spec, tmp_path)
    return load_file(tmp_path / "out" / "logits.safetensors"), report


def _position_ids(batch):
    mask = batch["attention_mask"]
    return {**batch, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


@pytest.fixture
def tiny_folder(tmp_path):
    """saebasis' tiny random model saved by transformers 5, and its transformers-4 copy."""
    from saebasis.core.models import tiny_model, transformers4_folder

    lm = tiny_model()
    lm.model.save_pretrained(tmp_path / "tiny")
    return lm, transformers4_folder(tmp_path / "tiny", tmp_path / "tiny-tf4")


@pytest.mark.parametrize("positions", ["all", "f2+l3"])
def test_native_application_gives_pyreft_logits_on_the_tiny_model(pyreft_py, tiny_folder, tmp_path, positions):
    from saebasis.interventions.loreft import parse_positions, prompt_positions

    lm, folder = tiny_folder
    texts = ["a happy little day", "no", "the weather was awful and grey"]
    batch = _position_ids(dict(lm.tokenizer(texts, return_tensors="pt", padding=True)))
    iv = planted(rank=4, positions=positions)
    span = parse_positions(positions)
    where = (
        None
        if span is None
        else prompt_positions(batch["attention_mask"], torch.zeros_like(batch["attention_mask"]), *span)
    )
    theirs, _ = pyreft_logits(pyreft_py, folder, 1, iv, batch, tmp_path, span is None, where)
    mask = batch["attention_mask"].bool()
    base, ours = _logits(lm.model, batch), _logits(lm.model, batch, iv)
    assert (base - theirs["base"])[mask].abs().max() <= 1e-5  # the same model under transformers 4.45
    diff = float((ours - theirs["steered"])[mask].abs().max())
    print(f"loreft positions={positions}: max |logit diff| native vs pyreft = {diff:.2e}")
    assert diff <= 1e-4 and float((ours - base)[mask].abs().max()) > 0.1


def test_trains_through_pyreft_and_the_run_reloads_to_pyreft_logits(pyreft_py, tmp_path, concept_dir):
    from saebasis.config import compose
    from saebasis.core.models import transformers4_folder
    from saebasis.core.stack import load_stack
    from saebasis.training.train import train

    overrides = [
        "experiment=loreft",
        "model=tiny",
        "sae=none",
        "logger=none",
        f"data={concept_dir}",
        f"hook={HOOK}",
        "batch_size=2",
        "max_len=24",
        "n_samples=1",
        "trainer.max_epochs=2",
        "lr=0.05",
        f"run_dir={tmp_path / 'run'}",
    ]
    result = train(compose("train", overrides))
    assert (
        result["steps"] == 6 and len(result["loss_curve"]) == 6 and result["loss_curve"][-1] < result["loss_curve"][0]
    )
    assert result["trained_by"]["pyreft"] == "0.1.0" and result["orthonormality_error"] < 1e-5
    run = load_run(result["run_dir"])  # cfg.json + intervention.safetensors + metrics.json: no pyreft needed
    assert sorted(p.name for p in run.path.iterdir()) == ["cfg.json", "intervention.safetensors", "metrics.json"]
    iv = run.intervention
    assert not torch.allclose(iv.W, iv.R)  # moved off the identity init
    lm = load_stack({"model": run.cfg["model"], "sae": None, "hook": HOOK})
    lm.model.save_pretrained(tmp_path / "tiny")
    batch = _position_ids(dict(lm.tokenizer(["the movie 3", "a good day"], return_tensors="pt", padding=True)))
    theirs, _ = pyreft_logits(
        pyreft_py, transformers4_folder(tmp_path / "tiny", tmp_path / "tiny-tf4"), 1, iv, batch, tmp_path, True
    )
    mask = batch["attention_mask"].bool()
    assert float((_logits(lm.model, batch, iv) - theirs["steered"])[mask].abs().max()) <= 1e-4


@pytest.mark.slow
def test_embedded_model_folder_loads_under_transformers_4_with_its_rope_and_tokenizer(pyreft_py, tmp_path):
    from saebasis.core.activations import chat_prefix
    from saebasis.core.models import embedded_model_dir, load_model, transformers4_folder

    folder = transformers4_folder(embedded_model_dir())
    lm = load_model("smollm2")
    prompts = ["Describe your weekend.", "Write a short review of a new coffee shop."]
    spec = {"model_dir": str(folder), "prompts": prompts, "out": str(tmp_path / "enc")}
    enc = run_worker(pyreft_py, "encode", spec, tmp_path)
    ours = [lm.tokenizer(chat_prefix(lm.tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    assert (
        enc["ids"] == ours
        and enc["rope_theta"]
        == json.loads((embedded_model_dir() / "config.json").read_text())["rope_parameters"]["rope_theta"]
    )
    batch = _position_ids(
        dict(
            lm.tokenizer(
                [chat_prefix(lm.tokenizer, p) for p in prompts],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
        )
    )
    iv = planted(rank=4, d_model=lm.model.config.hidden_size, scale=0.5)
    theirs, report = pyreft_logits(pyreft_py, folder, 12, iv, batch, tmp_path, True)
    mask = batch["attention_mask"].bool()
    base_diff = float((_logits(lm.model, batch) - theirs["base"])[mask].abs().max())
    steer_diff = float(
        (_logits(lm.model, batch, iv, hook="blocks.12.hook_resid_post") - theirs["steered"])[mask].abs().max()
    )
    print(
        f"embedded SmolLM2 under transformers 4.45: rope_theta {report['rope_theta']}, "
        f"max |logit diff| base {base_diff:.2e}, "
        f"loreft at block 12 {steer_diff:.2e}"
    )
    assert report["rope_theta"] == enc["rope_theta"] and base_diff <= 1e-3 and steer_diff <= 1e-3
