"""`saebasis sweep create|agent|runs|summarize`: wandb sweeps across machines, Hydra multirun locally.

  create <yaml>             validate a wandb sweep definition (configs/sweep/*.yaml) and register it (wandb.sweep)
  agent <sweep_id> [--count N]
                            join a sweep from any machine (wandb.agent runs the YAML's `command`:
                            `python -m saebasis.cli train ${args_no_hyphens}`, i.e. Hydra overrides)
  runs <yaml> [--n N]       the runs the sweep expands to (wandb's own sweep engine), as override lines
  summarize dir=<folder>    one table (CSV + Markdown) and plot over every run folder under it

With no network or no key, create / agent fail fast and print the Hydra multirun command for the same sweep.
Every parameter name is a `saebasis train` override (e.g. hook, intervention, intervention.rank, lr, seed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from saebasis.config import has_wandb_key

NEWER_KEYS = ("run_cap",)  # documented by wandb, newer than the last release of its `sweeps` schema
ENTRY = ("-m", "saebasis.cli", "train", "${args_no_hyphens}")


def _engine():
    """wandb's open-source sweep engine (`sweeps` on PyPI): its JSON schema and run proposals."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic v1-style config warning on import
        import sweeps
    return sweeps


def _schema_part(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in NEWER_KEYS}


def validate_sweep(cfg: Any) -> None:
    """wandb's sweep schema, plus what saebasis needs: a command passing ${args_no_hyphens} to
    `saebasis.cli train`, flat (dotted) parameter names, and values (not distributions) for grid search."""
    if not isinstance(cfg, dict):
        raise ValueError(f"Invalid sweep config: expected a mapping, got {type(cfg).__name__}.")
    problems = list(_engine().schema_violations_from_proposed_config(_schema_part(cfg)))
    cap = cfg.get("run_cap")
    if cap is not None and not (isinstance(cap, int) and cap > 0):
        problems.append(f"run_cap must be a positive integer, got {cap!r}")
    command = [str(c) for c in cfg.get("command") or []]
    if "${args_no_hyphens}" not in command or not all(c in command for c in ENTRY):
        problems.append(
            "command must run the Hydra entry point with the parameters as overrides: "
            '["${env}", "${interpreter}", "-m", "saebasis.cli", "train", "${args_no_hyphens}"]'
        )
    for name, spec in (cfg.get("parameters") or {}).items():
        if isinstance(spec, dict) and "parameters" in spec:
            problems.append(
                f"parameter '{name}' is nested: use dotted names ({name}.<key>) so each is a Hydra override"
            )
        elif cfg.get("method") == "grid" and isinstance(spec, dict) and not {"value", "values"} & set(spec):
            problems.append(f"parameter '{name}': grid search needs value or values (not a distribution)")
    if cfg.get("method") == "bayes" and not (cfg.get("metric") or {}).get("name"):
        problems.append("bayes needs metric: {name: val/loss, goal: minimize}")
    if problems:
        raise ValueError("Invalid sweep config: " + "; ".join(problems) + ".")


def load_sweep(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Sweep file {path} not found; the shipped ones are in configs/sweep/.")
    cfg = yaml.safe_load(path.read_text())
    validate_sweep(cfg)
    return cfg


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalars from the engine


def expand_runs(cfg: dict, n: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The runs wandb's engine proposes, in order: a grid's full cartesian product (n=None), or the first
    n proposals of a random / bayes sweep (default run_cap, else 10) -- no results yet, so bayes samples
    its prior."""
    import numpy as np

    engine = _engine()
    sweep = engine.SweepConfig(_schema_part(cfg))
    limit = n if n is not None or cfg["method"] == "grid" else cfg.get("run_cap", 10)
    states = np.random.get_state(), random.getstate()
    np.random.seed(seed)  # the engine samples from numpy's and Python's global generators
    random.seed(seed)
    try:
        runs = []
        while limit is None or len(runs) < limit:
            run = engine.next_run(sweep, runs)
            if run is None:  # grid exhausted
                break
            runs.append(run)
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])
    return [{k: _plain(v["value"]) for k, v in run.config.items()} for run in runs]


def to_overrides(params: dict[str, Any]) -> list[str]:
    """What a wandb agent passes for ${args_no_hyphens} (wandb's own function): `key=value` each."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    return create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})["args_no_hyphens"]


def check_overrides(cfg: dict) -> None:
    """Compose `saebasis train` with the sweep's first run, so a misspelt key fails now, not on every agent."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from saebasis.config import compose

    overrides = to_overrides(expand_runs(cfg, n=1)[0])
    try:
        compose("train", overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ValueError(
            f"Sweep parameters are not valid `saebasis train` overrides ({' '.join(overrides)}): {err}"
        ) from err


def _optuna_value(name: str, spec: dict) -> str:
    if "value" in spec:
        return f"{name}={spec['value']}"
    if "values" in spec:
        return f"{name}=choice({','.join(str(v) for v in spec['values'])})"
    dist, lo, hi = spec.get("distribution", "uniform"), spec.get("min"), spec.get("max")
    if dist == "log_uniform":  # wandb: min / max are natural-log exponents
        import math

        dist, lo, hi = "log_uniform_values", math.exp(lo), math.exp(hi)
    forms = {
        "uniform": f"interval({lo},{hi})",
        "log_uniform_values": f"tag(log,interval({lo},{hi}))",
        "int_uniform": f"int(interval({lo},{hi}))",
    }
    if dist not in forms:
        raise ValueError(
            f"parameter '{name}': distribution '{dist}' has no Optuna sweeper form; use one of {sorted(forms)}."
        )
    return f"{name}={forms[dist]}"


def hydra_equivalent(cfg: dict) -> str:
    """The local Hydra multirun for the same sweep: the basic sweeper for a grid (the same cartesian
    product), else the Optuna sweeper (random sampler for random, TPE for bayes) with run_cap trials."""
    parts = ["saebasis", "train", "-m", "hydra/callbacks=sweep"]
    if cfg["method"] == "grid":
        for name, spec in cfg["parameters"].items():
            values = spec["values"] if "values" in spec else [spec["value"]]
            parts.append(f"{name}={','.join(str(v) for v in values)}")
        return shlex.join(parts)
    metric = cfg.get("metric") or {}
    parts += [
        "hydra/sweeper=optuna",
        f"hydra/sweeper/sampler={'random' if cfg['method'] == 'random' else 'tpe'}",
        f"hydra.sweeper.n_trials={cfg.get('run_cap', 10)}",
        f"hydra.callbacks.sweep.metric={metric.get('name', 'val/loss')}",
        f"hydra.sweeper.direction={metric.get('goal', 'minimize')}",
    ]
    parts += [_optuna_value(name, spec) for name, spec in cfg["parameters"].items()]
    return shlex.join(parts)


def offline_reason() -> str | None:
    """None when wandb can be reached with a key; else why not (decided in at most ~2 s, no retries)."""
    if not has_wandb_key():
        return "no wandb API key (set WANDB_API_KEY or run `wandb login`)"
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return f"WANDB_MODE={os.environ['WANDB_MODE']}"
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    name, _, port = host.partition(":")
    try:
        socket.create_connection((name, int(port or 443)), timeout=2).close()
    except OSError as err:
        return f"{host} is unreachable ({err})"
    return None


def _fail_offline(reason: str, cfg: dict | None) -> None:
    hint = hydra_equivalent(cfg) if cfg else "saebasis train -m hydra/callbacks=sweep key=a,b other=c,d"
    print(
        f"saebasis sweep: cannot reach wandb: {reason}.\nRun the same sweep locally with Hydra multirun:\n  {hint}",
        file=sys.stderr,
    )
    sys.exit(3)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saebasis sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="register a wandb sweep from a YAML definition")
    c.add_argument("yaml")
    c.add_argument("--project", default="saebasis")
    c.add_argument("--entity", default=None)
    a = sub.add_parser("agent", help="run a sweep's jobs on this machine")
    a.add_argument("sweep_id", help="<id>, <project>/<id> or <entity>/<project>/<id>")
    a.add_argument("--count", type=int, default=None, help="jobs to run before exiting (default: until the sweep ends)")
    a.add_argument("--project", default="saebasis")
    a.add_argument("--yaml", default=None, help="the sweep's YAML: only for the offline Hydra multirun hint")
    r = sub.add_parser("runs", help="print the runs a sweep expands to, as `saebasis train` overrides")
    r.add_argument("yaml")
    r.add_argument("--n", type=int, default=None, help="proposals for random / bayes (default run_cap)")
    s = sub.add_parser("summarize", help="table + plot over the runs of a sweep folder")
    s.add_argument("dir", help="dir=<multirun folder> (or just the folder)")
    s.add_argument("--metric", default="val/loss")
    return parser


def sweep_cli(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "summarize":
            from saebasis.experiments.sweep_summary import summarize

            summarize(Path(args.dir.removeprefix("dir=")), args.metric)
            return
        cfg = load_sweep(args.yaml) if getattr(args, "yaml", None) else None
        if args.cmd == "runs":
            for params in expand_runs(cfg, args.n):
                print(shlex.join(["saebasis", "train", *to_overrides(params)]))
            print(f"# locally, all at once:\n{hydra_equivalent(cfg)}")
            return
        reason = offline_reason()
        if reason:
            _fail_offline(reason, cfg)
        if args.cmd == "create":
            check_overrides(cfg)  # a misspelt key fails here, not on every agent
    except (ValueError, FileNotFoundError) as err:
        print(f"saebasis sweep: {err}", file=sys.stderr)
        sys.exit(2)
    import wandb

    if args.cmd == "create":
        sweep_id = wandb.sweep(cfg, project=args.project, entity=args.entity)
        print(json.dumps({"sweep_id": sweep_id, "join": f"saebasis sweep agent {args.project}/{sweep_id}"}))
    else:
        wandb.agent(args.sweep_id, project=args.project, count=args.count)
