"""Shared helpers for the benchmarks: machine description, interleaved timing, JSON results.

Every benchmark measures the cases it compares side by side in ONE run: repetitions are interleaved
(case A, B, C, then B, C, A, ...) so drift in machine load hits every case alike, and each figure is
the median of the repetitions. Results go to scripts/bench/results/<name>.json with the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[2]
START_LOAD = os.getloadavg()[0]  # other work on the machine adds noise: recorded with every result


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, runs in seconds (schema check, not figures)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions per case (median reported)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default: results/<name>.json)")
    return parser


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict[str, Any]:
    """What the figures were measured on."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "load_avg_1m": {"start": round(START_LOAD, 2), "end": round(os.getloadavg()[0], 2)},
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None,
    }
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    return info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def interleaved(
    cases: dict[str, Callable[[], Any]], reps: int, device: str = "cpu", warmup: int = 1
) -> dict[str, list[float]]:
    """Wall seconds of each case, repetitions interleaved with a rotating order."""
    from tqdm.auto import tqdm

    names = list(cases)
    bar = tqdm(total=(warmup + reps) * len(names), desc="bench", unit="case")
    for _ in range(warmup):
        for name in names:
            bar.set_postfix_str(f"warm-up {name}")
            cases[name]()
            bar.update()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            bar.set_postfix_str(f"rep {rep} {name}")
            sync(device)
            start = time.perf_counter()
            cases[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
            bar.update()
    bar.close()
    return times


AUTOCAST: str | None = None  # bench_training --autocast: every method's forward under torch.autocast in this dtype


def autocast(model):
    """torch.autocast on the model's device in AUTOCAST's dtype (as Lightning's bf16-mixed), or a no-op context."""
    import contextlib

    import torch

    if AUTOCAST is None:
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=getattr(torch, AUTOCAST))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def write(name: str, args: argparse.Namespace, payload: dict[str, Any]) -> Path:
    """results/<name>.json (results/<name>.quick.json in --quick mode, which git ignores)."""
    out = args.out or RESULTS / (f"{name}.quick.json" if args.quick else f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "machine": machine(args.device),
        "gpu_measured": args.device.startswith("cuda"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        **payload,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"[bench] wrote {out}")
    return out


# -- the model / SAE every benchmark runs on ---------------------------------------------------
def add_stack_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="smollm2 (embedded, default), tiny-llama (--quick), a folder or HF id"
    )
    parser.add_argument(
        "--layer", type=int, default=None, help="hook layer (resid_post); default 12, or 1 with --quick"
    )
    parser.add_argument(
        "--sae",
        default=None,
        help="SAE folder / builtin:NAME; default: the built-in SAE for the "
        "embedded model when it exists, else a random-weight SAE (plumbing and timing only)",
    )
    parser.add_argument(
        "--d-sae", type=int, default=None, help="width of the random SAE when one is used (default 2304)"
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="build --model from its folder's config.json and "
        "tokenizer with seeded random weights (same shapes, same time per step; for a machine the "
        "weights cannot be copied to). Timings only: every figure is labelled with it",
    )


def stack(args: argparse.Namespace):
    """(model, tokenizer, sae, hook, sae_note) for the benchmark's --model / --layer / --sae."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig

    from saebasis.core.models import load_model
    from saebasis.core.sae import ASSETS, SAEBasis

    args.model = args.model or ("tiny-llama" if args.quick else "smollm2")
    args.layer = args.layer if args.layer is not None else (1 if args.quick else 12)
    loaded = (
        random_weights_model(args)
        if getattr(args, "random_weights", False)
        else load_model(args.model, args.device, args.dtype)
    )
    d_model = loaded.model.config.hidden_size
    hook = f"blocks.{args.layer}.hook_resid_post"
    builtin = ASSETS / "sae" / "smollm2-l12"
    source = args.sae or (
        f"builtin:{builtin.name}"
        if args.model == "smollm2" and args.layer == 12 and (builtin / "sae_weights.safetensors").exists()
        else None
    )
    args.sae_source = source  # what a config naming this stack's SAE says (None: the random SAE below)
    if source:
        sae = SAEBasis.load(source, hook=hook, device=args.device)
        note = f"trained SAE {source} (d_sae {sae.d_sae})"
    else:
        d_sae = args.d_sae or (64 if args.quick else 2304)
        torch.manual_seed(0)
        sae = SAEBasis(StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=d_sae, device=args.device)), hook)
        note = f"random-weight SAE (d_sae {d_sae}): timings only, no trained SAE was available"
    if getattr(args, "random_weights", False):
        note += f"; model: {args.model}'s config and tokenizer with seeded random weights (timings only: same shapes)"
    return loaded.model, loaded.tokenizer, sae, hook, note


def random_weights_model(args: argparse.Namespace):
    """`--random-weights`: the model folder's architecture and tokenizer, weights drawn from the config's init (seed 0).

    A step's cost depends on the shapes, not the values, so this times a model whose weights are not on the machine
    (the benchmarks suppress EOS, so generation length does not depend on the weights either)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from saebasis.core.models import EMBEDDED_NAMES, LoadedModel, check_device, embedded_model_dir, prepare

    check_device(args.device)
    path = embedded_model_dir() if args.model.lower() in EMBEDDED_NAMES else Path(args.model)
    if not (Path(path) / "config.json").exists():
        raise SystemExit(f"--random-weights needs a model folder with config.json and a tokenizer; {path} has none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).to(getattr(torch, args.dtype))
    tokenizer = AutoTokenizer.from_pretrained(path)
    return LoadedModel(prepare(model, tokenizer, args.device), tokenizer, str(args.model))
