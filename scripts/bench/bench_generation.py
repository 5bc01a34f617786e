"""Generation overhead of every steering method vs the unsteered model.

    python scripts/bench/bench_generation.py                    # embedded SmolLM2, layer 12, CPU
    python scripts/bench/bench_generation.py --device cuda --dtype bfloat16 --model <hf id> --layer 20

Same prompts, same number of new tokens (EOS suppressed with min_new_tokens), greedy, KV cache, one
run = every prompt generated once; repetitions interleaved across methods, median; ratio = method
time / unsteered time. Each method is built with its default config and given random non-zero
parameters (what is timed is the cost of applying it, not what it learned); baselines fitted in
closed form (SARA) are fitted on a few contrastive prompts first. Targets:
    constant shifts (sae_bias, residual_vector, diffmean, pca) <= 1.02x  (they fold into one vector)
    adaptors and latent edits (sae_adaptor, residual_adaptor, clamp)   <= 1.15x
    sara_stable                                                        <= 1.10x  (sara_faithful: no target)
`<method>+folded` rows apply `folded()` precomputed once: the floor for a constant shift.
"""

from __future__ import annotations

import torch

import common

TARGETS = {"sae_bias": 1.02, "residual_vector": 1.02, "diffmean": 1.02, "pca": 1.02, "sae_adaptor": 1.15,
           "residual_adaptor": 1.15, "clamp": 1.15, "sara_stable": 1.10}
PROMPTS = [
    "Write a short note to a friend about your weekend.",
    "Describe the city you live in.",
    "Give me three tips for learning to cook.",
    "What do you think about rainy days?",
]
ATTRACT, REPEL = "I love this, it is wonderful and joyful.", "I hate this, it is awful and miserable."


def randomise(iv, scale: float = 0.05) -> None:
    """Random non-zero learned parameters / buffers, so `steer` does its full work."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in list(iv.parameters()) + [b for b in iv.buffers() if b.is_floating_point()]:
            tensor.copy_(torch.randn(tensor.shape, generator=gen).to(tensor) * scale)


def variants(model, tokenizer, sae, hook, args) -> dict[str, tuple[str, object]]:
    """name -> (hook, fn residual->residual) for every registered method (+ folded shortcuts)."""
    from saebasis.interventions import REGISTRY, build

    d_model = model.config.hidden_size
    out: dict[str, tuple[str, object]] = {}
    for method in sorted(REGISTRY):
        for name, overrides in method_configs(method, REGISTRY[method]):
            iv = build(method, overrides, d_model, sae)
            randomise(iv)
            if method == "sara":  # closed form from activation histories, not random buffers
                iv.fit([history(model, tokenizer, hook, ATTRACT)], [history(model, tokenizer, hook, REPEL)])
            iv.to(args.device)
            out[name] = (hook, iv)
            vector = iv.folded()
            if vector is not None:
                folded = vector.detach().to(args.device)
                out[f"{name}+folded"] = (hook, lambda h, v=folded, s=iv.strength: h + s * v.to(h.dtype))
    return out


def history(model, tokenizer, hook: str, text: str) -> torch.Tensor:
    from saebasis import hooks

    batch = tokenizer([text], return_tensors="pt").to(next(model.parameters()).device)
    return hooks.run_to_hook(model, hook, **batch)[0].float().cpu()  # [T, d_model]


def method_configs(method: str, cls) -> list[tuple[str, dict]]:
    if method == "sara" and "mode" in cls.Config.__dataclass_fields__:
        return [("sara_faithful", {"mode": "faithful"}), ("sara_stable", {"mode": "stable"})]
    return [(method, {})]


def generate_all(model, tokenizer, batches, args) -> None:
    for batch in batches:
        model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                       use_cache=True, pad_token_id=tokenizer.pad_token_id)


def case(model, tokenizer, batches, args, hook=None, fn=None):
    from saebasis import hooks

    def run():
        with torch.no_grad():
            if fn is None:
                generate_all(model, tokenizer, batches, args)
            else:
                with hooks.attach(model, hook, fn):
                    generate_all(model, tokenizer, batches, args)
    return run


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    common.add_stack_args(parser)
    parser.add_argument("--new-tokens", type=int, default=None, help="new tokens per prompt (default 32)")
    parser.add_argument("--batch", type=int, default=1, help="prompts per generate call (SARA faithful needs 1)")
    args = parser.parse_args()
    args.new_tokens = args.new_tokens or (4 if args.quick else 32)
    args.reps = args.reps or (1 if args.quick else 7)
    model, tokenizer, sae, hook, sae_note = common.stack(args)
    prompts = PROMPTS[:2] if args.quick else PROMPTS
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             if tokenizer.chat_template else p for p in prompts]
    batches = [tokenizer(texts[i : i + args.batch], return_tensors="pt", padding=True).to(args.device)
               for i in range(0, len(texts), args.batch)]
    cases = {"unsteered": case(model, tokenizer, batches, args)}
    for name, (iv_hook, fn) in variants(model, tokenizer, sae, hook, args).items():
        cases[name] = case(model, tokenizer, batches, args, iv_hook, fn)
    times = common.interleaved(cases, args.reps, args.device, warmup=0 if args.quick else 1)
    base = common.median(times["unsteered"])
    n_tokens = args.new_tokens * len(prompts)
    rows = []
    for name, ts in times.items():
        ratio = common.median(ts) / base
        target = TARGETS.get(name.split("+")[0])
        rows.append({"method": name, "seconds": common.median(ts), "new_tokens_per_s": n_tokens / common.median(ts),
                     "ratio": ratio, "target": target, "met": None if target is None else ratio <= target,
                     "seconds_all": ts})
        print(f"[generation] {name:<24} {ratio:6.3f}x" + (f"  (target <= {target})" if target else ""), flush=True)
    common.write("generation", args, {
        "setup": {"prompts": len(prompts), "new_tokens": args.new_tokens, "batch": args.batch, "hook": hook, "sae": sae_note,
                  "decoding": "greedy, KV cache, EOS suppressed (min_new_tokens)"},
        "results": rows, "ratios": {r["method"]: r["ratio"] for r in rows if r["method"] != "unsteered"},
        "targets": {k: f"<= {v}" for k, v in TARGETS.items()},
        "notes": ["random non-zero parameters: the cost of applying each method, not a trained one", sae_note],
    })


if __name__ == "__main__":
    main()
