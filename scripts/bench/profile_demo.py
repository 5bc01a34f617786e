"""Where the demo's time goes: cProfile of one trained method's training run and of its evaluation in compare.

    python scripts/bench/profile_demo.py                       # residual_adaptor on sentiment, as the demo makes it
    python scripts/bench/profile_demo.py --method sae_adaptor_sparse --autocast bfloat16

The demo is ~8 trainings plus compare's generating / judging; this says what each is made of. It trains the
method's two seeds exactly as `saebasis demo full=true` would (compare methods=sentiment_demo)
(the same composed configs, into
a temporary out_dir), profiling seed 0's run; then runs compare on the unsteered model and that method with
resume=true, so the two runs are reused and only the evaluation (strength search, test, judges, KL, latent L0) is
profiled (its total includes compare's warm-up and unsteered reference, which a demo pays once).
Written to results/profile_demo.json: seconds of the training run (its forward and backward, and the time
inside torch's linear, i.e. the model's matmuls) and of the evaluation (generate, judges, KL, linear).
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import common

LINEAR = "<built-in method torch._C._nn.linear>"
"""How cProfile names torch.nn.functional.linear (every matmul of the model's linear layers)."""


def seconds_in(stats: pstats.Stats, name: str, path_part: str = "", own: bool = False) -> float:
    """Cumulative (own=False) or own time of the functions called `name` whose file contains path_part (pstats'
    cumulative time of a recursive function already holds its recursion)."""
    total = 0.0
    for (path, _line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and path_part in path:
            total += tt if own else ct
    return total


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--method", default="residual_adaptor", help="a trained method of configs/methods/sentiment_demo.yaml"
    )
    parser.add_argument(
        "--autocast", default=None, help="bfloat16: train (bf16-mixed) and judge as compare autocast=bfloat16"
    )
    args = parser.parse_args()
    if args.device != "cpu" or args.dtype != "float32" or args.reps:
        raise SystemExit(
            "profile_demo profiles what the demo runs: compare's own stack (configs/model, on the CPU), one pass; "
            "--device / --dtype / --reps do not apply (use --autocast bfloat16 for the demo's bf16 mode)."
        )
    from saebasis.config import compose, to_dict
    from saebasis.experiments.compare import compare, method_config
    from saebasis.training.train import train

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        overrides = [
            "methods=sentiment_demo",
            "data=sentiment",
            "seeds=[0,1]",
            f"out_dir={out}",
            "resume=true",
            "logger=none",
        ]
        overrides += [f"autocast={args.autocast}"] if args.autocast else []
        if args.quick:
            overrides += ["n_val=2", "n_test=2", "n_neutral=2", "max_new_tokens=4"]
        cfg = to_dict(compose("compare", overrides))
        if (cfg["methods"].get(args.method) or {}).get("kind") != "train":
            raise SystemExit(
                f"--method must be a trained method of methods=sentiment_demo, one of "
                f"{[k for k, v in cfg['methods'].items() if v and v['kind'] == 'train']}"
            )
        spec = cfg["methods"][args.method]
        if args.quick:
            spec["overrides"] = list(spec.get("overrides") or []) + ["trainer.max_steps=2"]
        prof = cProfile.Profile()
        train_s = {}
        for seed in cfg["seeds"]:
            run_cfg = method_config(args.method, spec, cfg, out, seed)
            start = time.perf_counter()
            if seed == cfg["seeds"][0]:
                prof.enable()
            train(run_cfg)
            prof.disable()
            train_s[seed] = time.perf_counter() - start
        tstats = pstats.Stats(prof)
        cfg["methods"] = {"unsteered": cfg["methods"]["unsteered"], args.method: spec}
        prof = cProfile.Profile()
        start = time.perf_counter()
        prof.enable()
        compare(cfg)
        prof.disable()
        eval_s = time.perf_counter() - start
        estats = pstats.Stats(prof)

    training = {
        "seconds": train_s[cfg["seeds"][0]],
        "seconds_per_seed": train_s,
        "forward": seconds_in(tstats, "_forward", "saebasis/training/module.py"),
        "backward": seconds_in(tstats, "_engine_run_backward", "torch/autograd"),
        "linear_own": seconds_in(tstats, LINEAR, own=True),
    }
    evaluation = {
        "seconds": eval_s,
        "generate": seconds_in(estats, "generate_timed", "saebasis/core/generation.py"),
        "judges": seconds_in(estats, "judge", "saebasis/experiments/compare/evaluator.py"),
        "kl_to_base": seconds_in(estats, "kl_to_base", "saebasis/eval/metrics.py"),
        "latent_l0": seconds_in(estats, "latent_l0", "saebasis/eval/metrics.py"),
        "linear_own": seconds_in(estats, LINEAR, own=True),
    }
    for name, part in (("training run (seed 0)", training), ("evaluation (unsteered + both seeds)", evaluation)):
        total = part["seconds"]
        print(
            f"[profile] {name}: {total:.1f} s -- "
            + ", ".join(
                f"{k} {v:.1f} s ({v / total:.0%})" for k, v in part.items() if k not in ("seconds", "seconds_per_seed")
            )
        )
    common.write("profile_demo", args, {"method": args.method, "training": training, "evaluation": evaluation})


if __name__ == "__main__":
    main()
