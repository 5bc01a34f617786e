"""Generation throughput against batch size: which `batch_size` compare / the leaderboard should use here.

    python scripts/bench/bench_batch.py                      # embedded SmolLM2, CPU, batches 8..64
    python scripts/bench/bench_batch.py --device cuda --dtype bfloat16 --batches 16 64 256

The same prompts (chat template, left padding), up to the same number of new tokens (as compare: a batch stops when
every row has ended), greedy, KV cache,
steered by a residual vector at per-row strengths (what compare's batched strength grid runs). One repetition =
every prompt generated once at one batch size; repetitions interleaved across batch sizes, median. Printed and
written to results/batch.json: generated tokens per second, the speed-up over the smallest batch, and how many
responses equal the smallest batch's (greedy).
"""

from __future__ import annotations

import common
import torch
from bench_generation import PROMPTS


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    common.add_stack_args(parser)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--prompts", type=int, default=64, help="rows generated per repetition")
    parser.add_argument("--new-tokens", type=int, default=40)
    args = parser.parse_args()
    if args.quick:
        args.batches, args.prompts, args.new_tokens = [2, 4], 4, 3
    args.reps = args.reps or 3
    from saebasis.core.generation import generate_timed
    from saebasis.interventions import build

    model, tokenizer, sae, hook, _ = common.stack(args)
    iv = build("residual_vector", {}, model.config.hidden_size, None).to(args.device)
    with torch.no_grad():
        iv.v.normal_(0, 0.01)
    rows = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    strengths = [float(i % 4) for i in range(args.prompts)]  # per-row strengths, as compare's grid
    responses: dict[int, list[str]] = {}

    def case(b: int):
        def run():
            responses[b] = generate_timed(
                model, tokenizer, rows, iv, hook, args.new_tokens, b, strength=strengths
            ).responses

        return run

    cases = {f"batch_{b}": case(b) for b in args.batches}
    times = common.interleaved(cases, args.reps, args.device)
    base = common.median(times[f"batch_{args.batches[0]}"])
    results = []
    for b in args.batches:
        t = common.median(times[f"batch_{b}"])
        same = sum(
            x == y for x, y in zip(responses[args.batches[0]], responses[b])
        )  # greedy: batching must not change text
        results.append(
            {
                "batch": b,
                "seconds": t,
                "seconds_all": times[f"batch_{b}"],
                "tokens_per_s": args.prompts * args.new_tokens / t,
                "speedup": base / t,
                "responses_equal_to_first_batch": same,
            }
        )
        print(
            f"batch {b:4d}: {t:7.2f} s  {results[-1]['tokens_per_s']:7.1f} generated tokens/s  "
            f"x{results[-1]['speedup']:.2f}  "
            f"{same}/{len(rows)} responses equal batch {args.batches[0]}'s"
        )
    best = max(results, key=lambda r: r["tokens_per_s"])["batch"]
    print(f"fastest here: batch_size={best}")
    common.write(
        "batch",
        args,
        {
            "prompts": args.prompts,
            "new_tokens": args.new_tokens,
            "results": results,
            "fastest": best,
            "ratios": {f"batch_{r['batch']}": r["speedup"] for r in results},
        },
    )


if __name__ == "__main__":
    main()
