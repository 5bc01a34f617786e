"""`saebasis compare`: every method side by side on one concept, judged offline.

Protocol: each method is trained / fitted once (or loaded from a run folder); its strength is swept on
the validation instructions and the best mean score is chosen there; the chosen strength is then
reported on the test instructions with a bootstrap confidence interval over examples (and over seeds
when several are given). Outputs: results.csv, results.md, results.json, score_vs_strength.png,
score_vs_fluency.png, all logged to wandb (offline by default).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import mean
from typing import NamedTuple

import torch

from saebasis.config import compose, setup_env, to_dict
from saebasis.data import load_concept
from saebasis.eval import plots
from saebasis.eval.generation import generate
from saebasis.eval.judges import concept_scores, fluency_scores, similarity_scores
from saebasis.eval.metrics import ab_matching_prob, bootstrap_ci, choose_strength, harmonic_mean, kl_to_base
from saebasis.activations import collect
from saebasis.runs import load_run
from saebasis.stack import load_stack


def score(stack, concept, instructions, responses) -> dict[str, list[float]]:
    c = concept_scores(concept.judge, responses, concept.description)
    i = similarity_scores(responses, instructions)
    f = fluency_scores(stack.model, stack.tokenizer, instructions, responses)
    return {"concept": c, "instruction": i, "fluency": f, "score": [harmonic_mean(*x) for x in zip(c, i, f)]}


class Method(NamedTuple):
    intervention: object | None  # None: unsteered / prompting
    hook: str | None  # where the run applies (SARA reads block L's input)
    fit_time_s: float


def obtain_run(name: str, spec: dict, cfg: dict, out: Path, default_hook: str) -> Method:
    """Train / fit / load the method's intervention."""
    kind = spec["kind"]
    if kind in ("none", "prompt"):
        return Method(None, default_hook, 0.0)
    if kind == "run":
        run = load_run(spec["run_dir"])
        return Method(run.intervention, run.cfg.get("hook") or default_hook, 0.0)
    run_dir = out / "runs" / name
    shared = list(cfg.get("stack_overrides") or []) + [f"data={cfg['data']}", f"run_dir={run_dir}", f"seed={cfg['seed']}"]
    if kind == "train":
        from saebasis.train.train import train

        result = train(compose("train", shared + ["logger=none"] + list(spec.get("overrides") or [])))
    elif kind == "fit":
        from saebasis.train.fit import fit_baseline

        result = fit_baseline(compose("fit_baseline", shared + list(spec.get("overrides") or [])))
    else:
        raise ValueError(f"Method '{name}': kind must be none | prompt | train | fit | run, got '{kind}'.")
    run = load_run(result["run_dir"])
    return Method(run.intervention, run.cfg.get("hook") or default_hook, float(result.get("train_time_s", result.get("fit_time_s", 0.0))))


def evaluate(stack, concept, method: Method, spec, instructions, cfg, strength) -> tuple[dict, float]:
    iv = method.intervention
    if iv is not None:
        iv.strength = float(strength)
    prefix = spec.get("prefix", "") if spec["kind"] == "prompt" else ""
    responses, seconds = generate(
        stack.model, stack.tokenizer, instructions, iv, method.hook, cfg["max_new_tokens"], cfg["batch_size"], prefix
    )
    scores = score(stack, concept, instructions, responses)
    scores["responses"] = responses
    return scores, seconds


@torch.no_grad()
def latent_l0(stack, iv, neutral) -> float:
    """Mean number of SAE latents whose activation changes (|dz| > 1e-4) per neutral token."""
    if stack.sae is None or iv is None:
        return float("nan")
    h = torch.cat(collect(stack.model, stack.tokenizer, stack.sae.hook, neutral, positions="all"))[None]  # [1, T, d_model]
    dz = stack.sae.encode(iv(h)) - stack.sae.encode(h)
    return float((dz.abs() > 1e-4).sum(-1).float().mean())


def compare_method(name, spec, stack, concept, cfg, out, base_seconds) -> dict:
    method = obtain_run(name, spec, cfg, out, stack.hook)
    iv = method.intervention
    strengths = [float(s) for s in spec.get("strengths") or [1.0]] if iv is not None else [0.0]
    val = {s: evaluate(stack, concept, method, spec, concept.instructions["val"][: cfg["n_val"]], cfg, s)[0] for s in strengths}
    best = choose_strength({s: mean(v["score"]) for s, v in val.items()})
    test, seconds = evaluate(stack, concept, method, spec, concept.instructions["test"][: cfg["n_test"]], cfg, best)
    lo, hi = bootstrap_ci(test["score"], seed=cfg["seed"])
    row = {
        "method": name, "strength": best, "score": mean(test["score"]), "ci_low": lo, "ci_high": hi,
        "concept": mean(test["concept"]), "instruction": mean(test["instruction"]), "fluency": mean(test["fluency"]),
        "kl_neutral": kl_to_base(stack.model, stack.tokenizer, method.hook, iv, concept.neutral[: cfg["n_neutral"]]) if iv is not None else 0.0,
        "params": sum(p.numel() for p in iv.parameters()) + sum(b.numel() for b in iv.buffers()) if iv is not None else 0,
        "latent_l0": latent_l0(stack, iv, concept.neutral[: cfg["n_neutral"]]) if iv is not None else 0.0,
        "fit_time_s": method.fit_time_s, "gen_overhead": seconds / base_seconds if base_seconds else float("nan"),
    }
    if concept.ab:
        row["ab_matching"] = ab_matching_prob(stack.model, stack.tokenizer, method.hook, iv, concept.ab)
    curve = {str(s): mean(v["score"]) for s, v in val.items()}
    examples = list(zip(concept.instructions["test"][: cfg["n_test"]], test["responses"]))[:3]
    return {"row": row, "val_curve": curve, "examples": examples, "test_scores": test["score"]}


def compare(cfg) -> dict:
    setup_env()
    cfg = to_dict(cfg)
    torch.manual_seed(cfg["seed"])
    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    concept = load_concept(cfg["data"])
    stack = load_stack(cfg)
    _, base_seconds = generate(stack.model, stack.tokenizer, concept.instructions["test"][: cfg["n_test"]], None, stack.hook,
                               cfg["max_new_tokens"], cfg["batch_size"])
    results = {}
    for name, spec in cfg["methods"].items():
        start = time.time()
        print(f"[saebasis compare] {name} ...", flush=True)
        results[name] = compare_method(name, spec, stack, concept, cfg, out, base_seconds)
        print(f"[saebasis compare] {name}: score {results[name]['row']['score']:.3f} at strength "
              f"{results[name]['row']['strength']} ({time.time() - start:.0f} s)", flush=True)
        _write(out, results, cfg)  # after every method: a crash loses no earlier result
    paths = _write(out, results, cfg, final=True)
    print((out / "results.md").read_text())
    return {"out_dir": str(out), **paths, "rows": [r["row"] for r in results.values()]}


def _write(out: Path, results: dict, cfg: dict, final: bool = False) -> dict:
    rows = [r["row"] for r in results.values()]
    paths = plots.write_tables(out, rows)
    (out / "results.json").write_text(json.dumps({"config": cfg, "results": results}, indent=2, default=str))
    paths["json"] = str(out / "results.json")
    if final:
        paths.update(plots.plot_results(out, results))
        plots.log_wandb(cfg, out, rows, paths)
    return paths
