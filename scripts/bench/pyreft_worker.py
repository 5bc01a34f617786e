"""LoReFT (pyreft) training steps, timed on request: a worker for bench_training.py.

pyreft 0.1.0 pins transformers==4.45.1, which conflicts with saebasis (transformers 5.x), so this
runs under its own venv (.venv-pyreft, see bench_training.py) and talks over stdin/stdout:
    start  -> prints {"ready": true, "params": N}
    "steps N" -> runs N training steps, prints {"seconds": s, "tokens": t, "loss": l}
    "quit" -> exits
The token batches come from a safetensors file written by the parent, so both sides train on the
same data. Only the standard library, torch, safetensors, transformers and pyreft are imported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def load(args):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(args.model_dir)
    raw = json.loads(open(f"{args.model_dir}/config.json").read())
    theta = (raw.get("rope_parameters") or {}).get("rope_theta") or raw.get("rope_theta")
    if theta:  # transformers 5 writes rope_parameters, which 4.45 ignores (it would fall back to 1e4)
        config.rope_theta = theta
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, config=config, torch_dtype=dtype).to(args.device)
    model.eval().requires_grad_(False)
    ids = load_file(args.data)["input_ids"].to(args.device)  # [n_batches, batch, pos]
    return model, ids


def build(model, args):
    import pyreft
    import torch

    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    intervention = pyreft.LoreftIntervention(
        embed_dim=model.config.hidden_size, low_rank_dimension=args.rank, dtype=dtype
    )
    reft_cfg = pyreft.ReftConfig(
        representations={
            "layer": args.layer,
            "component": "block_output",
            "low_rank_dimension": args.rank,
            "intervention": intervention,
        }
    )
    reft = pyreft.get_reft_model(model, reft_cfg)
    reft.set_device(args.device)
    params = [p for p in reft.parameters() if p.requires_grad]
    return reft, torch.optim.AdamW(params, lr=1e-3), sum(p.numel() for p in params)


def main() -> None:
    parser = argparse.ArgumentParser()
    for name, kind in (
        ("--model-dir", str),
        ("--data", str),
        ("--layer", int),
        ("--rank", int),
        ("--device", str),
        ("--dtype", str),
        ("--seed", int),
    ):
        parser.add_argument(name, type=kind, required=True)
    args = parser.parse_args()
    model, ids = load(args)
    reft, opt, n_params = build(model, args)
    n_batches, batch, pos = ids.shape
    locations = [[list(range(pos))] * batch]  # [intervention, batch, positions]: every position
    print(json.dumps({"ready": True, "params": n_params}), flush=True)
    step = 0
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        n = int(cmd[1])
        sync(args.device)
        start = time.perf_counter()
        for _ in range(n):
            x = ids[step % n_batches]  # [batch, pos]
            step += 1
            _, out = reft(
                base={"input_ids": x, "attention_mask": x.new_ones(x.shape)},
                unit_locations={"sources->base": (None, locations)},
                labels=x,
            )
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync(args.device)
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "tokens": n * batch * pos, "loss": float(out.loss.detach())}), flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
