"""How well SAE-TS's linear effect approximator predicts held-out effects on the embedded default, by ridge and by
how many directions it is fitted on.

sae_targeted fits effects(v) ~ W v + b once per (model, SAE, hook) from `n_directions` random steering directions
(saebasis/interventions/sae_targeted.py; its cache keeps W and b, not the measured effects). This script measures the
effects once with the method's own code (`measure_effects`, the defaults of SAETargetedConfig unless overridden) and
refits on them: held-out R^2 (the same last 10% of the antithetic pairs `fit_approximator` holds out) for each ridge
and for fewer training directions, plus the R^2 of the odd part alone (W is fitted to the odd part; the even part,
what any push of that norm does, is b). JSON out.

    python scripts/sae_targeted_fit.py --out docs/results/sae_targeted_fit.json \
        [--n-directions 1024 --n-prompts 2 --new-tokens 8 --radius 0.5 --threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch

from saebasis.core.models import load_model
from saebasis.core.stack import load_sae
from saebasis.interventions.sae_targeted import (
    HOLDOUT,
    SAETargetedConfig,
    antithetic_directions,
    fit_linear,
    measure_effects,
    r_squared,
    unsteered,
)

RIDGES = (1e-2, 1e-1, 1.0, 10.0, 100.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sae", default="builtin:smollm2-l12")
    parser.add_argument("--hook", default="blocks.12.hook_resid_post")
    parser.add_argument("--n-directions", type=int, default=SAETargetedConfig.n_directions)
    parser.add_argument("--n-prompts", type=int, default=SAETargetedConfig.n_prompts)
    parser.add_argument("--new-tokens", type=int, default=SAETargetedConfig.new_tokens)
    parser.add_argument("--radius", type=float, default=SAETargetedConfig.radius)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model("smollm2")
    model, tokenizer = loaded.model, loaded.tokenizer
    sae = load_sae({"path": args.sae, "hook": args.hook})
    cfg = SAETargetedConfig(
        n_directions=args.n_directions, n_prompts=args.n_prompts, new_tokens=args.new_tokens, radius=args.radius
    )
    start = time.time()
    base = unsteered(model, tokenizer, sae, args.hook, cfg)
    V = antithetic_directions(cfg.n_directions, sae.d_model, cfg.seed) * cfg.radius * float(base["norm"])
    E = measure_effects(model, tokenizer, sae, args.hook, V, cfg, base)  # [n, d_sae]
    seconds = time.time() - start
    n_test = 2 * max(1, round(HOLDOUT * len(V) / 2))
    V_fit, E_fit, V_test, E_test = V[:-n_test], E[:-n_test], V[-n_test:], E[-n_test:]
    odd_test = (E_test[0::2] - E_test[1::2]) / 2  # [pairs, d_sae]: the antithetic pairs' odd part
    rows = []
    for n_fit in sorted({len(V_fit) // 4 // 2 * 2, len(V_fit) // 2 // 2 * 2, len(V_fit)}):
        for ridge in RIDGES:
            W, b = fit_linear(V_fit[:n_fit], E_fit[:n_fit], ridge)
            rows.append(
                {
                    "n_fit": n_fit,
                    "ridge": ridge,
                    "r2": r_squared(V_test @ W.T + b, E_test),
                    "r2_odd": r_squared(V_test[0::2] @ W.T, odd_test),
                    "r2_mean_only": r_squared(b.expand_as(E_test), E_test),
                }
            )
            print(json.dumps(rows[-1]))
    odd_share = float(odd_test.pow(2).sum() / (E_test - E_test.mean(0)).pow(2).sum())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    blob = {
        "command": (
            f"python scripts/sae_targeted_fit.py --n-directions {args.n_directions} --n-prompts {args.n_prompts} "
            f"--new-tokens {args.new_tokens} --radius {args.radius} --out {args.out}"
        ),
        "commit": commit,
        "sae": args.sae,
        "hook": args.hook,
        "n_directions": cfg.n_directions,
        "n_prompts": cfg.n_prompts,
        "new_tokens": cfg.new_tokens,
        "radius": cfg.radius,
        "held_out_directions": n_test,
        "measure_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "odd_share_of_held_out_variance": odd_share,
        "fits": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(blob, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
