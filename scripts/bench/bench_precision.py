"""fp32 against bf16 on this machine, for the two things the demo and the leaderboard wait on.

    python scripts/bench/bench_precision.py        # embedded SmolLM2 on CPU (~6 min on 2 cores)

Generation: the sentiment concept's first 32 test instructions, 40 new tokens, one batch of 32, greedy, KV cache,
unsteered, in three precisions: fp32 (the default), fp32 weights under torch.autocast(bfloat16), bf16 weights.
Repetitions interleaved, median; and how many of the 32 greedy responses equal fp32's (bf16 rounds every matmul's
inputs: a greedy argmax that flips once changes the rest of the response).
Training: `train(experiment=residual_adaptor, data=sentiment)`, the demo's own runs (36 steps, activation cache),
with `trainer=default` (precision 32-true) and `trainer=bf16` (Lightning bf16-mixed: fp32 weights, bf16 autocast),
interleaved; its own train_time_s (not the model load) and its final val loss.
fp32 is saebasis' default; `autocast=bfloat16` (compare, demo, leaderboard) takes the autocast / bf16-mixed path
measured here.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from pathlib import Path

import common
import torch

PRECISIONS = ("fp32", "autocast_bf16", "bf16_weights")


def generation_cases(model, tokenizer, prompts: list[str], new_tokens: int) -> tuple[dict, dict]:
    """{precision: callable} generating every prompt once, and {precision: responses of the last call}."""
    from saebasis.core.generation import generate_timed

    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    device = next(model.parameters()).device.type
    setups = {
        "fp32": (model, contextlib.nullcontext),
        "bf16_weights": (bf16, contextlib.nullcontext),
        "autocast_bf16": (model, lambda: torch.autocast(device, dtype=torch.bfloat16)),
    }
    responses: dict[str, list[str]] = {}

    def case(name):
        m, ctx = setups[name]

        def run():
            with ctx():
                responses[name] = generate_timed(m, tokenizer, prompts, None, None, new_tokens, len(prompts)).responses

        return run

    return {name: case(name) for name in PRECISIONS}, responses


def train_once(overrides: list[str], trainer: str, out: Path, stack, concept) -> dict:
    from saebasis.config import compose
    from saebasis.training.train import train

    cfg = compose(
        "train",
        [
            *overrides,
            f"trainer={trainer}",
            "logger=none",
            "n_samples=0",
            "overwrite=true",
            "trainer.enable_progress_bar=false",
            f"run_dir={out / trainer}",
        ],
    )
    result = train(cfg, stack=stack, concept=concept)
    return {"seconds": result["train_time_s"], "steps": result["steps"], "val_loss": result.get("val/loss")}


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    common.add_stack_args(parser)
    parser.add_argument("--concept", default="sentiment")
    parser.add_argument("--prompts", type=int, default=32, help="rows generated per repetition (one batch)")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument(
        "--experiment", default="residual_adaptor", help="the trained method timed (a configs/experiment)"
    )
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.new_tokens = 4, 3
    args.reps = args.reps or 3

    from saebasis.core.stack import Stack
    from saebasis.data import load_concept

    model, tokenizer, sae, hook, note = common.stack(args)
    concept = load_concept(args.concept)
    prompts = concept.instructions["test"][: args.prompts]
    cases, responses = generation_cases(model, tokenizer, prompts, args.new_tokens)
    times = common.interleaved(cases, args.reps, args.device)
    gen = {name: common.median(times[name]) for name in PRECISIONS}
    same = {name: sum(a == b for a, b in zip(responses["fp32"], responses[name])) for name in PRECISIONS}

    stack = Stack(model, tokenizer, sae, hook, None, {"model": args.model, "sae": args.sae_source})
    overrides = [f"experiment={args.experiment}", f"data={args.concept}", f"hook={hook}"]
    if args.quick:  # the tiny model: two steps, no SAE needed by a residual method
        overrides += ["sae=none", "model=tiny", "batch_size=2", "max_len=24", "trainer.max_steps=2"]
    train_times: dict[str, list[dict]] = {"default": [], "bf16": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(1 if args.quick else 2):  # interleaved: fp32, bf16, fp32, bf16
            for trainer in train_times:
                train_times[trainer].append(train_once(overrides, trainer, Path(tmp), stack, concept))
    train_med = {t: common.median([r["seconds"] for r in runs]) for t, runs in train_times.items()}

    results = [
        {
            "what": "generation",
            "precision": name,
            "seconds": gen[name],
            "seconds_all": times[name],
            "speedup_over_fp32": gen["fp32"] / gen[name],
            "responses_equal_to_fp32": same[name],
            "responses": len(prompts),
        }
        for name in PRECISIONS
    ]
    results += [
        {
            "what": "training",
            "precision": {"default": "fp32 (32-true)", "bf16": "bf16-mixed"}[t],
            "seconds": train_med[t],
            "runs": runs,
            "speedup_over_fp32": train_med["default"] / train_med[t],
        }
        for t, runs in train_times.items()
    ]
    for r in results:
        extra = (
            f"  {r['responses_equal_to_fp32']}/{r['responses']} greedy responses equal fp32's"
            if r["what"] == "generation"
            else ""
        )
        print(f"{r['what']:10s} {r['precision']:16s} {r['seconds']:7.2f} s  x{r['speedup_over_fp32']:.2f}{extra}")
    common.write(
        "precision",
        args,
        {
            "stack": note,
            "results": results,
            "ratios": {
                "generation_autocast_bf16": gen["fp32"] / gen["autocast_bf16"],
                "generation_bf16_weights": gen["fp32"] / gen["bf16_weights"],
                "training_bf16_mixed": train_med["default"] / train_med["bf16"],
            },
        },
    )


if __name__ == "__main__":
    main()
