"""Reliability: bad configs fail early and clearly, crashes never leave loadable half-results,
loading never runs code, the memory-flat SAE paths are exact, benchmarks write their JSON."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from saebasis import runs
from saebasis.core.sae import SAEBasis
from saebasis.interventions import build
from saebasis.runs import load_run, save_run
from saebasis.validate import ConfigError, validate
from tests.conftest import D_MODEL, tiny_sae

REPO = Path(__file__).resolve().parents[1]
NAN = float("nan")


# -- memory-flat SAE encoding -------------------------------------------------------------------
def test_chunked_and_topk_encodings_match_dense(sae):
    h = torch.randn(3, 7, D_MODEL)  # [batch, pos, d_model], 21 tokens: chunks of 5 leave a remainder
    dense = sae.encode(h)
    assert torch.allclose(sae.encode_chunked(h, chunk=5), dense, atol=1e-5)
    full = sae.encode_topk_sparse(h, k=sae.d_sae, chunk=5)
    assert full.exact and full.indices.shape == (3, 7, sae.d_sae)
    assert torch.allclose(full.to_dense(), dense, atol=1e-5)


def test_topk_keeps_the_largest_latents_and_reports_truncation(sae):
    h = torch.randn(4, D_MODEL)
    dense = sae.encode(h)
    l0 = int((dense != 0).sum(-1).max())
    assert 1 < l0 < sae.d_sae  # the fixture has some, not all, latents active
    cut = sae.encode_topk_sparse(h, k=l0 - 1, chunk=3)
    assert not cut.exact
    assert torch.allclose(cut.values, dense.topk(l0 - 1, -1).values, atol=1e-5)
    assert sae.encode_topk_sparse(h, k=l0, chunk=3).exact
    with pytest.raises(ValueError, match="k must be in 1..d_sae"):
        sae.encode_topk_sparse(h, k=0)


# -- config validation, before any heavy work ---------------------------------------------------
def write_concept(root: Path, pairs: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "concept.yaml").write_text("name: joy\ndescription: joyful text\njudge: vader\n")
    row = {"prompt": "Say", "positive": "great", "negative": "awful"}
    (root / "pairs.jsonl").write_text(json.dumps(row) + "\n" if pairs is None else pairs)
    (root / "neutral.jsonl").write_text(json.dumps({"prompt": "The sky"}) + "\n")
    (root / "instructions.jsonl").write_text(json.dumps({"instruction": "Write.", "split": "val"}) + "\n")
    return root


def save_sae(path: Path, d_in: int = 32) -> Path:
    tiny_sae(d_in=d_in).sae.save_model(path)
    return path


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Any model load or forward pass fails the test: validation must come first."""
    import transformers

    def heavy(*_a, **_k):
        raise AssertionError("heavy work started before the config was validated")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", heavy)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", heavy)


def good_cfg(tmp_path: Path) -> dict:
    return {
        "model": {"name": "tiny-llama"},
        "hook": "blocks.1.hook_resid_post",
        "sae": {"path": str(save_sae(tmp_path / "sae")), "sae_id": None, "hook": "blocks.1.hook_resid_post"},
        "intervention": {"method": "sae_bias", "l1_coef": 0.0},
        "data": str(write_concept(tmp_path / "concept")),
    }


def test_good_config_passes_and_each_bad_field_is_caught_alone(tmp_path, no_heavy_work):
    cfg = good_cfg(tmp_path)
    assert validate(cfg) is None  # the good config raises nothing and loads no model (no_heavy_work)
    cfg["hook"] = "blocks.1.hook_attn_out"  # the same config with one bad field fails: the pass above was not vacuous
    with pytest.raises(ConfigError, match="config field 'hook'"):
        validate(cfg)


@pytest.mark.parametrize(
    ("change", "field", "fix"),
    [
        (lambda c, p: c.update(hook="blocks.1.hook_attn_out"), "hook", "blocks.12.hook_resid_post"),
        (lambda c, p: c.update(hook="blocks.9.hook_resid_post"), "hook", r"pick a layer in 0\.\.2"),
        (lambda c, p: c["sae"].update(path=str(save_sae(p / "wide", d_in=64))), "sae.path", "d_in=64 .* d_model=32"),
        (lambda c, p: c.update(hook="blocks.2.hook_resid_post"), "hook", "the SAE reads blocks.1.hook_resid_post"),
        (lambda c, p: c["intervention"].update(method="nope"), "intervention.method", "choose one of"),
        (lambda c, p: c["intervention"].update(l2=1.0), "intervention", r"Unknown field\(s\) \['l2'\]"),
        (lambda c, p: c.update(data=str(write_concept(p / "empty", pairs=""))), "data", "is empty"),
        (lambda c, p: c.update(data=str(write_concept(p / "bad", pairs="{oops\n"))), "data", "not valid JSON"),
        (lambda c, p: c.update(data=str(p / "nowhere")), "data", "No dataset"),
        (lambda c, p: c.update(data=None), "data", "no dataset given"),
    ],
    ids=[
        "unknown-hook",
        "layer-out-of-range",
        "sae-width",
        "hook-vs-sae",
        "unknown-method",
        "unknown-field",
        "empty-dataset",
        "malformed-dataset",
        "missing-dataset",
        "no-dataset",
    ],
)
def test_bad_config_names_field_and_fix(tmp_path, no_heavy_work, change, field, fix):
    cfg = good_cfg(tmp_path)
    change(cfg, tmp_path)
    with pytest.raises(ConfigError, match=fix) as info:
        validate(cfg)
    assert info.value.field == field
    assert f"config field '{field}'" in str(info.value) and "Fix:" in str(info.value)


# -- crashes never leave a half-written run that loads -----------------------------------------
def _fork_and_die_mid_save(target: Path, iv, metrics: dict) -> int:
    """Save a run in a forked child that SIGKILLs itself after the weights, before the config."""
    pid = os.fork()
    if pid == 0:  # child: no torch compute here, only file writes
        try:
            runs._write_json = lambda *_a, **_k: os.kill(os.getpid(), signal.SIGKILL)
            save_run(target, iv, {"sae": None}, metrics)
        finally:
            os._exit(3)  # not reached when the kill lands
    _, status = os.waitpid(pid, 0)
    return status


def test_sigkill_mid_save_never_leaves_a_loadable_half_run(sae, tmp_path):
    iv = build("sae_bias", {"l1_coef": 0.0}, D_MODEL, sae)
    status = _fork_and_die_mid_save(tmp_path / "fresh", iv, {"v": 1})
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert not (tmp_path / "fresh").exists()  # nothing at the target: a crash is "no run", not half a run
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".fresh.tmp-")]
    assert leftovers and not (leftovers[0] / "cfg.json").exists()
    with pytest.raises(FileNotFoundError):
        load_run(leftovers[0], sae=sae)

    save_run(tmp_path / "old", iv, {"sae": None}, {"v": 1})
    _fork_and_die_mid_save(tmp_path / "old", iv, {"v": 2})
    assert load_run(tmp_path / "old", sae=sae).metrics == {"v": 1}  # the previous run is intact


# -- loading never executes code ----------------------------------------------------------------
class _Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickles_are_never_executed(sae, tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    save_run(tmp_path / "run", build("sae_bias", {}, D_MODEL, sae), {"sae": None})
    (tmp_path / "run" / "intervention.safetensors").write_bytes(evil)  # pickle under a safetensors name
    with pytest.raises(ValueError, match="is corrupt"):
        load_run(tmp_path / "run", sae=sae)
    (tmp_path / "run" / "weights.pkl").write_bytes(evil)
    with pytest.raises(ValueError, match="never pickles"):
        load_run(tmp_path / "run", sae=sae)

    sae_dir = save_sae(tmp_path / "sae")
    (sae_dir / "sae_weights.safetensors").unlink()
    (sae_dir / "sae_weights.pt").write_bytes(evil)
    with pytest.raises(FileNotFoundError, match="needs cfg.json and sae_weights.safetensors"):
        SAEBasis.load(str(sae_dir))
    cfg = good_cfg(tmp_path / "c")
    cfg["sae"]["path"] = str(sae_dir)
    with pytest.raises(ConfigError, match="never pickles"):
        validate(cfg)
    assert not marker.exists()


# -- benchmarks: --quick writes the JSON schema (not a timing test) ----------------------------
BENCHES = sorted((REPO / "scripts" / "bench").glob("bench_*.py"))


@pytest.mark.parametrize("script", BENCHES, ids=[p.stem for p in BENCHES])
def test_bench_quick_writes_json_schema(script, tmp_path):
    out = tmp_path / f"{script.stem}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["quick"] is True and record["benchmark"]
    assert {"cpu", "cores", "torch", "gpu", "device"} <= set(record["machine"])
    assert record["gpu_measured"] is False
    assert isinstance(record["results"], list) and record["results"]
    assert isinstance(record["ratios"], dict) and all(
        isinstance(v, (int, float)) or v is None for v in record["ratios"].values()
    )


def test_bench_random_weights_builds_the_folders_architecture_without_its_weights(tmp_path, monkeypatch):
    """`--random-weights` (GPU runs where the weights cannot be copied): the folder's config and tokenizer, seeded
    random weights, never the stored ones; a folder without config.json is refused by name."""
    import argparse

    from saebasis.core.models import tiny_model

    monkeypatch.syspath_prepend(str(REPO / "scripts" / "bench"))
    import common

    stored = tiny_model()
    with torch.no_grad():
        for p in stored.model.parameters():
            p.zero_()
    stored.model.save_pretrained(tmp_path / "m")
    stored.tokenizer.save_pretrained(tmp_path / "m")
    args = argparse.Namespace(model=str(tmp_path / "m"), device="cpu", dtype="bfloat16", random_weights=True)
    a, b = common.random_weights_model(args), common.random_weights_model(args)
    shapes = {n: p.shape for n, p in stored.model.named_parameters()}
    assert {n: p.shape for n, p in a.model.named_parameters()} == shapes
    assert all(p.dtype == torch.bfloat16 for p in a.model.parameters())
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))  # seeded
    assert any(p.abs().sum() > 0 for p in a.model.parameters())  # not the stored (zero) weights
    assert a.tokenizer("hello")["input_ids"] == stored.tokenizer("hello")["input_ids"]
    with pytest.raises(SystemExit, match="config.json"):
        common.random_weights_model(argparse.Namespace(model=str(tmp_path), device="cpu", dtype="float32"))


def test_bench_autocast_runs_the_forward_in_the_chosen_dtype_and_is_off_by_default(monkeypatch):
    """`bench_training.py --autocast bfloat16` (trainer=gpu's bf16-mixed): fp32 weights, matmuls in bf16; off = fp32."""
    from saebasis.core.models import tiny_model

    monkeypatch.syspath_prepend(str(REPO / "scripts" / "bench"))
    import common

    model = tiny_model().model
    lin = torch.nn.Linear(4, 3)
    monkeypatch.setattr(common, "AUTOCAST", None)
    with common.autocast(model):
        assert lin(torch.randn(2, 4)).dtype == torch.float32
    monkeypatch.setattr(common, "AUTOCAST", "bfloat16")
    with common.autocast(model):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    assert lin.weight.dtype == torch.float32


# -- training: NaN stop, SIGKILL + resume, offline ---------------------------------------------
def train_overrides(tmp_path: Path, run: str = "run") -> list[str]:
    from tests.conftest import tiny_stack_overrides
    from tests.conftest import write_concept as write_pairs

    concept = tmp_path / "pairs" if (tmp_path / "pairs").exists() else write_pairs(tmp_path / "pairs")
    return [
        *tiny_stack_overrides(tmp_path, tiny_sae()),
        "logger=none",
        f"data={concept}",
        "batch_size=2",
        "max_len=24",
        "n_samples=0",
        "trainer.enable_progress_bar=false",
        "experiment=sae_adaptor_lowrank",
        "lr=0.05",
        "ckpt_every_n_steps=1",
        f"run_dir={tmp_path / run}",
    ]


def read_checkpoint(path: Path) -> dict:
    """A Lightning checkpoint, read with torch's restricted (no code) unpickler."""
    return torch.load(path, map_location="cpu", weights_only=True)


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from saebasis.config import compose
    from saebasis.training import module
    from saebasis.training.train import train

    real_step = module.SteeringModule.step

    def poisoned(self, batch, stage):  # the loss turns NaN at optimizer step 3
        loss = real_step(self, batch, stage)
        return loss * NAN if stage == "train" and self.global_step >= 3 else loss

    monkeypatch.setattr(module.SteeringModule, "step", poisoned)
    with pytest.raises(module.NonFiniteLoss, match=r"became nan at step 3.*checkpoint"):
        train(compose("train", [*train_overrides(tmp_path), "trainer.max_epochs=5"]))
    assert not (tmp_path / "run").exists()  # no run folder from a failed training
    ckpt = read_checkpoint(tmp_path / "run.ckpt" / "last.ckpt")
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())

    monkeypatch.setattr(module.SteeringModule, "step", real_step)  # the kept checkpoint resumes
    result = train(compose("train", [*train_overrides(tmp_path), "trainer.max_epochs=5", "resume=true"]))
    assert result["steps"] > 3 and load_run(result["run_dir"]).cfg["method"] == "sae_adaptor"


def _cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def test_sigkill_during_training_then_resume_matches_uninterrupted(tmp_path):
    from saebasis.config import compose
    from saebasis.training.train import train

    epochs = ["trainer.max_epochs=6"]
    full = train(compose("train", [*train_overrides(tmp_path, "full"), *epochs]))
    args = [*train_overrides(tmp_path, "killed"), *epochs, f"hydra.run.dir={tmp_path / 'hydra'}"]
    last = tmp_path / "killed.ckpt" / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "saebasis.cli", "train", *args],
        cwd=tmp_path,
        env=_cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not last.exists() and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"training ended before the kill (rc {proc.returncode}): {err[-2000:]}"
    killed_at = read_checkpoint(last)["global_step"]
    assert 0 < killed_at < full["steps"] and not (tmp_path / "killed").exists()

    resumed = train(compose("train", [*train_overrides(tmp_path, "killed"), *epochs, "resume=true"]))
    assert resumed["steps"] == full["steps"]
    final, reference = load_run(resumed["run_dir"]).intervention, load_run(full["run_dir"]).intervention
    for (name, got), (_, want) in zip(final.state_dict().items(), reference.state_dict().items()):
        assert torch.allclose(got, want, atol=1e-6), (
            f"{name} differs after kill -9 + resume (killed at step {killed_at})"
        )


def test_train_offline_without_wandb_key(tmp_path, monkeypatch):
    import socket

    from saebasis.config import compose
    from saebasis.training.train import train

    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc key
    real_connect = socket.socket.connect

    def loopback_only(sock, address):
        host = address[0] if isinstance(address, tuple) else ""
        if isinstance(address, tuple) and host not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"network disabled in this test: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    overrides = [o for o in train_overrides(tmp_path) if o != "logger=none"] + ["logger=wandb", "trainer.max_epochs=1"]
    result = train(compose("train", overrides))
    assert os.environ["WANDB_MODE"] == "offline"
    assert load_run(result["run_dir"]).metrics["steps"] == result["steps"] > 0
    assert list((tmp_path / "run.ckpt").rglob("offline-run-*")), "wandb did not log offline"
