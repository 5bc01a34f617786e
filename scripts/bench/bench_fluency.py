"""The fluency judge with and without prompt reuse, on the calls one compared method makes.

    python scripts/bench/bench_fluency.py                 # embedded SmolLM2, CPU, the sentiment concept's instructions
    python scripts/bench/bench_fluency.py --methods 4 --reps 5

compare judges every method at every strength on the same validation and test instructions, so the fluency judge's
perplexity forward re-reads the same chat-formatted prompts again and again (about half of its tokens on the
embedded model). `judges.PromptReuse` (on in compare's Evaluator) runs each prompt once per concept and later calls
only the response tokens on top of the stored keys / values. One repetition = the fluency calls of --methods trained
methods as compare makes them (per seed: 3 validation strengths x n_val rows, then n_test test rows; 2 seeds), with
the concept's own completions as responses (rotated so every call's responses differ), once through the full
forward and once with a fresh store (what a new concept pays: its first prompt forwards are counted). Repetitions
interleaved, median. Written to results/fluency.json: seconds, the speed-up, the largest relative perplexity gap
between the two paths, and the prompt / response token counts.
"""

from __future__ import annotations

import common
import torch


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    common.add_stack_args(parser)
    parser.add_argument("--concept", default="sentiment")
    parser.add_argument("--methods", type=int, default=3, help="trained methods whose calls one repetition makes")
    parser.add_argument("--n-val", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=20)
    args = parser.parse_args()
    args.reps = args.reps or 3
    from saebasis.core.activations import chat_prefix
    from saebasis.data import load_concept
    from saebasis.judges import PromptReuse, perplexities

    model, tokenizer, _, _, _ = common.stack(args)
    concept = load_concept(args.concept)
    if args.quick:
        args.methods, args.n_val, args.n_test = 1, 2, 3
    val, test = concept.instructions["val"][: args.n_val], concept.instructions["test"][: args.n_test]
    texts = [
        pair.positive for pair in concept.pairs if pair.positive.strip()
    ]  # answers of compare's length as responses
    calls: list[tuple[list[str], list[str]]] = []
    k = 0
    for _ in range(args.methods):
        for _seed in range(2):
            for prompts in [val] * 3 + [test]:  # three validation strengths, then the test split
                calls.append((prompts, [texts[(k + i) % len(texts)] for i in range(len(prompts))]))
                k += len(prompts)
    got: dict[str, list[float]] = {}

    def full():
        got["full"] = [x for p, r in calls for x in perplexities(model, tokenizer, p, r)]

    def reuse():
        with PromptReuse().active():
            got["reuse"] = [x for p, r in calls for x in perplexities(model, tokenizer, p, r)]

    with torch.inference_mode():
        times = common.interleaved({"full": full, "reuse": reuse}, args.reps, args.device)
    gap = max(abs(a - b) / a for a, b in zip(got["full"], got["reuse"]) if a != float("inf"))
    prompt_tokens = sum(
        len(tokenizer(chat_prefix(tokenizer, x), add_special_tokens=False)["input_ids"]) for p, _ in calls for x in p
    )
    response_tokens = sum(len(tokenizer(x, add_special_tokens=False)["input_ids"]) for _, r in calls for x in r)
    t_full, t_reuse = common.median(times["full"]), common.median(times["reuse"])
    rows = sum(len(p) for p, _ in calls)
    print(f"{len(calls)} fluency calls, {rows} rows ({prompt_tokens} prompt + {response_tokens} response tokens)")
    print(
        f"full forward: {t_full:.2f} s   prompt reuse: {t_reuse:.2f} s   x{t_full / t_reuse:.2f}   "
        f"largest relative perplexity gap {gap:.1e}"
    )
    results = [
        {"path": name, "seconds": common.median(times[name]), "seconds_all": times[name]} for name in ("full", "reuse")
    ]
    common.write(
        "fluency",
        args,
        {
            "concept": args.concept,
            "calls": len(calls),
            "rows": rows,
            "prompt_tokens": prompt_tokens,
            "response_tokens": response_tokens,
            "max_relative_ppl_gap": gap,
            "results": results,
            "ratios": {"reuse_over_full": t_full / t_reuse},
        },
    )


if __name__ == "__main__":
    main()
