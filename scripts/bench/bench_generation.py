"""Generation overhead of every steering method vs the unsteered model.

    python scripts/bench/bench_generation.py                    # embedded SmolLM2, layer 12, CPU
    python scripts/bench/bench_generation.py --device cuda --dtype bfloat16 --model <hf id> --layer 20

Two measurements, side by side in one run:
1. End to end: same prompts, same number of new tokens (EOS suppressed with min_new_tokens), greedy,
   KV cache; one repetition = every prompt generated once; repetitions interleaved across methods,
   median; ratio = method time / unsteered time. `unsteered_again` is the unsteered model timed as a
   second case: its ratio (an A/A test) is the noise floor of this machine in this run.
2. Per call of the hook: what attaching the method adds to one decode step, timed on its own. A
   stand-in block (the identity) gets the method attached exactly as `hooks.attach` attaches it to the
   real block; it is called with a real decode-step residual [batch, 1, d_model] (after one call with
   the prompt's residual, which fixes SARA-stable's Delta) many times; added = (attached - bare) per
   call, best of several blocks. isolated ratio = 1 + added / (unsteered seconds per generated token).
   This resolves differences far below the end-to-end noise, so `met` is judged on it.
Each method is built with its default config and given random non-zero parameters (what is timed is
the cost of applying it, not what it learned); SARA is fitted on a few contrastive prompts first. Targets:
    constant shifts (sae_bias, residual_vector, diffmean, pca) <= 1.02x  (they fold into one vector)
    adaptors and latent edits (sae_adaptor, residual_adaptor, clamp)   <= 1.15x
    sae_adaptor_sparse (encodes its read set, decodes its 32 written rows) <= 1.01x
    sara_stable                                                        <= 1.10x  (sara_faithful: no target)
`<method>+folded` rows (per-call part only) apply `folded()` precomputed once: the floor for a constant shift.
"""

from __future__ import annotations

import time

import common
import torch
from torch import nn

TARGETS = {
    "sae_bias": 1.02,
    "residual_vector": 1.02,
    "diffmean": 1.02,
    "pca": 1.02,
    "sae_adaptor": 1.15,
    "sae_adaptor_sparse": 1.01,
    "residual_adaptor": 1.15,
    "clamp": 1.15,
    "clamp_add": 1.15,
    "sara_stable": 1.10,
}
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
            try:  # peers that need their library and the model set up (lora, caa) are timed by their own benches
                iv = build(method, overrides, d_model, sae)
                randomise(iv)
                if method == "sara":  # closed form from activation histories, not random buffers
                    iv.fit_histories(
                        [history(model, tokenizer, hook, ATTRACT)], [history(model, tokenizer, hook, REPEL)]
                    )
                iv.to(args.device)
                iv(torch.zeros(1, 2, d_model, device=args.device), 1.0)
            except Exception as err:  # noqa: BLE001
                print(f"[bench] skipping {name}: cannot run on a bare residual here ({type(err).__name__}: {err})")
                continue
            out[name] = (hook, iv)
            vector = iv.folded()
            if vector is not None:
                folded = vector.detach().to(args.device)
                out[f"{name}+folded"] = (hook, lambda h, v=folded: h + v.to(h.dtype))  # strength 1
    return out


def history(model, tokenizer, hook: str, text: str) -> torch.Tensor:
    from saebasis.core import hooks

    batch = tokenizer([text], return_tensors="pt").to(next(model.parameters()).device)
    return hooks.run_to_hook(model, hook, **batch)[0].float().cpu()  # [T, d_model]


def method_configs(method: str, cls) -> list[tuple[str, dict]]:
    if method == "sara" and "mode" in cls.Config.__dataclass_fields__:
        return [("sara_faithful", {"mode": "faithful"}), ("sara_stable", {"mode": "stable"})]
    if method == "clamp":  # its default sets no latent: give it three, in both modes
        three = {"latents": [0, 1, 2], "values": [2.0, 2.0, 2.0]}
        return [("clamp", {**three, "mode": "clamp"}), ("clamp_add", {**three, "mode": "add"})]
    if method == "sae_adaptor":  # the dense default and the sparse config (reads 64, writes 32: sparse SAE work)
        from saebasis.config import compose, to_dict

        sparse = to_dict(compose("train", ["intervention=sae_adaptor_sparse"]))["intervention"]
        sparse.pop("method")
        return [(method, {}), ("sae_adaptor_sparse", sparse)]
    return [(method, {})]


def generate_all(model, tokenizer, batches, args) -> None:
    for batch in batches:
        model.generate(
            **batch,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
        )


def case(model, tokenizer, batches, args, hook=None, fn=None):
    from saebasis.core import hooks

    def run():
        with torch.no_grad():
            if fn is None:
                generate_all(model, tokenizer, batches, args)
            else:
                with hooks.attach(model, hook, fn):
                    generate_all(model, tokenizer, batches, args)

    return run


class StandIn(nn.Module):
    """A one-block model whose block is the identity: `hooks.attach` finds it as it finds a Llama's."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("Config", (), {"model_type": "llama"})()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([nn.Identity()])


def per_call_seconds(fn, kind: str, h_prompt, h_step, calls: int, blocks: int, device: str) -> float:
    """Best-of-`blocks` seconds per call of the stand-in block at a decode step, with `fn` attached
    (as `hooks.attach` does) or bare (fn None)."""
    from contextlib import nullcontext

    from saebasis.core import hooks

    model = StandIn().to(device)
    block = model.model.layers[0]
    best = float("inf")
    with torch.no_grad(), hooks.attach(model, f"blocks.0.hook_resid_{kind}", fn) if fn is not None else nullcontext():
        block(h_prompt)  # prefill: SARA-stable computes its Delta here
        for _ in range(blocks):
            common.sync(device)
            start = time.perf_counter()
            for _ in range(calls):
                block(h_step)
            common.sync(device)
            best = min(best, (time.perf_counter() - start) / calls)
    return best


def hook_costs(model, tokenizer, variants_, args) -> dict[str, float]:
    """Seconds each method adds to one decode-step call of its block (attached minus bare)."""
    from saebasis.core import hooks

    h_prompt = history(model, tokenizer, variants_["unsteered"][0], PROMPTS[0])[None].to(args.device, model.dtype)
    h_step = h_prompt[:, -1:].clone()  # [1, 1, d_model]: a real residual at a decode step
    calls, blocks = (20, 2) if args.quick else (300, 7)
    out = {}
    for name, (hook, fn) in variants_.items():
        if fn is None:
            continue
        kind = hooks.parse_hook(hook).kind
        bare = per_call_seconds(None, kind, h_prompt, h_step, calls, blocks, args.device)
        out[name] = max(0.0, per_call_seconds(fn, kind, h_prompt, h_step, calls, blocks, args.device) - bare)
    return out


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    common.add_stack_args(parser)
    parser.add_argument("--new-tokens", type=int, default=None, help="new tokens per prompt (default 32)")
    parser.add_argument("--batch", type=int, default=1, help="prompts per generate call (SARA faithful needs 1)")
    args = parser.parse_args()
    args.new_tokens = args.new_tokens or (4 if args.quick else 32)
    args.reps = args.reps or (1 if args.quick else 5)
    model, tokenizer, sae, hook, sae_note = common.stack(args)
    prompts = PROMPTS[:2] if args.quick else PROMPTS
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        if tokenizer.chat_template
        else p
        for p in prompts
    ]
    batches = [
        tokenizer(texts[i : i + args.batch], return_tensors="pt", padding=True).to(args.device)
        for i in range(0, len(texts), args.batch)
    ]
    all_variants = {"unsteered": (hook, None), **variants(model, tokenizer, sae, hook, args)}
    cases = {
        "unsteered": case(model, tokenizer, batches, args),
        "unsteered_again": case(model, tokenizer, batches, args),
    }
    for name, (iv_hook, fn) in all_variants.items():
        if fn is not None and "+folded" not in name:
            cases[name] = case(model, tokenizer, batches, args, iv_hook, fn)
    case(model, tokenizer, batches, args)()  # warm-up once (allocator, caches), not per case
    times = common.interleaved(cases, args.reps, args.device, warmup=0)
    print("[generation] timing each hook per decode-step call ...", flush=True)
    added = hook_costs(model, tokenizer, all_variants, args)
    n_tokens = args.new_tokens * len(prompts)
    base = common.median(times["unsteered"])
    per_token = base / n_tokens
    rows = []
    for name in ["unsteered", "unsteered_again", *added]:
        target = TARGETS.get(name.split("+")[0])
        ts = times.get(name)
        e2e = common.median(ts) / base if ts else None
        isolated = 1.0 + added[name] / per_token if name in added else None
        row = {
            "method": name,
            "ratio": e2e,
            "ratio_best": min(ts) / min(times["unsteered"]) if ts else None,
            "hook_us_per_call": added[name] * 1e6 if name in added else None,
            "isolated_ratio": isolated,
            "target": target,
            "met": None if target is None or isolated is None else isolated <= target,
            "seconds": common.median(ts) if ts else None,
            "seconds_all": ts,
        }
        rows.append(row)
        e2e_text = "-" if e2e is None else f"{e2e:6.3f}x"
        call_text = "-" if isolated is None else f"{added[name] * 1e6:8.1f} us = {isolated:6.4f}x"
        print(
            f"[generation] {name:<24} end to end {e2e_text}   per call {call_text}"
            + (f"  (target <= {target})" if target else ""),
            flush=True,
        )
    noise = abs(rows[1]["ratio"] - 1.0)
    common.write(
        "generation",
        args,
        {
            "setup": {
                "prompts": len(prompts),
                "new_tokens": args.new_tokens,
                "batch": args.batch,
                "hook": hook,
                "sae": sae_note,
                "decoding": "greedy, KV cache, EOS suppressed (min_new_tokens)",
                "unsteered_seconds_per_token": per_token,
                "aa_noise": noise,
            },
            "results": rows,
            "ratios": {r["method"]: r["isolated_ratio"] for r in rows if r["isolated_ratio"] is not None},
            "ratios_end_to_end": {
                r["method"]: r["ratio"] for r in rows if r["ratio"] is not None and r["method"] != "unsteered"
            },
            "targets": {k: f"<= {v}" for k, v in TARGETS.items()},
            "notes": [
                "random non-zero parameters: the cost of applying each method, not a trained one",
                sae_note,
                f"end-to-end noise floor (A/A, unsteered vs unsteered_again): {noise:.1%}; "
                "'met' uses the per-call ratio",
            ],
        },
    )


if __name__ == "__main__":
    main()
