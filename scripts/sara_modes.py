"""SARA faithful vs stable on one prompt of the embedded model: prints both generations and what Delta was.

Both modes are fitted on the same attract (positive completions) / repel (negative completions) histories
of the built-in sentiment concept at block L's input, then steer the same prompt (greedy, KV cache).
Faithful recomputes Delta on every forward call (k = 1 per decoded token, Delta_i in {-2, 0, 2});
stable computes it once on the prompt with aligned singular-vector signs.

    python scripts/sara_modes.py [--layer 12] [--strength 0.5] [--pairs 16] [--tokens 40] [--prompt "..."]
"""

from __future__ import annotations

import argparse

import torch

from saebasis.core.activations import collect
from saebasis.core.generation import generate
from saebasis.core.models import load_model
from saebasis.data import load_concept
from saebasis.interventions import build


def spy_deltas(sara) -> list[torch.Tensor]:
    """Record the Delta of every forward call (a wrapper around SARA._delta_of; the module is unchanged)."""
    seen: list[torch.Tensor] = []
    inner = sara._delta_of

    def record(x_o, align):
        delta = inner(x_o, align)
        seen.append(delta.clone())
        return delta

    sara._delta_of = record
    return seen


def describe(mode: str, k_seen: list[int], deltas: list[torch.Tensor]) -> str:
    prompt_delta = deltas[0]
    lines = [
        f"  forward calls that computed Delta: {len(deltas)}; "
        f"k per call: {k_seen[:6]}{' ...' if len(k_seen) > 6 else ''}",
        f"  prompt Delta: mean {prompt_delta.mean():+.3f}, mean |Delta| {prompt_delta.abs().mean():.3f}, "
        f"range [{prompt_delta.min():+.2f}, {prompt_delta.max():+.2f}]",
    ]
    if len(deltas) > 1:
        steps = torch.stack(deltas[1:])  # [decode steps, d_model]
        values = {v: (steps == v).float().mean().item() for v in (-2.0, 0.0, 2.0)}
        nonzero = steps != 0
        agree = (
            (torch.sign(steps) == torch.sign(prompt_delta))[nonzero].float().mean().item()
            if nonzero.any()
            else float("nan")
        )
        lines.append(
            f"  decode-step Delta: fraction -2 / 0 / +2 = {values[-2.0]:.3f} / {values[0.0]:.3f} / {values[2.0]:.3f}; "
            f"nonzero entries agree in sign with the prompt's Delta: {agree:.0%}"
        )
    else:
        lines.append("  decode steps reuse the prompt Delta unchanged")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--strength", type=float, default=1.0, help="c (the published runs use 1)")
    parser.add_argument(
        "--sink",
        choices=["exclude", "include"],
        default="exclude",
        help="the prompt's first token (attention sink) in X_o: include = the published code to the letter",
    )
    parser.add_argument("--pairs", type=int, default=16, help="sentiment pairs whose completions form X_a / X_r")
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--positions", default="completion", choices=["completion", "all"], help="tokens in X_a / X_r")
    parser.add_argument("--prompt", default=None, help="default: the first held-out test instruction")
    args = parser.parse_args()

    loaded = load_model("smollm2")
    model, tokenizer = loaded.model, loaded.tokenizer
    concept = load_concept("sentiment")
    pairs = concept.pairs[: args.pairs]
    prompt = args.prompt or concept.instructions["test"][0]
    hook = f"blocks.{args.layer}.hook_resid_pre"
    prompts = [p.prompt for p in pairs]
    attract = collect(
        model, tokenizer, hook, prompts, [p.positive for p in pairs], positions=args.positions, desc="attract"
    )
    repel = collect(
        model, tokenizer, hook, prompts, [p.negative for p in pairs], positions=args.positions, desc="repel"
    )
    print(
        f"hook {hook}, strength c = {args.strength}, "
        f"X_a / X_r stacked from {len(pairs)} pairs ({args.positions} tokens: "
        f"{sum(len(a) for a in attract)} / {sum(len(r) for r in repel)})\n### prompt: {prompt}"
    )
    print(f"--- unsteered:\n{generate(model, tokenizer, [prompt], None, hook, args.tokens)[0][0]}")
    for mode in ("faithful", "stable"):
        sara = build("sara", {"mode": mode, "sink": args.sink}, model.config.hidden_size).fit_histories(attract, repel)
        deltas = spy_deltas(sara)
        text = generate(model, tokenizer, [prompt], sara, hook, args.tokens, strength=args.strength)[0][0]
        print(f"--- sara mode={mode}:\n{text}\n{describe(mode, sara.k_seen, deltas)}")


if __name__ == "__main__":
    main()
