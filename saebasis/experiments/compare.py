"""`saebasis compare`: every method side by side on one concept, judged offline.

Methods come from the config (`methods: {name: spec}`), each spec a mapping (data, never override strings
built by code) of one kind:
  {kind: none}                                   the unsteered model
  {kind: prompt, prefix: "..."}                  prompting reference: the prefix asks for the concept
  {kind: train, overrides: [...], strengths: [...]}   the train config with these overrides, trained in-process
  {kind: fit, overrides: [...], strengths: [...]}     the fit_baseline config with these overrides, fitted in-process
  {kind: run, run_dir: ..., strengths: [...]}    a saved run folder (any method, e.g. built by hand)
  {kind: run, run: <saebasis.runs.Run>, ...}     a run already in memory (what `train` returns), from Python
The model and SAE are loaded once per compare (`load_stack`) and shared by every method; trained / fitted
methods get the concept loaded once too, and come back in memory (nothing is read back from disk). Each
method's strengths are scored in one batched generate call (per-row strengths), and the unsteered / prompting
generations are computed once and reused.
Protocol (saebasis/eval/protocol.py): search strength on validation from the spec's `strengths` (extended x2 / /2
until the optimum is interior, cfg.strength_search; a choice still on an edge is flagged on_edge), choose, report
test with bootstrap CIs over examples (and seeds: trained methods are trained once per seed; with do_sample every
method is sampled once per seed). Judges come from the registry (saebasis/judges); a concept with a second_judge
also gets `concept2` (its score), `score2` (the harmonic mean with it) and `judge_rho` (Spearman of the two
judges over the test responses) in its row. Outputs in out_dir: results.csv, results.md, results.json,
score_vs_strength.png, score_vs_fluency.png, logged to wandb (offline by default; logger=none disables).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from pathlib import Path
from statistics import mean
from typing import NamedTuple

import torch

from saebasis import judges
from saebasis.config import compose, override, setup_env, to_dict
from saebasis.core.generation import generate_timed
from saebasis.core.stack import load_stack, stack_for
from saebasis.data import load_concept
from saebasis.eval import capability, plots, protocol
from saebasis.eval.metrics import ab_matching_prob, harmonic_mean, kl_to_base, latent_l0, n_params
from saebasis.experiments import cells
from saebasis.runs import check_writable, load_run
from saebasis.training.fit import fit_baseline
from saebasis.training.train import train

KINDS = ("none", "prompt", "train", "fit", "run")


class Method(NamedTuple):
    intervention: object | None  # None: unsteered / prompting
    hook: str | None  # where the run applies (SARA reads block L's input)
    fit_time_s: float
    prefix: str = ""  # prompting: text put before each user message


def check_methods(cfg: dict, concept) -> None:
    """Every spec is well formed and the data can support the protocol -- before any heavy work."""
    if not cfg.get("methods"):
        raise ValueError("compare needs at least one method: methods: {unsteered: {kind: none}, ...}.")
    for name, spec in cfg["methods"].items():
        kind = (spec or {}).get("kind")
        if kind not in KINDS:
            raise ValueError(f"methods.{name}: kind must be one of {list(KINDS)}, got {kind!r}.")
        if kind == "prompt" and not (isinstance(spec.get("prefix"), str) and spec["prefix"].strip()):
            raise ValueError(
                f"methods.{name}: kind prompt needs a prefix (the text asking for the concept), got "
                f"{spec.get('prefix')!r}; or no prefix: the concept's own (its concept.yaml `prompt`)."
            )
        if kind == "run" and not (spec.get("run_dir") or spec.get("run")):
            raise ValueError(
                f"methods.{name}: kind run needs run_dir=<folder written by train / fit-baseline> "
                "(or run=<Run> from Python)."
            )
        grid = spec.get("strengths")
        if (
            kind in ("train", "fit", "run")
            and grid is not None
            and (not grid or not all(isinstance(s, (int, float)) for s in grid))
        ):
            raise ValueError(f"methods.{name}: strengths must be a non-empty list of numbers, got {grid!r}.")
    for split in ("val", "test"):
        if not concept.instructions[split]:
            raise ValueError(
                f"Concept '{concept.name}' has no '{split}' instructions: compare chooses strength on val "
                "and reports test."
            )
    if cfg.get("select_by", "score") == "ab" and not (concept.ab_items("val") and concept.ab_items("test")):
        raise ValueError(
            "select_by=ab needs A/B items with split val and test in the concept's ab.jsonl "
            f"('{concept.name}' has none)."
        )


def for_concept(cfg: dict, concept) -> dict:
    """The concept's own settings where the config leaves them open (a new concept is one folder): select_by null ->
    its concept.yaml's (default score); a prompt method without `prefix` -> its concept.yaml's `prompt`."""
    if cfg.get("select_by") is None:
        cfg["select_by"] = concept.select_by
    for spec in cfg["methods"].values():
        if spec.get("kind") == "prompt" and not spec.get("prefix"):
            spec["prefix"] = concept.prompt
    return cfg


def method_config(name: str, spec: dict, cfg: dict, out: Path, seed: int) -> dict | None:
    """The composed train / fit_baseline config of one (method, seed), as a plain dict (None for the kinds
    that are not made here): what the method is made with, and what a resume is keyed on."""
    kind = spec["kind"]
    if kind not in ("train", "fit"):
        return None
    run_dir = out / "runs" / (f"{name}-seed{seed}" if kind == "train" else name)
    shared = list(cfg.get("stack_overrides") or []) + [
        override("data", cfg["data"]),
        override("run_dir", run_dir),
        f"seed={seed}",
        "overwrite=true",
    ]  # paths quoted: `(`, `<`, spaces
    if kind == "train":
        return to_dict(
            compose(
                "train",
                shared
                + ["logger=none", "n_samples=0"]
                + list(spec.get("overrides") or [])
                + mixed_precision(cfg.get("autocast")),
            )
        )  # trained as it is judged
    return to_dict(compose("fit_baseline", shared + list(spec.get("overrides") or [])))


MIXED = {"bfloat16": "bf16-mixed", "float16": "16-mixed"}
"""compare's `autocast` dtype -> the Lightning precision its trained methods are trained with."""


def mixed_precision(autocast: str | None) -> list[str]:
    """The train-config override that trains in the precision `autocast` judges in ([] for full precision)."""
    return [f"trainer.precision={MIXED[autocast]}"] if autocast else []


PLACE_KEYS = ("run_dir", "ckpt_dir", "overwrite", "resume", "logger", "n_samples", "ckpt_every_n_steps")
"""Where and how a run is saved or logged, not what it is: left out of its resume key."""


def config_key(method_cfg: dict | None) -> str | None:
    """A hash of the whole composed config but its place (PLACE_KEYS): any change of a method's config
    (an experiment file, a dataclass default) changes it, so a resume never reuses a stale cell."""
    if method_cfg is None:
        return None
    blob = json.dumps({k: v for k, v in method_cfg.items() if k not in PLACE_KEYS}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def saved_key(run_dir: Path) -> str | None:
    """The resume key of the config a saved run folder was made with (None if it records none)."""
    from saebasis.runs import CFG_FILE, read_json

    try:
        return config_key(read_json(run_dir / CFG_FILE).get("config"))
    except (OSError, ValueError):
        return None


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


class Evaluator:
    """Generate and judge (method, strengths, split, seed); caches the unsteered / prompting generations."""

    def __init__(self, stack, concept, cfg: dict) -> None:
        self.stack, self.concept, self.cfg = stack, concept, cfg
        self.splits = {
            "val": concept.instructions["val"][: cfg["n_val"]],
            "test": concept.instructions["test"][: cfg["n_test"]],
        }
        self._cache: dict[tuple, dict] = {}
        self.prompt_reuse = judges.PromptReuse()  # the fluency judge runs each instruction's prompt once per concept

    def precision(self):
        """torch.autocast in cfg.autocast (bfloat16 / float16) around generating, judging and measuring;
        no-op when null.
        On a CPU with AVX512-BF16 ~1.6x faster here, and greedy text changes (scripts/bench/bench_precision.py)."""
        if not self.cfg.get("autocast"):
            return contextlib.nullcontext()
        return torch.autocast(
            next(self.stack.model.parameters()).device.type, dtype=getattr(torch, self.cfg["autocast"])
        )

    def generate(self, method: Method, split: str, strength: float, seed: int) -> dict:
        return self.generate_many(method, split, [strength], seed)[float(strength)]

    def generate_many(self, method: Method, split: str, strengths: list[float], seed: int) -> dict[float, dict]:
        """{strength: judged responses} for every strength in one batched generate pass (rows at their own strength)."""
        cfg, iv = self.cfg, method.intervention
        key = (method.prefix, split, seed if cfg["do_sample"] else 0)
        if iv is None:
            if key not in self._cache:
                self._cache[key] = self._run(method, split, [0.0], seed)[0.0]
            return {float(s): self._cache[key] for s in strengths}
        return self._run(method, split, [float(s) for s in strengths], seed)

    def _run(self, method: Method, split: str, strengths: list[float], seed: int) -> dict[float, dict]:
        cfg, prompts = self.cfg, self.splits[split]
        rows = [p for _ in strengths for p in prompts]
        per_row = [s for s in strengths for _ in prompts]
        with self.precision():
            gen = generate_timed(
                self.stack.model,
                self.stack.tokenizer,
                rows,
                method.intervention,
                method.hook,
                cfg["max_new_tokens"],
                cfg["batch_size"],
                method.prefix,
                do_sample=cfg["do_sample"],
                temperature=cfg["temperature"],
                top_p=cfg["top_p"],
                seed=seed,
                desc=f"{split} x{len(strengths)} strengths",
                strength=per_row if method.intervention is not None else 1.0,
            )
            out = {}
            for j, s in enumerate(strengths):
                responses = gen.responses[j * len(prompts) : (j + 1) * len(prompts)]
                out[s] = {
                    **self.judge(prompts, responses),
                    "responses": responses,
                    "seconds_per_token": gen.seconds / max(1, gen.token_slots),
                }
        return out

    def judge(self, instructions: list[str], responses: list[str]) -> dict[str, list[float]]:
        given = dict(
            description=self.concept.description,
            instructions=instructions,
            model=self.stack.model,
            tokenizer=self.stack.tokenizer,
        )
        with self.prompt_reuse.active():
            c, i, f = (
                judges.score(name, responses, **given) for name in (self.concept.judge, "instruction", "fluency")
            )
        out = {"concept": c, "instruction": i, "fluency": f, "score": [harmonic_mean(*x) for x in zip(c, i, f)]}
        if self.concept.second_judge:  # an independent judge of the same concept, reported beside the first
            out["concept2"] = judges.score(self.concept.second_judge, responses, **given)
            out["score2"] = [harmonic_mean(*x) for x in zip(out["concept2"], i, f)]
        return out

    def capability(self, method: Method, strength: float) -> dict:
        """Capability kept at the chosen strength (saebasis.eval.capability): accuracy on cfg.capability items, steered
        (or prompted) / unsteered, with its paired bootstrap CI; the unsteered pass is made once per process."""
        n = self.cfg["capability"]
        items = capability.select_items(capability.load_items(), n)
        key = (id(self.stack.model), len(items), self.cfg.get("autocast"))
        with self.precision():
            if key not in _UNSTEERED:
                _UNSTEERED[key] = capability.correct(self.stack.model, self.stack.tokenizer, items)
            base = _UNSTEERED[key]
            if not bool(base.any()):  # e.g. a random tiny model: the ratio is undefined
                return {"capability_kept": None, "capability_acc": 0.0, "capability_items": len(items)}
            if method.intervention is None and not method.prefix:
                got = capability.Capability(1.0, (1.0, 1.0), *(float(base.float().mean()),) * 2, len(items), {})
            else:
                got = capability.capability_kept(
                    self.stack.model,
                    self.stack.tokenizer,
                    method.intervention,
                    method.hook,
                    strength,
                    items,
                    unsteered=base,
                    prefix=method.prefix,
                )
        return {
            "capability_kept": got.kept,
            "capability_ci_low": got.ci[0],
            "capability_ci_high": got.ci[1],
            "capability_acc": got.steered,
            "capability_items": got.n_items,
        }

    def ab(self, method: Method, split: str, strength: float) -> float:
        with self.precision():
            return ab_matching_prob(
                self.stack.model,
                self.stack.tokenizer,
                method.hook,
                method.intervention,
                self.concept.ab_items(split),
                method.prefix,
                strength=float(strength),
            )


_UNSTEERED: dict[tuple, torch.Tensor] = {}
"""(model id, number of items, autocast) -> the unsteered model's [n_items] correctness, shared by every concept."""


def seeds_for(spec: dict, cfg: dict) -> list[int]:
    """Replicates: trained methods and sampled generations vary with the seed; greedy closed-form ones do not."""
    return list(cfg["seeds"]) if spec["kind"] == "train" or cfg["do_sample"] else list(cfg["seeds"])[:1]


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


def normalise(cfg: dict) -> dict:
    """Checks (defaults live in configs/compare.yaml only); seeds: a list (default [seed])."""
    missing = [
        k
        for k in ("select_by", "strength_search", "do_sample", "temperature", "top_p", "n_val", "n_test")
        if k not in cfg
    ]
    if missing:
        raise ValueError(
            f"compare config lacks {missing}: compose it from configs/compare.yaml "
            "(saebasis.config.compose('compare', ...))."
        )
    cfg["seeds"] = [int(s) for s in (cfg.get("seeds") or [cfg.get("seed", 0)])]
    cfg["methods"] = {k: v for k, v in (cfg.get("methods") or {}).items() if v is not None}  # null drops a method
    if cfg["select_by"] not in (None, "score", "ab"):
        raise ValueError(
            f"select_by must be null (the concept's), 'score' (harmonic-mean text score) or 'ab' "
            f"(A/B matching probability), got {cfg['select_by']!r}."
        )
    n_cap = cfg.setdefault("capability", 0)
    if isinstance(n_cap, bool) or not isinstance(n_cap, int) or n_cap < 0:
        raise ValueError(
            "capability must be 0 (off) or how many capability items to score at each method's chosen strength "
            f"(e.g. 110; {len(capability.load_items())} or more = all), got {n_cap!r}."
        )
    if cfg.get("autocast") not in (None, *MIXED):
        raise ValueError(f"autocast must be null (full precision) or one of {list(MIXED)}, got {cfg['autocast']!r}.")
    return cfg


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


def evaluator(stack, concept, cfg: dict) -> list:
    """[the Evaluator, the unsteered test generation]: warmed up, then the reference speed of gen_overhead."""
    ev = Evaluator(stack, concept, cfg)
    warm_up(ev)  # the first generate call of a process is slow (allocator, kernels): never the reference
    return [ev, ev.generate(Method(None, ev.stack.hook, 0.0), "test", 0.0, cfg["seeds"][0])]  # cached for unsteered


def merge(out: Path, results: dict, cfg: dict, seconds: float, shared: bool, final: bool = False) -> tuple[dict, dict]:
    """Write results.json and the tables from this process's results and (shared) every valid saved cell, under the
    merge lock; final: the plots too, when every method is there. Returns (the merged results, the paths)."""
    if not shared:
        return results, write(out, results, cfg, seconds, final=final)
    with cells.merge_lock(out / "results"):
        saved = finished_methods(out, cfg)
        merged = {name: results.get(name) or saved[name] for name in cfg["methods"] if name in results or name in saved}
        complete = all(name in merged or name in cfg["skipped"] for name in cfg["methods"])
        paths = write(out, merged, cfg, seconds, final=final and complete)
    return merged, {**paths, "complete": complete}


def warm_up(ev: Evaluator) -> None:
    """One short untimed generation, so the unsteered reference for gen_overhead is timed warm."""
    prompts = ev.splits["val"][: ev.cfg["batch_size"]] or ev.splits["test"][: ev.cfg["batch_size"]]
    with ev.precision():  # warm the kernels the timed calls will use
        generate_timed(
            ev.stack.model,
            ev.stack.tokenizer,
            prompts,
            None,
            ev.stack.hook,
            min(8, ev.cfg["max_new_tokens"]),
            ev.cfg["batch_size"],
        )


def finite(x):
    """NaN / inf -> None, so results.json is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def write(out: Path, results: dict, cfg: dict, seconds: float, final: bool = False) -> dict:
    rows = [r["row"] for r in results.values()]
    paths = plots.write_tables(out, rows)
    if cfg.get("skipped"):  # optional peers whose environment is missing: said, not silently dropped
        with open(out / "results.md", "a") as f:
            f.writelines(
                f"\nSkipped {name}: its environment is missing ({why}).\n" for name, why in cfg["skipped"].items()
            )
    blob = {"config": _plain(cfg), "total_time_s": seconds, "complete": final, "results": results}
    tmp = out / f".results.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(finite(blob), indent=2, default=str))
    tmp.replace(out / "results.json")
    paths["json"] = str(out / "results.json")
    if final:
        paths.update(plots.plot_results(out, results))
        plots.log_wandb(cfg, out, rows, paths)
    return paths


_KEYS: dict[str, list] | None = None
"""expected_keys' answers during one compare call (its merges ask again after every method); None outside one."""


def expected_keys(name: str, spec: dict, cfg: dict, out: Path) -> list[str | None]:
    """The resume keys of a method's composed configs, one per seed (None for kinds not made here)."""
    memo = json.dumps(
        [name, _plain({"methods": {name: spec}})["methods"][name], str(out)]
        + [cfg.get(k) for k in ("stack_overrides", "data", "autocast", "seeds", "do_sample")],
        sort_keys=True,
        default=str,
    )
    if _KEYS is not None and memo in _KEYS:
        return _KEYS[memo]
    keys = [config_key(method_config(name, spec, cfg, out, seed)) for seed in seeds_for(spec, cfg)]
    if _KEYS is not None:
        _KEYS[memo] = keys
    return keys


@contextlib.contextmanager
def remembered_keys():
    """Within: each method's resume keys are composed once (the configs on disk do not change during one compare)."""
    global _KEYS
    outer, _KEYS = _KEYS, ({} if _KEYS is None else _KEYS)
    try:
        yield
    finally:
        _KEYS = outer


def finished_methods(out: Path, cfg: dict) -> dict[str, dict]:
    """Results of methods already complete in out/results.json with the same spec *and* the same composed
    train / fit config per seed (resume=true): editing an experiment file or a default reruns its cells."""
    found = {name: cell for name in cfg["methods"] if (cell := finished_cell(out, name, cfg)) is not None}
    path = out / "results.json"
    try:
        blob = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        blob = {}  # a torn write: start over (results are rewritten after every method)
    if (blob.get("config") or {}).get("autocast") != cfg.get("autocast"):
        return found  # judged in another precision: greedy text differs, nothing carries over
    specs = _plain(cfg)["methods"]
    old = (blob.get("config") or {}).get("methods") or {}
    legacy = {
        name: res
        for name, res in (blob.get("results") or {}).items()  # results.json written before cells
        if name in specs
        and name not in found
        and old.get(name) == specs[name]
        and recorded_keys(name, res, cfg, out) == expected_keys(name, cfg["methods"][name], cfg, out)
    }
    return {**legacy, **found}


EVAL_KEYS = (
    "seeds",
    "n_val",
    "n_test",
    "n_neutral",
    "max_new_tokens",
    "select_by",
    "strength_search",
    "do_sample",
    "temperature",
    "top_p",
    "autocast",
)
"""What a cell's judged result depends on besides its method (its spec and composed configs)."""


def cell_key(name: str, cfg: dict) -> dict:
    """What a saved cell must match to be reused: the method's spec and the evaluation settings (capability only when
    measured, so cells saved before it existed stay valid without it)."""
    evaluation = {k: cfg.get(k) for k in EVAL_KEYS}
    if cfg.get("capability"):
        evaluation["capability"] = cfg["capability"]
    return {"spec": _plain(cfg)["methods"][name], "eval": evaluation}


def finished_cell(out: Path, name: str, cfg: dict) -> dict | None:
    """The saved cell of `name` when it was made with this spec, these evaluation settings and the same composed
    train / fit configs (None otherwise: it is computed again)."""
    blob = cells.read_cell(out, name)
    if not blob or "row" not in blob:
        return None
    key = cell_key(name, cfg)
    made = blob.get("cell") or {}
    same = made.get("spec") == key["spec"] and made.get("eval") == json.loads(json.dumps(key["eval"], default=str))
    return blob if same and blob.get("config_keys") == expected_keys(name, cfg["methods"][name], cfg, out) else None


def recorded_keys(name: str, res: dict, cfg: dict, out: Path) -> list[str | None]:
    """The keys a finished result was made with: stored beside it, or (results written before keys were stored)
    read back from the configs its run folders recorded."""
    if "config_keys" in res:
        return res["config_keys"]
    spec = cfg["methods"][name]
    keys = []
    for seed in seeds_for(spec, cfg):
        made = method_config(name, spec, cfg, out, seed)
        keys.append(None if made is None else saved_key(Path(made["run_dir"])))
    return keys


def _plain(cfg: dict) -> dict:
    """The config as JSON can hold it (in-memory runs replaced by their folder)."""
    methods = {
        name: {k: (str(v.path) if k == "run" else v) for k, v in (spec or {}).items()}
        for name, spec in cfg.get("methods", {}).items()
    }
    return {**cfg, "methods": methods}
