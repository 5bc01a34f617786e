"""`saebasis <command> [hydra overrides]`: a thin shell that wires Hydra configs to plain functions."""

from __future__ import annotations

import importlib
import os
import sys

from saebasis.config import CONFIG_DIR, setup_env

# command -> (Hydra config name, "module:function", one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("demo", "saebasis.experiments.demo:demo", "train, compare, interpret and report on the embedded default"),
    "train-sae": ("train_sae", "saebasis.corpus.sae_train:train_sae", "train an SAE with sae-lens' runner"),
    "sae-info": (
        "sae_info",
        "saebasis.corpus.sae_info:sae_info",
        "print an SAE's quality figures (EV, L0, dead, CE recovered)",
    ),
    "train": ("train", "saebasis.training.train:train", "train an intervention (Lightning)"),
    "fit-baseline": ("fit_baseline", "saebasis.training.fit:fit_baseline", "fit SARA / DiffMean / PCA"),
    "generate": (
        "generate",
        "saebasis.experiments.generate:generate",
        "generate with a saved run at a chosen strength",
    ),
    "compare": ("compare", "saebasis.experiments.compare:compare", "every method side by side, judged offline"),
    "plateau": (
        "plateau",
        "saebasis.experiments.plateau.command:plateau",
        "KL vs steering size: a direction's plateau edge vs random ones",
    ),
    "interpret": (
        "interpret",
        "saebasis.interpret.report:interpret",
        "which latents a run changed, and what they mean",
    ),
    "leaderboard": (
        "leaderboard",
        "saebasis.experiments.leaderboard:leaderboard",
        "every method x every concept (preset=quick | full), resumable",
    ),
    "export": (
        "export",
        "saebasis.export.command:export_command",
        "a folding run as a llama.cpp / steering-vectors / repeng / lm-eval file",
    ),
}
SWEEP_HELP = "wandb sweeps: `sweep create|agent|summarize` (see `saebasis sweep --help`)"


def usage() -> str:
    lines = ["usage: saebasis <command> [key=value ...] [-m for a Hydra multirun]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += [
        f"  {'sweep':<13} {SWEEP_HELP}",
        "",
        f"configs: {CONFIG_DIR}",
        "Hydra help for one command: saebasis <command> --help",
    ]
    return "\n".join(lines)


def _resolve(target: str):
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def added_key_problem(config_name: str, argv: list[str]) -> str | None:
    """`+key=value` adds a key nothing reads (Hydra's own error suggests it for a typo): the message naming the
    valid keys, or None. `+group=option` (a config group such as +budget=...) and `++key` of an existing key pass."""
    import difflib

    from omegaconf import OmegaConf

    from saebasis.config import compose
    from saebasis.validate import trainer_keys

    for arg in argv:
        if not arg.startswith("+") or "=" not in arg:
            continue
        key = arg.lstrip("+").split("=", 1)[0]
        if (CONFIG_DIR / key.split("@")[0]).is_dir():
            continue  # a config group added by name
        if key.startswith("trainer.") and key.split(".", 1)[1] in trainer_keys():
            continue  # any argument of Lightning's Trainer (e.g. +trainer.limit_train_batches=2)
        plain = [a for a in argv if "=" in a and not a.startswith(("+", "hydra", "-"))]
        try:
            cfg = compose(config_name, plain)
        except Exception:  # noqa: BLE001 -- the overrides have another problem: Hydra reports it as usual
            return None
        if arg.startswith("++") and OmegaConf.select(cfg, key, default=KeyError) is not KeyError:
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        valid = sorted(str(k) for k in node.keys()) if hasattr(node, "keys") else []
        trainer = cfg.get("trainer") if not parent else None
        close = (
            [f"trainer.{leaf}"]
            if trainer is not None and leaf in trainer
            else [f"{parent + '.' if parent else ''}{m}" for m in difflib.get_close_matches(leaf, valid, n=1)]
        )
        meant = f" Did you mean {close[0]}={arg.split('=', 1)[1]}?" if close else ""
        return (
            f"saebasis: '{arg}' adds a key that nothing reads: '{key}' is not a setting of `saebasis "
            f"{config_name.replace('_', '-')}`.{meant} Valid keys{' of ' + parent if parent else ''}: "
            f"{', '.join(valid)}. Fix: set an existing key without '+' (a '+' adds only config groups)."
        )
    return None


def run_hydra(command: str, argv: list[str]):
    import hydra

    from saebasis.config import register_configs

    register_configs()
    config_name, target, _ = COMMANDS[command]
    problem = added_key_problem(config_name, argv)
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)
    fn = _resolve(target)

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    def _main(cfg):
        return fn(cfg)

    sys.argv = [sys.argv[0], *argv]
    os.environ["SAEBASIS_COMMAND"] = command  # DDP children re-run `python -m saebasis.cli <overrides>`
    return _main()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_env()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS and os.environ.get("LOCAL_RANK") and os.environ.get("SAEBASIS_COMMAND") in COMMANDS:
        command, rest = os.environ["SAEBASIS_COMMAND"], argv  # a Lightning DDP child process
    if command == "sweep":
        from saebasis.experiments.sweep import sweep_cli

        sweep_cli(rest)
    elif command in COMMANDS:
        run_hydra(command, rest)
    else:
        print(f"saebasis: unknown command '{command}'.\n\n{usage()}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
