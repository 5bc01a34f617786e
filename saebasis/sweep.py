"""`saebasis sweep create|agent|summarize`: wandb sweeps across machines, Hydra multirun locally.

- create <yaml>: validate a wandb sweep definition (configs/sweep/*.yaml) and register it (wandb.sweep).
- agent <sweep_id> [--count N]: join a sweep from any machine (wandb.agent runs the YAML's `command`,
  which calls `python -m saebasis.cli train ${args_no_hyphens}`, i.e. Hydra overrides).
- summarize dir=<multirun dir>: one table (CSV + Markdown) and plot over every run folder in it.
With no network or no key, create / agent fail fast and print the Hydra multirun command for the same sweep.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import sys
from pathlib import Path

import yaml

from saebasis.config import has_wandb_key

METHODS = ("grid", "random", "bayes")
DISTRIBUTIONS = {"uniform", "log_uniform_values", "int_uniform", "q_uniform", "normal", "log_uniform", "categorical"}


def validate_sweep(cfg: dict) -> None:
    """The structure wandb's sweep schema documents (the `sweeps` validator package is not shipped with
    wandb and pins numpy < 2, so the same rules are checked here)."""
    problems = []
    if cfg.get("method") not in METHODS:
        problems.append(f"method must be one of {METHODS}, got {cfg.get('method')!r}")
    params = cfg.get("parameters")
    if not isinstance(params, dict) or not params:
        problems.append("parameters must be a non-empty mapping")
    for name, spec in (params or {}).items():
        if not isinstance(spec, dict) or not ({"value", "values", "distribution", "min"} & set(spec)):
            problems.append(f"parameter '{name}' needs value, values, or distribution/min/max")
        elif "distribution" in spec and spec["distribution"] not in DISTRIBUTIONS:
            problems.append(f"parameter '{name}': unknown distribution '{spec['distribution']}'")
        elif "min" in spec and ("max" not in spec or spec["min"] >= spec["max"]):
            problems.append(f"parameter '{name}': min must be below max")
        elif cfg.get("method") == "grid" and "values" not in spec and "value" not in spec:
            problems.append(f"parameter '{name}': grid search needs values (not a distribution)")
    metric = cfg.get("metric") or {}
    if cfg.get("method") == "bayes" and (not metric.get("name") or metric.get("goal") not in ("minimize", "maximize")):
        problems.append("bayes needs metric: {name: ..., goal: minimize|maximize}")
    if "${args_no_hyphens}" not in (cfg.get("command") or []):
        problems.append("command must pass ${args_no_hyphens} so parameters arrive as Hydra overrides")
    if problems:
        raise ValueError("Invalid sweep config: " + "; ".join(problems) + ".")


def grid_runs(cfg: dict) -> list[dict]:
    """The runs a grid sweep expands to: the cartesian product of every parameter's values."""
    params = cfg["parameters"]
    names = list(params)
    choices = [params[n]["values"] if "values" in params[n] else [params[n]["value"]] for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


def hydra_equivalent(cfg: dict) -> str:
    """The local Hydra multirun command for the same sweep (basic sweeper for grids, Optuna otherwise)."""
    parts = ["saebasis train -m"]
    if cfg["method"] != "grid":
        parts += ["hydra/sweeper=optuna", f"hydra.sweeper.n_trials={cfg.get('run_cap', 10)}",
                  f"hydra.sweeper.direction={cfg.get('metric', {}).get('goal', 'minimize')}"]
    for name, spec in cfg["parameters"].items():
        if "value" in spec:
            parts.append(f"{name}={spec['value']}")
        elif "values" in spec:
            vals = ",".join(str(v) for v in spec["values"])
            parts.append(f"'{name}=choice({vals})'" if cfg["method"] != "grid" else f"{name}={vals}")
        else:
            log = ",log" if "log" in spec.get("distribution", "") else ""
            parts.append(f"'{name}=tag({log.strip(',')},interval({spec['min']},{spec['max']}))'" if log else f"'{name}=interval({spec['min']},{spec['max']})'")
    return " ".join(parts)


def online() -> str | None:
    """None when wandb can be reached with a key; else the reason it cannot (checked in ~2 s)."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return f"WANDB_MODE={os.environ['WANDB_MODE']}"
    if not has_wandb_key():
        return "no wandb API key (WANDB_API_KEY or `wandb login`)"
    try:
        socket.create_connection(("api.wandb.ai", 443), timeout=2).close()
    except OSError as err:
        return f"api.wandb.ai is unreachable ({err})"
    return None


def _fail_offline(reason: str, cfg: dict | None) -> None:
    hint = f"\nRun the same sweep locally with Hydra multirun:\n  {hydra_equivalent(cfg)}" if cfg else \
        "\nRun sweeps locally with Hydra multirun: saebasis train -m key=a,b other=c,d"
    print(f"saebasis sweep: cannot reach wandb: {reason}.{hint}", file=sys.stderr)
    sys.exit(3)


def load_sweep(path: str) -> dict:
    cfg = yaml.safe_load(Path(path).read_text())
    validate_sweep(cfg)
    return cfg


def sweep_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="saebasis sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("yaml")
    c.add_argument("--project", default="saebasis")
    a = sub.add_parser("agent")
    a.add_argument("sweep_id")
    a.add_argument("--count", type=int, default=None)
    s = sub.add_parser("summarize")
    s.add_argument("dir", help="dir=<multirun folder> or the folder")
    s.add_argument("--metric", default="val/loss")
    args = parser.parse_args(argv)
    if args.cmd == "summarize":
        from saebasis.sweep_summary import summarize

        summarize(Path(args.dir.removeprefix("dir=")), args.metric)
        return
    cfg = load_sweep(args.yaml) if args.cmd == "create" else None
    reason = online()
    if reason:
        _fail_offline(reason, cfg)
    import wandb

    if args.cmd == "create":
        sweep_id = wandb.sweep(cfg, project=args.project)
        print(json.dumps({"sweep_id": sweep_id, "join": f"saebasis sweep agent {sweep_id}"}))
    else:
        wandb.agent(args.sweep_id, count=args.count)
