"""The compare itself: make each method (train / fit / load, in-process), search its strength on validation, report
test with CIs and the costs it changes, and write the results after every method."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from statistics import mean

import torch

from saebasis import judges
from saebasis.config import setup_env, to_dict
from saebasis.core.stack import load_stack, stack_for
from saebasis.data import load_concept
from saebasis.eval import plots, protocol
from saebasis.eval.metrics import kl_to_base, latent_l0, n_params
from saebasis.experiments import cells
from saebasis.experiments.compare.evaluator import Evaluator, evaluator
from saebasis.experiments.compare.results import (
    cell_key,
    expected_keys,
    finished_cell,
    finished_methods,
    merge,
    remembered_keys,
)
from saebasis.experiments.compare.spec import (
    Method,
    check_methods,
    config_key,
    for_concept,
    method_config,
    normalise,
    saved_key,
    seeds_for,
)
from saebasis.runs import check_writable, load_run
from saebasis.training.fit import fit_baseline
from saebasis.training.train import train


def obtain(name: str, spec: dict, cfg: dict, out: Path, stack, concept, seed: int) -> Method:
    """Train / fit / load the method's intervention (a fresh one per seed for trained methods), in-process.
    resume=true reuses a run folder left by an earlier compare only when it was made with the same composed config."""
    kind = spec["kind"]
    if kind in ("none", "prompt"):
        return Method(None, stack.hook, 0.0, spec.get("prefix", "") if kind == "prompt" else "")
    if kind == "run":
        return method_of(spec.get("run") or load_shared(spec["run_dir"], stack), stack)
    method_cfg = method_config(name, spec, cfg, out, seed)
    run_dir = Path(method_cfg["run_dir"])
    if (
        cfg.get("resume")
        and (run_dir / "intervention.safetensors").exists()
        and saved_key(run_dir) == config_key(method_cfg)
    ):
        return method_of(load_shared(run_dir, stack), stack)  # a cell finished before a restart, same config
    if kind == "train":
        result = train(method_cfg, stack=stack, concept=concept)
    else:
        result = fit_baseline(method_cfg, stack=stack, concept=concept)
    return method_of(result["run"], stack)


def method_of(run, stack) -> Method:
    """A run as a compared method, with the train / fit time recorded when it was made."""
    seconds = run.metrics.get("train_time_s", run.metrics.get("fit_time_s", 0.0))
    return Method(run.intervention, run.cfg.get("hook") or stack.hook, float(seconds))


def load_shared(run_dir, stack):
    """A saved run, reusing the stack's SAE only when the run was made with that same SAE (else its own,
    from cfg.json)."""
    from saebasis.runs import CFG_FILE, read_json

    recorded = (read_json(Path(run_dir) / CFG_FILE).get("sae") or {}).get("path")
    same = stack.sae is not None and stack.source is not None and recorded == stack.source.get("sae")
    return load_run(run_dir, sae=stack.sae if same else None)


def compare_method(name: str, spec: dict, ev: Evaluator, cfg: dict, out: Path, base_spt: float) -> dict:
    start = time.time()
    seeds = seeds_for(spec, cfg)
    methods = {seed: obtain(name, spec, cfg, out, ev.stack, ev.concept, seed) for seed in seeds}
    steered = methods[seeds[0]].intervention is not None
    grid = [float(s) for s in (spec.get("strengths") or [1.0])] if steered else [0.0]
    by_ab = cfg["select_by"] == "ab"
    val_cache: dict[float, dict[int, list[float]]] = {}
    if not by_ab:  # the start grid in one batched generate call per seed (per-row strengths)
        for seed, m in methods.items():
            for s, r in ev.generate_many(m, "val", grid, seed).items():
                val_cache.setdefault(s, {})[seed] = r["score"]

    def score_at(s: float) -> dict[int, list[float]]:  # validation values per seed at one strength
        if s not in val_cache:
            val_cache[s] = {
                seed: [ev.ab(m, "val", s)] if by_ab else ev.generate(m, "val", s, seed)["score"]
                for seed, m in methods.items()
            }
        return val_cache[s]

    chosen = protocol.search_strength(score_at, grid, **cfg["strength_search"])
    test = {seed: ev.generate(method, "test", chosen.strength, seed) for seed, method in methods.items()}
    rep = protocol.report({seed: t["score"] for seed, t in test.items()}, seed=cfg["seeds"][0])
    first, iv = methods[seeds[0]], methods[seeds[0]].intervention
    neutral = ev.concept.neutral[: cfg["n_neutral"]]
    sae = (iv.sae if iv is not None else None) or ev.stack.sae
    with ev.precision():
        l0, l0_basis = latent_l0(ev.stack.model, ev.stack.tokenizer, sae, first.hook, iv, neutral, chosen.strength)
        kl = (
            [
                kl_to_base(
                    ev.stack.model, ev.stack.tokenizer, m.hook, m.intervention, neutral, strength=chosen.strength
                )
                for m in methods.values()
            ]
            if steered
            else None
        )
    row = {
        "method": name,
        "strength": chosen.strength,
        "score": rep.mean,
        "ci_low": rep.ci_low,
        "ci_high": rep.ci_high,
        **{k: mean(x for t in test.values() for x in t[k]) for k in ("concept", "instruction", "fluency")},
        "kl_neutral": mean(kl) if steered else (None if first.prefix else 0.0),
        "params": n_params(iv),
        "latent_l0": None if first.prefix else l0,  # a prompt's change is not at the hook (as KL)
        "fit_time_s": mean(m.fit_time_s for m in methods.values()),
        "gen_overhead": mean(t["seconds_per_token"] for t in test.values()) / base_spt if base_spt else math.nan,
        "n_test": rep.n_examples,
        "n_seeds": rep.n_seeds,
        "on_edge": chosen.on_edge,
    }
    if ev.concept.second_judge:
        row.update({k: mean(x for t in test.values() for x in t[k]) for k in ("concept2", "score2")})
        row["judge_rho"] = judges.judge_agreement(
            *([x for t in test.values() for x in t[k]] for k in ("concept", "concept2"))
        )
    if cfg.get("capability"):  # the first seed's run: one pass over the items per method and concept
        row.update(ev.capability(first, chosen.strength))
    if ev.concept.ab:
        row["ab_matching"] = mean(ev.ab(m, "test", chosen.strength) for m in methods.values())
    return {
        "row": row,
        "steered": steered,
        "val_curve": {str(s): v for s, v in chosen.curve.items()},
        "val_metric": "ab_matching" if by_ab else "score",
        "l0_basis": l0_basis,
        "test_scores": {str(s): t["score"] for s, t in test.items()},
        "test_responses": {str(s): list(zip(ev.splits["test"], t["responses"])) for s, t in test.items()},
        "eval_time_s": time.time() - start,
        "config_keys": expected_keys(name, spec, cfg, out),
    }


def compare(cfg, stack=None, concept=None, runs: dict | None = None) -> dict:
    """Every method of cfg.methods on one concept. `stack` / `concept`: loaded once by the caller and shared
    (loaded here otherwise); `runs`: {method name: Run} added as in-memory {kind: run} methods.
    With resume=true and an out_dir each method is a cell (saebasis/experiments/cells.py): claimed, saved on its own
    and reused by any later or concurrent compare on the same out_dir; results.json is merged from the cells."""
    with remembered_keys():
        return _compare(cfg, stack, concept, runs)


def _compare(cfg, stack, concept, runs: dict | None) -> dict:
    setup_env()
    cfg = normalise(to_dict(cfg))
    for name, run in (runs or {}).items():
        cfg["methods"][name] = {**(cfg["methods"].get(name) or {}), "kind": "run", "run": run}
    torch.manual_seed(cfg["seeds"][0])
    concept = concept if concept is not None else load_concept(cfg["data"])
    cfg = for_concept(cfg, concept)
    check_methods(cfg, concept)
    out = Path(cfg["out_dir"]) if cfg.get("out_dir") else None  # None (the Python API): nothing is written
    if out is None and any(spec.get("kind") in ("train", "fit") for spec in cfg["methods"].values()):
        raise ValueError(
            "compare with out_dir=None takes only in-memory runs (kind run), none and prompt methods: "
            "train / fit methods save run folders, so give them an out_dir."
        )
    if out is not None:
        check_writable(out, "out_dir")  # a read-only out_dir is found before any model is loaded
    start = time.time()
    stack = stack_for(stack, cfg) if stack is not None else load_stack(cfg)
    shared = bool(cfg.get("resume")) and out is not None  # cells: saved one by one, claimed, reused
    done = finished_methods(out, cfg) if shared else {}
    results: dict[str, dict] = {}
    ev: list = []  # [Evaluator, unsteered reference], made when a first method is computed here
    skipped: dict[str, str] = cfg.setdefault("skipped", {})
    for name, spec in cfg["methods"].items():
        if name in done:
            print(f"[saebasis compare] {name}: done before (resume), skipped", flush=True)
            results[name] = done[name]
            continue
        with cells.claim(out, name) if shared else contextlib.nullcontext(True) as mine:
            if not mine:
                print(f"[saebasis compare] {name}: being computed by another worker, left to it", flush=True)
                continue
            again = finished_cell(out, name, cfg) if shared else None  # saved by another worker meanwhile
            if again is not None:
                results[name] = again
                continue
            if not ev:
                ev += evaluator(stack, concept, cfg)
            print(f"[saebasis compare] {name} ...", flush=True)
            if shared:
                cells.log_computation(out, name, cfg.get("worker", 0))
            try:
                results[name] = compare_method(name, spec, ev[0], cfg, out, ev[1]["seconds_per_token"])
            except ImportError as err:  # an optional peer whose library is not installed here
                if not spec.get("optional"):
                    raise
                skipped[name] = f"{type(err).__name__}: {err}"
                print(f"[saebasis compare] {name}: SKIPPED, its environment is missing ({err})", flush=True)
                continue
            if shared:
                cells.write_cell(
                    out,
                    name,
                    {**results[name], "cell": cell_key(name, cfg) | {"record": cells.record(cfg.get("worker", 0))}},
                )
        row = results[name]["row"]
        print(
            f"[saebasis compare] {name}: score {row['score']:.3f} "
            f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] at strength "
            f"{row['strength']:g} ({results[name]['eval_time_s']:.0f} s)",
            flush=True,
        )
        if out is not None:
            merge(out, results, cfg, time.time() - start, shared)  # after every method: a crash loses no earlier result
    results, paths = (
        merge(out, results, cfg, time.time() - start, shared, final=True) if out is not None else (results, {})
    )
    rows = [r["row"] for r in results.values()]
    print(plots.results_markdown(rows))
    print(
        f"[saebasis compare] {len(results)} methods in {(time.time() - start) / 60:.1f} min"
        + (f" -> {out}" if out else "")
    )
    return {
        "out_dir": None if out is None else str(out),
        **paths,
        "rows": rows,
        "results": results,
        "total_time_s": time.time() - start,
        "complete": paths.get("complete", True),
    }
