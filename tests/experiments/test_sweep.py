"""Sweeps: wandb sweep YAMLs (validated by wandb's own sweep engine), their Hydra multirun equivalents,
the summary, and the same training config under Lightning DDP (2 CPU processes, gloo) and bf16."""

import csv
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from saebasis.config import compose
from saebasis.experiments.sweep import (
    _engine,
    check_overrides,
    expand_runs,
    hydra_equivalent,
    load_sweep,
    to_overrides,
    validate_sweep,
)
from saebasis.experiments.sweep_summary import SweepCallback, summarize
from saebasis.interventions.base import build
from saebasis.runs import save_run

ROOT = Path(__file__).resolve().parents[2]
SWEEPS = sorted((ROOT / "configs" / "sweep").glob("*.yaml"))
CMD = ["${env}", "${interpreter}", "-m", "saebasis.cli", "train", "${args_no_hyphens}"]
TINY = [
    "model=tiny",
    "sae=none",
    "logger=none",
    "batch_size=2",
    "max_len=24",
    "n_samples=0",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
]


def _run_cli(args, timeout=300, **env):
    return subprocess.run(
        [sys.executable, "-m", "saebasis.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **env},
    )


# ---- sweep definitions -------------------------------------------------------------------------


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_yamls_pass_wandbs_schema(path):
    cfg = load_sweep(path)
    schema_part = {k: v for k, v in cfg.items() if k != "run_cap"}
    assert _engine().schema_violations_from_proposed_config(schema_part) == []
    assert cfg["command"] == CMD


def test_one_sweep_per_search_method():
    assert {load_sweep(p)["method"] for p in SWEEPS} >= {"grid", "random", "bayes"}


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"method": "exhaustive", "parameters": {"a": {"values": [1]}}, "command": CMD}, "exhaustive"),
        (
            {
                "method": "random",
                "parameters": {"lr": {"distribution": "gaussian", "min": 0, "max": 1}},
                "command": CMD,
            },
            "gaussian",
        ),
        ({"method": "random", "parameters": {"a": {"values": [1]}}, "command": ["python", "x.py"]}, "args_no_hyphens"),
        (
            {"method": "grid", "parameters": {"lr": {"distribution": "uniform", "min": 0, "max": 1}}, "command": CMD},
            "grid search needs value",
        ),
        (
            {
                "method": "grid",
                "parameters": {"intervention": {"parameters": {"rank": {"values": [2]}}}},
                "command": CMD,
            },
            "dotted names",
        ),
        ({"method": "bayes", "parameters": {"a": {"values": [1, 2]}}, "command": CMD}, "bayes needs metric"),
        ({"method": "grid", "run_cap": 0, "parameters": {"a": {"values": [1]}}, "command": CMD}, "run_cap"),
    ],
)
def test_invalid_sweeps_are_explained(cfg, message):
    with pytest.raises(ValueError, match="Invalid sweep config") as err:
        validate_sweep(cfg)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "path", [p for p in SWEEPS if yaml.safe_load(p.read_text())["method"] == "grid"], ids=lambda p: p.stem
)
def test_grid_expands_to_the_exact_cartesian_product(path):
    cfg = load_sweep(path)
    params = cfg["parameters"]
    choices = [params[k].get("values", [params[k].get("value")]) for k in params]
    expected = {tuple(zip(params, combo)) for combo in itertools.product(*choices)}
    runs = expand_runs(cfg)
    assert len(runs) == math.prod(len(c) for c in choices)
    assert {tuple((k, r[k]) for k in params) for r in runs} == expected


@pytest.mark.parametrize("name", ["random_sae_bias", "bayes_adaptor"])
def test_random_and_bayes_proposals_stay_in_the_space(name):
    cfg = load_sweep(ROOT / "configs" / "sweep" / f"{name}.yaml")
    runs = expand_runs(cfg, n=8, seed=1)
    assert len(runs) == 8 and runs == expand_runs(cfg, n=8, seed=1)  # reproducible
    for run in runs:
        assert set(run) == set(cfg["parameters"])
        for key, spec in cfg["parameters"].items():
            if "value" in spec:
                assert run[key] == spec["value"]
            elif "values" in spec:
                assert run[key] in spec["values"]
            else:
                assert spec["min"] <= run[key] <= spec["max"]
    assert len({run["lr"] for run in runs}) == 8  # sampled, not one fixed point


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_what_an_agent_passes_composes_as_train_overrides(path):
    """The args wandb's agent renders for ${args_no_hyphens} are `saebasis train` overrides that take effect."""
    cfg = load_sweep(path)
    for run in expand_runs(cfg, n=None if cfg["method"] == "grid" else 3):
        composed = compose("train", to_overrides(run))
        for key, value in run.items():
            if (ROOT / "configs" / key).is_dir():  # a config group (intervention=..., experiment=..., sae=none)
                assert (ROOT / "configs" / key / f"{value}.yaml").exists(), (key, value)
            else:
                assert OmegaConf.select(composed, key) == value, key
    check_overrides(cfg)


def test_every_sweepable_key_is_a_train_override():
    cases = {  # what a user sweeps -> (overrides, key, expected value)
        "method": (["intervention=sae_adaptor_sparse"], "intervention.method", "sae_adaptor"),
        "layer / hook": (["hook=blocks.6.hook_resid_post"], "hook", "blocks.6.hook_resid_post"),
        "rank": (["intervention=sae_adaptor_lowrank", "intervention.rank=8"], "intervention.rank", 8),
        "L1 coefficient": (["intervention.l1_coef=3e-4"], "intervention.l1_coef", 3e-4),
        "learning rate": (["lr=0.003"], "lr", 0.003),
        "Mahalanobis on": (
            ["intervention=residual_vector", "intervention.mahalanobis_coef=0.1"],
            "intervention.mahalanobis_coef",
            0.1,
        ),
        "seed": (["seed=3"], "seed", 3),
        "DDP": (["trainer=ddp"], "trainer.strategy", "ddp"),
        "bf16": (["trainer.precision=bf16-mixed"], "trainer.precision", "bf16-mixed"),
    }
    for what, (overrides, key, expected) in cases.items():
        assert OmegaConf.select(compose("train", overrides), key) == expected, what


def test_misspelt_sweep_key_is_caught_before_registering():
    cfg = {"method": "grid", "parameters": {"intervention.rnak": {"values": [2]}}, "command": CMD}
    with pytest.raises(ValueError, match="not valid `saebasis train` overrides.*rnak"):
        check_overrides(cfg)


# ---- Hydra multirun equivalents ----------------------------------------------------------------


def _hydra_args(command: str) -> list[str]:
    import shlex

    args = shlex.split(command)
    assert args[:3] == ["saebasis", "train", "-m"]
    OverridesParser.create().parse_overrides(args[3:])  # valid Hydra override grammar (sweeps included)
    return args[3:]


def test_grid_hint_is_the_same_cartesian_product():
    args = _hydra_args(hydra_equivalent(load_sweep(ROOT / "configs/sweep/grid_layer_method.yaml")))
    assert args == [
        "hydra/callbacks=sweep",
        "intervention=residual_vector,residual_adaptor",
        "hook=blocks.6.hook_resid_post,blocks.12.hook_resid_post",
        "sae=none",
        "data=sentiment",
    ]


def test_random_and_bayes_hints_use_the_optuna_sweeper():
    rnd = _hydra_args(hydra_equivalent(load_sweep(ROOT / "configs/sweep/random_sae_bias.yaml")))
    assert {
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=12",
        "lr=tag(log,interval(0.01,0.3))",
        "seed=choice(0,1,2)",
        "experiment=sae_bias",
    } <= set(rnd)
    bayes = _hydra_args(hydra_equivalent(load_sweep(ROOT / "configs/sweep/bayes_adaptor.yaml")))
    assert {
        "hydra/sweeper/sampler=tpe",
        "hydra.callbacks.sweep.metric=val/loss",
        "intervention.rank=choice(2,4,8,16)",
    } <= set(bayes)


# ---- wandb without network ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, reason",
    [
        ({"WANDB_API_KEY": ""}, "no wandb API key"),
        ({"WANDB_API_KEY": "x" * 40, "WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9"}, "unreachable"),
    ],
)
def test_create_without_wandb_fails_fast_with_the_multirun_hint(tmp_path, env, reason):
    start = time.time()
    proc = _run_cli(["sweep", "create", "configs/sweep/grid_layer_method.yaml"], timeout=60, HOME=str(tmp_path), **env)
    assert time.time() - start < 20
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "cannot reach wandb" in proc.stderr and reason in proc.stderr
    assert "saebasis train -m hydra/callbacks=sweep intervention=residual_vector,residual_adaptor" in proc.stderr


def test_agent_without_wandb_fails_fast(tmp_path):
    proc = _run_cli(
        ["sweep", "agent", "abc123", "--yaml", "configs/sweep/random_sae_bias.yaml"],
        timeout=60,
        HOME=str(tmp_path),
        WANDB_API_KEY="",
    )
    assert proc.returncode == 3 and "hydra/sweeper=optuna" in proc.stderr


def test_create_rejects_an_invalid_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nparameters: {lr: {distribution: uniform, min: 0, max: 1}}\ncommand: [x]\n")
    proc = _run_cli(["sweep", "create", str(bad)], timeout=60, HOME=str(tmp_path))
    assert proc.returncode == 2 and "Invalid sweep config" in proc.stderr


# ---- summary -----------------------------------------------------------------------------------


def _fake_run(root: Path, job: int, method: str, hook: str, overrides: list[str], metrics: dict) -> None:
    iv = build(method, {}, 8, None)
    save_run(root / str(job) / "run", iv, {"hook": hook}, metrics)
    (root / str(job) / ".hydra").mkdir()
    (root / str(job) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def test_summary_tables_and_plot(tmp_path):
    loss = {
        ("residual_vector", 0): 1.0,
        ("residual_vector", 2): 2.0,
        ("residual_adaptor", 0): 3.0,
        ("residual_adaptor", 2): 4.0,
    }
    for job, ((method, layer), value) in enumerate(loss.items()):
        hook = f"blocks.{layer}.hook_resid_post"
        _fake_run(
            tmp_path,
            job,
            method,
            hook,
            [f"intervention={method}", f"hook={hook}", "model=tiny", f"run_dir=/x/{job}"],
            {"val/loss": value, "steps": 3, "samples": ["not a number"]},
        )
    result = summarize(tmp_path)
    assert result["swept"] == ["hook", "intervention"]  # model=tiny is the same everywhere; run_dir never counts
    rows = list(csv.DictReader(open(result["csv"])))
    assert {(r["method"], r["hook"], float(r["val/loss"])) for r in rows} == {
        (m, f"blocks.{layer}.hook_resid_post", v) for (m, layer), v in loss.items()
    }
    assert "samples" not in rows[0] and "intervention" not in rows[0]  # non-numeric metrics dropped; same as method
    assert Path(result["plot"]).stat().st_size > 10_000
    assert (tmp_path / "summary.md").read_text().count("\n") == 2 + len(loss)
    fallback = summarize(tmp_path, metric="not/logged")
    assert fallback["metric"] == "val/loss" and fallback["plot"] is not None
    for metrics in tmp_path.glob("*/run/metrics.json"):
        metrics.write_text(json.dumps({"steps": 3}))
    assert summarize(tmp_path)["plot"] is None  # no loss logged at all: table only


def test_summary_of_an_empty_folder_is_explained(tmp_path):
    with pytest.raises(ValueError, match="No saebasis run folders"):
        summarize(tmp_path)
    with pytest.raises(FileNotFoundError, match="multirun folder"):
        summarize(tmp_path / "missing")


def test_sweep_callback_hands_optuna_the_metric(capsys):
    done = JobReturn(status=JobStatus.COMPLETED, _return_value={"val/loss": 2.5, "run_dir": "x", "steps": 3})
    SweepCallback("val/loss").on_job_end(None, done)
    assert done.return_value == 2.5
    missing = JobReturn(status=JobStatus.COMPLETED, _return_value={"train/loss": 1.0})
    SweepCallback("val/loss").on_job_end(None, missing)
    assert missing.return_value == {"train/loss": 1.0} and "one of ['train/loss']" in capsys.readouterr().out


# ---- end to end on the tiny model --------------------------------------------------------------


def test_hydra_multirun_of_four_runs_is_summarized_by_the_callback(tmp_path, concept_dir):
    out = tmp_path / "multirun"
    proc = _run_cli(
        [
            "train",
            "-m",
            "hydra/callbacks=sweep",
            "intervention=residual_vector,residual_adaptor",
            "hook=blocks.0.hook_resid_post,blocks.2.hook_resid_post",
            f"data={concept_dir}",
            *TINY,
            f"hydra.sweep.dir={out}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.parent.parent.name for p in out.glob("*/run/metrics.json")) == ["0", "1", "2", "3"]
    assert (out / "summary.png").exists()  # written by the callback at the end of the multirun
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert {(r["method"], r["hook"]) for r in rows} == {
        (m, f"blocks.{l}.hook_resid_post") for m in ("residual_vector", "residual_adaptor") for l in (0, 2)
    }
    assert all(math.isfinite(float(r["val/loss"])) for r in rows)


def test_optuna_multirun_optimises_the_returned_metric(tmp_path, concept_dir):
    out = tmp_path / "optuna"
    proc = _run_cli(
        [
            "train",
            "-m",
            "hydra/callbacks=sweep",
            "hydra/sweeper=optuna",
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.n_trials=2",
            "intervention=residual_vector",
            "hook=blocks.1.hook_resid_post",
            "lr=tag(log,interval(0.001,0.1))",
            f"data={concept_dir}",
            *TINY,
            f"hydra.sweep.dir={out}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = yaml.safe_load((out / "optimization_results.yaml").read_text())
    losses = [json.loads(p.read_text())["val/loss"] for p in out.glob("*/run/metrics.json")]
    assert len(losses) == 2 and best["best_value"] == pytest.approx(min(losses))


def _train_rows(concept_dir) -> int:
    from saebasis.data import load_concept

    n = len(load_concept(str(concept_dir)).pairs)
    return n - max(1, int(n * 0.1))  # ConceptDataModule: val = max(1, 10%) of the pairs


DDP = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=bf16-mixed",
    "intervention=residual_vector",
    "hook=blocks.1.hook_resid_post",
]


def test_ddp_on_two_cpu_processes_in_bf16(tmp_path, concept_dir):
    proc = _run_cli(["train", *DDP, f"data={concept_dir}", *TINY, f"run_dir={tmp_path / 'run'}"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stderr and "Starting with 2 processes" in proc.stderr
    assert "bfloat16 Automatic Mixed Precision" in proc.stderr + proc.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    per_rank = math.ceil(_train_rows(concept_dir) / 2)  # each rank trains on its half of the rows
    assert metrics["steps"] == math.ceil(per_rank / 2) < math.ceil(_train_rows(concept_dir) / 2)  # batch_size=2
    assert math.isfinite(metrics["val/loss"])


def test_ddp_trains_more_than_one_epoch(tmp_path, concept_dir):
    proc = _run_cli(
        ["train", *DDP, f"data={concept_dir}", *TINY, "trainer.max_epochs=2", f"run_dir={tmp_path / 'run'}"],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    per_rank = math.ceil(_train_rows(concept_dir) / 2)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 2 * math.ceil(per_rank / 2)


@pytest.mark.parametrize("n, world, batch", [(9, 2, 2), (10, 2, 3), (5, 4, 1), (17, 3, 4)])
def test_sampler_shards_like_distributed_sampler_and_resumes_per_rank(n, world, batch):
    from saebasis.training.datamodule import StepSeededSampler

    step = [0]
    samplers = [StepSeededSampler(n, batch, 7, lambda: step[0], rank, world) for rank in range(world)]
    shards = [list(s) for s in samplers]
    assert len({len(x) for x in shards}) == 1 and all(len(x) == len(s) for x, s in zip(shards, samplers))
    assert set().union(*map(set, shards)) == set(range(n))  # every row is seen, padding only repeats rows
    assert sum(map(len, shards)) == math.ceil(n / world) * world
    step[0] = 1  # one optimizer step done this epoch: each rank skips its own first batch
    assert [list(s) for s in samplers] == [x[batch:] for x in shards]
    step[0] = samplers[0].n_batches  # next epoch: a new permutation, the full shard again
    assert [len(list(s)) for s in samplers] == [len(x) for x in shards]
