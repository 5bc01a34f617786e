import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from saebasis.sweep import grid_runs, hydra_equivalent, load_sweep, validate_sweep
from saebasis.sweep_summary import summarize

SWEEPS = sorted(Path("configs/sweep").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_yamls_validate(path):
    cfg = load_sweep(str(path))
    assert cfg["method"] in ("grid", "random", "bayes")
    assert "saebasis train" in hydra_equivalent(cfg)


def test_grid_expands_to_cartesian_product():
    cfg = load_sweep("configs/sweep/grid_layer_method.yaml")
    runs = grid_runs(cfg)
    assert len(runs) == 4
    assert {(r["intervention"], r["hook"]) for r in runs} == {
        (m, h) for m in ("residual_vector", "residual_adaptor") for h in ("blocks.6.hook_resid_post", "blocks.12.hook_resid_post")}
    assert hydra_equivalent(cfg).startswith("saebasis train -m intervention=residual_vector,residual_adaptor hook=")


def test_invalid_sweep_is_explained():
    with pytest.raises(ValueError, match="method must be one of"):
        validate_sweep({"method": "exhaustive", "parameters": {"a": {"values": [1]}}, "command": ["${args_no_hyphens}"]})
    with pytest.raises(ValueError, match="grid search needs values"):
        validate_sweep({"method": "grid", "parameters": {"lr": {"distribution": "uniform", "min": 0, "max": 1}}, "command": ["${args_no_hyphens}"]})
    with pytest.raises(ValueError, match=r"args_no_hyphens"):
        validate_sweep({"method": "random", "parameters": {"a": {"values": [1]}}, "command": ["python", "x.py"]})


def test_create_without_network_fails_fast_with_multirun_hint(monkeypatch):
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp/nohome-saebasis", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "saebasis.cli", "sweep", "create", "configs/sweep/grid_layer_method.yaml"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 3
    assert "cannot reach wandb" in proc.stderr and "saebasis train -m intervention=residual_vector,residual_adaptor" in proc.stderr


TINY = ["model=tiny", "sae=none", "logger=none", "batch_size=2", "max_len=24", "n_samples=0", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false"]


def test_hydra_multirun_of_four_runs_then_summarize(tmp_path, concept_dir):
    cmd = [sys.executable, "-m", "saebasis.cli", "train", "-m", "intervention=residual_vector,residual_adaptor",
           "hook=blocks.0.hook_resid_post,blocks.2.hook_resid_post", f"data={concept_dir}", *TINY,
           f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = summarize(tmp_path / "multirun")
    assert len(result["rows"]) == 4
    assert {(r["method"], r["hook"]) for r in result["rows"]} == {
        (m, f"blocks.{l}.hook_resid_post") for m in ("residual_vector", "residual_adaptor") for l in (0, 2)}
    assert Path(result["plot"]).exists() and Path(result["csv"]).exists()


def test_ddp_on_two_cpu_processes(tmp_path, concept_dir):
    cmd = [sys.executable, "-m", "saebasis.cli", "train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
           "intervention=residual_vector", "hook=blocks.1.hook_resid_post",
           f"data={concept_dir}", *TINY, f"run_dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size: 2" in proc.stderr or "distributed_backend=gloo" in proc.stderr or "All distributed processes registered" in proc.stderr
    assert (tmp_path / "run" / "intervention.safetensors").exists()
