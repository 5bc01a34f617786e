"""`saebasis demo`: the whole workflow on the embedded default, offline, on CPU.

1. the default SAE's quality (stored at training), 2. train the SAE-basis steering bias on the sentiment
concept, 3. steered vs unsteered generations, 4. compare every method (val-chosen strength, test
score with CIs), 5. interpret the trained bias (HTML report), 6. a Markdown report tying it together.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from saebasis.config import compose, setup_env, to_dict
from saebasis.interpret.readability import read_runs, readability, readability_table
from saebasis.core.sae import resolve_builtin


def _overrides(cfg: dict) -> list[str]:
    return [f"data={cfg['data']}", f"logger.mode={cfg['logger'].get('mode') or 'null'}"]


def _precision(cfg: dict, command: str) -> list[str]:
    """The demo's `autocast` as an override of the compare config, or of a train config (Lightning's mixed precision)."""
    from saebasis.experiments.compare import mixed_precision

    if command == "train":
        return mixed_precision(cfg.get("autocast"))
    return [f"autocast={cfg['autocast']}"] if cfg.get("autocast") else []


QUICK_KEEP = ("unsteered", "prompting", "sae_bias", "diffmean")
"""Methods of the quick demo (a smoke run in minutes)."""


def demo(cfg) -> dict:
    from saebasis.experiments.compare import compare
    from saebasis.data import load_concept
    from saebasis.interpret.report import interpret
    from saebasis.core.stack import load_stack
    from saebasis.train.train import train

    setup_env()
    cfg = to_dict(cfg)
    out = Path(cfg["out_dir"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    quality = json.loads((resolve_builtin(cfg["sae"]["path"]) / "quality.json").read_text()) if str(cfg["sae"]["path"]).startswith("builtin:") else {}
    print(f"[demo 1/4] SAE {cfg['sae']['path']} quality: " + ", ".join(f"{k}={quality[k]:.3g}" for k in ("explained_variance", "l0", "ce_loss_recovered") if k in quality))
    stack = load_stack(cfg)  # the model and SAE, loaded once for every step
    concept = load_concept(cfg["data"])
    steps = {"load model, SAE and concept": time.time() - start}
    print("[demo 2/4] training the SAE-basis steering bias on", cfg["data"])
    mark = time.time()
    bias = train(compose("train", ["experiment=sae_bias", f"run_dir={out / 'runs' / 'sae_bias'}", *_overrides(cfg), *_precision(cfg, "train")]), stack=stack, concept=concept)
    steps["train the SAE bias"] = time.time() - mark
    print("[demo 3/4] comparing every method (val-chosen strength, test score)")
    mark = time.time()
    compare_cfg = to_dict(compose("compare", [f"experiment={cfg['compare_experiment']}", f"out_dir={out / 'compare'}", *_overrides(cfg), *_precision(cfg, "compare")]))
    grid = (compare_cfg["methods"].get("sae_bias") or {}).get("strengths") or [0.5, 1, 2, 4]
    compare_cfg["methods"]["sae_bias"] = {"kind": "run", "strengths": grid}  # the bias trained above, seed 0 (in memory)
    if cfg["quick"]:
        compare_cfg.update(n_val=4, n_test=6, n_neutral=4, max_new_tokens=24)
        compare_cfg["methods"] = {k: v for k, v in compare_cfg["methods"].items() if k in QUICK_KEEP}
    comparison = compare(compare_cfg, stack=stack, concept=concept, runs={"sae_bias": bias["run"]})
    steps["compare (train / fit, generate, judge)"] = time.time() - mark
    print("[demo 4/4] interpreting the trained bias (full report) and every trained SAE-basis method (coverage, alignment)")
    mark = time.time()
    report = interpret(compose("interpret", [f"run={bias['run_dir']}", f"out_dir={out / 'interpret'}"]))
    readable = {"sae_bias (demo step 2)": readability(report["json"], out), **read_runs(out / "compare" / "runs", out)}
    steps["interpret (report + coverage / alignment)"] = time.time() - mark
    summary = write_report(out, quality, bias, comparison, report, time.time() - start, readable, steps,
                           precision=f"{cfg['autocast']} autocast" if cfg.get("autocast") else "float32")
    print(f"[demo] done in {time.time() - start:.0f} s -> {summary}")
    return {"report": str(summary), "compare": comparison, "interpret": report, "train": {k: v for k, v in bias.items() if k != "run"}}


def timing_table(steps: dict[str, float], comparison: dict) -> str:
    """Where the demo's time went: its steps, and compare's per method (train / fit + generation + judging)."""
    lines = ["| step | seconds |", "|---|---:|", *(f"| {name} | {sec:.0f} |" for name, sec in steps.items())]
    blob = json.loads(Path(comparison["json"]).read_text()) if comparison.get("json") else {}
    for name, res in (blob.get("results") or {}).items():
        fit = res["row"].get("fit_time_s") or 0.0
        lines.append(f"| compare: {name} | {res.get('eval_time_s', 0):.0f} (train / fit {fit * res['row'].get('n_seeds', 1):.0f}) |")
    return "\n".join(lines)


def write_report(out: Path, quality: dict, bias: dict, comparison: dict, report: dict, seconds: float, readable: dict | None = None,
                 steps: dict[str, float] | None = None, precision: str = "float32") -> Path:
    rows = sorted(comparison["rows"], key=lambda r: -r["score"])
    samples = "\n".join(f"- **{s['prompt']}**\n  - unsteered: {s['unsteered']}\n  - steered: {s['steered']}" for s in bias.get("samples", []))
    text = f"""# saebasis demo report

Total time: {seconds / 60:.1f} min ({precision}). Default SAE quality (held-out): {json.dumps({k: round(v, 3) for k, v in quality.items() if isinstance(v, float)})}

## 1. SAE-basis steering bias (sentiment)
Trained in {bias['train_time_s']:.0f} s ({bias['steps']} steps). Run: `{bias['run_dir']}`.

{samples}

## 2. Comparison (test split, strength chosen on validation; best first: **{rows[0]['method']}**)
{Path(comparison['md']).read_text()}
![score vs strength](compare/score_vs_strength.png)
![score vs fluency](compare/score_vs_fluency.png)

## 3. Interpretation of the trained bias
[report.html](interpret/report.html) ({Path(report['json']).name} beside it).

## 4. Can the SAE-basis methods be read? (coverage and concept alignment, seed-0 runs, held-out corpus)
Coverage: of the 10 latents each method changed most (measured on the corpus), how many have >= 5 max-activating
contexts. Alignment: the concept's judge on those latents' contexts minus the same judge on 10 random alive latents.
{readability_table(readable or {})}

## 5. Where the time went
{timing_table(steps or {}, comparison)}
"""
    (out / "REPORT.md").write_text(text)
    return out / "REPORT.md"
