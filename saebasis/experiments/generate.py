"""`saebasis generate run=<dir> prompt="..." strength=<s>`: apply a saved run while generating."""

from __future__ import annotations

from saebasis.config import to_dict
from saebasis.core.generation import generate as generate_batch
from saebasis.core.models import load_model
from saebasis.interventions.base import check_strength
from saebasis.runs import load_run


def generate(cfg) -> dict:
    cfg = to_dict(cfg)
    from saebasis.core.generation import check_max_new_tokens

    check_max_new_tokens(cfg.get("max_new_tokens"))
    if not cfg.get("run"):
        raise ValueError(
            "Give the run folder: saebasis generate run=<dir> prompt='...' (a folder written by train / fit-baseline)."
        )
    run = load_run(cfg["run"])
    model_cfg = run.cfg.get("model") or {"name": "smollm2"}
    loaded = load_model(model_cfg["name"], cfg.get("device") or model_cfg.get("device", "cpu"))
    strength = check_strength(cfg["strength"], "strength")
    iv = run.intervention
    prompts = [cfg["prompt"]] if isinstance(cfg["prompt"], str) else list(cfg["prompt"])
    kw = dict(max_new_tokens=cfg["max_new_tokens"], batch_size=len(prompts))
    steered, _ = generate_batch(loaded.model, loaded.tokenizer, prompts, iv, run.cfg["hook"], strength=strength, **kw)
    out = {"steered": steered}
    if cfg.get("compare_unsteered"):
        out["unsteered"], _ = generate_batch(loaded.model, loaded.tokenizer, prompts, None, run.cfg["hook"], **kw)
    for i, prompt in enumerate(prompts):
        print(f"### prompt: {prompt}")
        if "unsteered" in out:
            print(f"--- unsteered:\n{out['unsteered'][i]}")
        print(f"--- {run.cfg['method']} (strength {cfg['strength']}):\n{steered[i]}\n")
    return out
