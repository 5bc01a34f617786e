"""pyreft's side of the `loreft` peer: runs under .venv-pyreft (pyreft 0.1.0, transformers 4.45), never
imported by saebasis.

    python loreft_worker.py train  SPEC.json   -> OUT/loreft.safetensors {R [r, d], W [r, d], b [r]} + OUT/train.json
    python loreft_worker.py logits SPEC.json   -> OUT/logits.safetensors {base, steered [batch, pos, vocab]}
    python loreft_worker.py encode SPEC.json   -> OUT/encode.json (the folder's tokenizer + chat template; rope_theta)

SPEC.json: {"model_dir", "out", "layer", "rank", "dtype", "device", "seed", "data", ...} (see each command). `data` is a
safetensors file written by saebasis: input_ids / attention_mask [n, pos] (left padded), for `train` labels [n, pos]
(-100 outside the completion), and `positions` [n, P] (intervened columns of each row) unless "all_positions" is true
(every column). Everything pyreft does goes through its own objects: `LoreftIntervention` at `block_output` of `layer`
in a `ReftModel` (pyreft.get_reft_model), its forward with `unit_locations`, and its own `load_state_dict` for saved
parameters. Only the standard library, torch, safetensors, transformers and pyreft are imported.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path


def load_model(spec: dict):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], torch_dtype=getattr(torch, spec["dtype"]))
    return model.to(spec["device"]).eval().requires_grad_(False)


def reft_model(model, spec: dict):
    """pyreft's ReftModel with one LoreftIntervention at block `layer`'s output (seeded init)."""
    import pyreft
    import torch

    torch.manual_seed(spec["seed"])
    intervention = pyreft.LoreftIntervention(
        embed_dim=model.config.hidden_size, low_rank_dimension=spec["rank"], dtype=getattr(torch, spec["dtype"])
    )
    cfg = pyreft.ReftConfig(
        representations={
            "layer": spec["layer"],
            "component": "block_output",
            "low_rank_dimension": spec["rank"],
            "intervention": intervention,
        }
    )
    reft = pyreft.get_reft_model(model, cfg, set_device=False)
    reft.set_device(spec["device"])
    return reft, intervention


def batch_inputs(data: dict, rows, spec: dict):
    """One batch: the rows' columns from the first real token of any row on (left padding), positions shifted alike."""
    import torch

    ids, mask = data["input_ids"][rows], data["attention_mask"][rows]  # [batch, pos]
    start = int((mask.sum(0) > 0).nonzero()[0]) if mask.any() else 0
    ids, mask = ids[:, start:], mask[:, start:]
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)  # as saebasis' generate / trainer: from the mask
    if spec.get("all_positions"):
        where = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)  # [batch, pos]: every column
    else:
        where = data["positions"][rows] - start  # [batch, P]
    device = spec["device"]
    base = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": position_ids.to(device)}
    labels = data["labels"][rows][:, start:].to(device) if "labels" in data else None
    return base, {"sources->base": (None, [where.tolist()])}, labels


def exported(intervention) -> dict:
    """R [r, d] (rows orthonormal: the transpose of pyreft's rotate_layer.weight [d, r]), W [r, d], b [r]."""
    return {
        "R": intervention.rotate_layer.weight.detach().T.contiguous().float().cpu(),
        "W": intervention.learned_source.weight.detach().contiguous().float().cpu(),
        "b": intervention.learned_source.bias.detach().contiguous().float().cpu(),
    }


def train(spec: dict) -> dict:
    """AdamW on pyreft's intervention parameters, the causal-LM loss on the completion tokens (HF's own,
    from labels)."""
    import torch
    from safetensors.torch import load_file, save_file

    model = load_model(spec)
    reft, intervention = reft_model(model, spec)
    data = load_file(spec["data"])
    params = [p for p in reft.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec["lr"], weight_decay=spec["weight_decay"])
    order, bounds = data["order"].tolist(), data["bounds"].tolist()  # the batches, in saebasis' sampler order
    losses, start = [], time.time()
    reft.train()
    for step in range(len(bounds) - 1):
        base, where, labels = batch_inputs(data, order[bounds[step] : bounds[step + 1]], spec)
        _, out = reft(base=base, unit_locations=where, labels=labels)
        out.loss.backward()
        if spec.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(params, spec["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
        if not math.isfinite(losses[-1]):
            raise RuntimeError(f"pyreft training loss became {losses[-1]} at step {step}: lower lr.")
        print(json.dumps({"step": step + 1, "loss": round(losses[-1], 5)}), file=sys.stderr, flush=True)
    seconds = time.time() - start
    reft.eval()
    val = evaluate(reft, data, spec)
    out_dir = Path(spec["out"])
    save_file(exported(intervention), out_dir / "loreft.safetensors")
    report = {"steps": len(losses), "losses": losses, "val_loss": val, "seconds": seconds, "versions": versions()}
    (out_dir / "train.json").write_text(json.dumps(report))
    return report


def evaluate(reft, data: dict, spec: dict) -> float | None:
    """Mean loss over the validation rows (val_rows), batch-size weighted as Lightning's val/loss."""
    import torch

    if "val_rows" not in data:
        return None
    rows, total, n = data["val_rows"].tolist(), 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), spec["batch_size"]):
            chunk = rows[i : i + spec["batch_size"]]
            base, where, labels = batch_inputs(data, chunk, spec)
            total += float(reft(base=base, unit_locations=where, labels=labels)[1].loss) * len(chunk)
            n += len(chunk)
    return total / n


def logits(spec: dict) -> dict:
    """Logits without and with the intervention loaded from `params` by pyreft's own load_state_dict."""
    import torch
    from safetensors.torch import load_file, save_file

    model = load_model(spec)
    reft, intervention = reft_model(model, spec)
    p = load_file(spec["params"])
    intervention.load_state_dict({"weight": p["W"], "bias": p["b"], "rotate_layer": p["R"].T.contiguous()})
    reft.set_device(spec["device"])
    data = load_file(spec["data"])
    base, where, _ = batch_inputs(data, list(range(len(data["input_ids"]))), {**spec, "device": spec["device"]})
    with torch.no_grad():
        plain = model(**base).logits
        steered = reft(base=base, unit_locations=where)[1].logits
    save_file(
        {"base": plain.float().cpu().contiguous(), "steered": steered.float().cpu().contiguous()},
        Path(spec["out"]) / "logits.safetensors",
    )
    return {"rope_theta": getattr(model.config, "rope_theta", None), "versions": versions()}


def encode(spec: dict) -> dict:
    """The folder's tokenizer as pyreft's stack loads it: class, chat-templated ids, and the model config's
    rope theta."""
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    chats = [
        tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in spec["prompts"]
    ]
    ids = [tok(c, add_special_tokens=False)["input_ids"] for c in chats]
    out = {
        "tokenizer_class": type(tok).__name__,
        "ids": ids,
        "rope_theta": AutoConfig.from_pretrained(spec["model_dir"]).rope_theta,
        "versions": versions(),
    }
    (Path(spec["out"]) / "encode.json").write_text(json.dumps(out))
    return out


def versions() -> dict:
    from importlib.metadata import version

    import pyreft  # noqa: F401
    import torch
    import transformers

    return {
        "pyreft": version("pyreft"),
        "pyvene": version("pyvene"),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


def main() -> None:
    command, spec_path = sys.argv[1], sys.argv[2]
    spec = json.loads(Path(spec_path).read_text())
    Path(spec["out"]).mkdir(parents=True, exist_ok=True)
    result = {"train": train, "logits": logits, "encode": encode}[command](spec)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
