"""`saebasis demo`: the idea end to end on the embedded default, offline, on CPU.

1. the default SAE's quality (stored at training), 2. train the SAE-basis steering bias on the concept, 3. compare
it with the other methods (val-chosen strength, test score with CIs), 4. read the bias's top latents (HTML report)
and how readable the SAE-basis methods are, 5. a Markdown report tying it together (REPORT.md).
Two sizes (configs/demo.yaml): the quick demo (default: the bias, a sparse SAE adaptor, the unsteered model,
prompting, DiffMean and the residual adaptor, one seed) and `full=true` (every method of the sentiment comparison,
two seeds, the published table).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from saebasis.config import compose, override, setup_env, to_dict
from saebasis.core.sae import resolve_builtin
from saebasis.interpret.readability import read_runs, readability, readability_table


def _overrides(cfg: dict) -> list[str]:
    return [override("data", cfg["data"]), f"logger.mode={cfg['logger'].get('mode') or 'null'}"]


def _precision(cfg: dict, command: str) -> list[str]:
    """The demo's `autocast` as an override of the compare config, or of a train config (Lightning's mixed
    precision)."""
    from saebasis.experiments.compare import mixed_precision

    if command == "train":
        return mixed_precision(cfg.get("autocast"))
    return [f"autocast={cfg['autocast']}"] if cfg.get("autocast") else []


def quiet() -> None:
    """The demo's console is for its user: Lightning's internal deprecation notes (its own pytree helper) are not."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*treespec.*LeafSpec.*")


def demo_compare_cfg(cfg: dict, out: Path) -> dict:
    """The demo's compare config: its size's compare overrides (quick_demo / full_demo), its methods kept."""
    size = cfg["full_demo" if cfg["full"] else "quick_demo"]
    overrides = [*size["compare"], override("out_dir", out / "compare"), *_overrides(cfg), *_precision(cfg, "compare")]
    compare_cfg = to_dict(compose("compare", overrides))
    compare_cfg["methods"] = {k: v for k, v in compare_cfg["methods"].items() if v is not None}  # null: left out
    keep = size.get("methods")
    if keep:
        unknown = sorted(set(keep) - set(compare_cfg["methods"]))
        if unknown:
            raise ValueError(
                f"demo methods {unknown} are not in the compare method set "
                f"({sorted(compare_cfg['methods'])}). Fix the demo's methods list (configs/demo.yaml)."
            )
        compare_cfg["methods"] = {k: v for k, v in compare_cfg["methods"].items() if k in keep}
    grid = (compare_cfg["methods"].get("sae_bias") or {}).get("strengths") or [0.5, 1, 2, 4]
    compare_cfg["methods"]["sae_bias"] = {
        "kind": "run",
        "strengths": grid,
    }  # the bias trained first, seed 0 (in memory)
    return compare_cfg


def top_latents(report_json: str | Path, k: int = 5) -> list[dict]:
    """The report's k latents the bias changed most: index, change, and what the per-latent table says they mean."""
    blob = json.loads(Path(report_json).read_text())
    return [
        {
            "latent": d["latent"],
            "change": d["change"],
            "explanation": d.get("explanation") or "",
            "context": (d.get("contexts") or [{}])[0],
        }
        for d in blob.get("latents", [])[:k]
    ]


def _context_text(context: dict) -> str:
    text = context.get("text") or "".join(context.get("tokens") or [])
    return " ".join(str(text).split())[:80]


def demo(cfg) -> dict:
    from saebasis.core.stack import load_stack
    from saebasis.data import load_concept
    from saebasis.experiments.compare import compare
    from saebasis.interpret.report import interpret
    from saebasis.training.train import train

    setup_env()
    quiet()
    cfg = to_dict(cfg)
    from saebasis.experiments.compare import MIXED
    from saebasis.runs import check_writable

    if cfg.get("autocast") not in (None, *MIXED):  # refused up front, as compare and the leaderboard do
        raise ValueError(f"autocast must be null (full precision) or one of {list(MIXED)}, got {cfg['autocast']!r}.")
    out = check_writable(Path(cfg["out_dir"]).resolve(), "out_dir")  # a read-only out_dir is found before any work
    start = time.time()
    compare_cfg = demo_compare_cfg(cfg, out)  # composed (and checked) before any heavy work
    path = str(cfg["sae"]["path"])
    quality = json.loads((resolve_builtin(path) / "quality.json").read_text()) if path.startswith("builtin:") else {}
    print(
        f"[demo 1/4] SAE {path} quality: "
        + ", ".join(f"{k}={quality[k]:.3g}" for k in ("explained_variance", "l0", "ce_loss_recovered") if k in quality)
    )
    stack = load_stack(cfg)  # the model and SAE, loaded once for every step
    concept = load_concept(cfg["data"])
    steps = {"load model, SAE and concept": time.time() - start}
    print("[demo 2/4] training the SAE-basis steering bias on", cfg["data"])
    mark = time.time()
    bias = train(
        compose(
            "train",
            [
                "experiment=sae_bias",
                override("run_dir", out / "runs" / "sae_bias"),
                *_overrides(cfg),
                *_precision(cfg, "train"),
            ],
        ),
        stack=stack,
        concept=concept,
    )
    steps["train the SAE bias"] = time.time() - mark
    print(
        f"[demo 3/4] comparing {len(compare_cfg['methods'])} methods (strength chosen on val, test score): "
        + ", ".join(compare_cfg["methods"])
    )
    mark = time.time()
    comparison = compare(compare_cfg, stack=stack, concept=concept, runs={"sae_bias": bias["run"]})
    steps["compare (train / fit, generate, judge)"] = time.time() - mark
    print("[demo 4/4] reading the bias's top latents and how readable the SAE-basis methods are")
    mark = time.time()
    report = interpret(compose("interpret", [override("run", bias["run_dir"]), override("out_dir", out / "interpret")]))
    readable = {"sae_bias (demo step 2)": readability(report["json"], out)}
    if cfg["full_demo" if cfg["full"] else "quick_demo"].get("read_compared"):
        readable.update(read_runs(out / "compare" / "runs", out))
    top = top_latents(report["json"])
    for d in top:
        print(
            f"  latent {d['latent']:>5}  change {d['change']:.3f}  {d['explanation'][:60]}  "
            f"| {_context_text(d['context'])}"
        )
    steps["interpret (report + coverage / alignment)"] = time.time() - mark
    summary = write_report(
        out,
        quality,
        bias,
        comparison,
        report,
        time.time() - start,
        readable,
        steps,
        precision=f"{cfg['autocast']} autocast" if cfg.get("autocast") else "float32",
        concept=cfg["data"],
        top=top,
    )
    print(f"[demo] done in {time.time() - start:.0f} s -> {summary}")
    return {
        "report": str(summary),
        "compare": comparison,
        "interpret": report,
        "train": {k: v for k, v in bias.items() if k != "run"},
    }


def timing_table(steps: dict[str, float], comparison: dict) -> str:
    """Where the demo's time went: its steps, and compare's per method (train / fit + generation + judging)."""
    lines = ["| step | seconds |", "|---|---:|", *(f"| {name} | {sec:.0f} |" for name, sec in steps.items())]
    blob = json.loads(Path(comparison["json"]).read_text()) if comparison.get("json") else {}
    for name, res in (blob.get("results") or {}).items():
        fit = res["row"].get("fit_time_s") or 0.0
        lines.append(
            f"| compare: {name} | {res.get('eval_time_s', 0):.0f} "
            f"(train / fit {fit * res['row'].get('n_seeds', 1):.0f}) |"
        )
    return "\n".join(lines)


def latents_table(top: list[dict]) -> str:
    lines = [
        "| latent | change (mean abs, corpus) | top tokens (per-latent table) | a max-activating context |",
        "|---:|---:|---|---|",
    ]
    lines += [
        f"| {d['latent']} | {d['change']:.3f} | {d['explanation'][:80]} | {_context_text(d['context'])} |" for d in top
    ]
    return "\n".join(lines)


def write_report(
    out: Path,
    quality: dict,
    bias: dict,
    comparison: dict,
    report: dict,
    seconds: float,
    readable: dict | None = None,
    steps: dict[str, float] | None = None,
    precision: str = "float32",
    concept: str = "sentiment",
    top: list[dict] | None = None,
) -> Path:
    rows = sorted(comparison["rows"], key=lambda r: -r["score"])
    samples = "\n".join(
        f"- **{s['prompt']}**\n  - unsteered: {s['unsteered']}\n  - steered: {s['steered']}"
        for s in bias.get("samples", [])
    )
    text = f"""# saebasis demo report

Total time: {seconds / 60:.1f} min ({precision}). \
Default SAE quality (held-out): {json.dumps({k: round(v, 3) for k, v in quality.items() if isinstance(v, float)})}

## 1. SAE-basis steering bias ({Path(concept).name})
Trained in {bias["train_time_s"]:.0f} s ({bias["steps"]} steps). Run: `{bias["run_dir"]}`.

{samples}

## 2. Comparison (test split, strength chosen on validation; best first: **{rows[0]["method"]}**)
{Path(comparison["md"]).read_text()}
![score vs strength](compare/score_vs_strength.png)
![score vs fluency](compare/score_vs_fluency.png)

## 3. Interpretation of the trained bias: the latents it changed most
{latents_table(top or [])}

Full report: [report.html](interpret/report.html) ({Path(report["json"]).name} beside it).

## 4. Can the SAE-basis methods be read? (coverage and concept alignment, seed-0 runs, held-out corpus)
Coverage: of the 10 latents each method changed most (measured on the corpus), how many have >= 5 max-activating
contexts. Alignment: the concept's judge on those latents' contexts minus the same judge on 10 random alive latents.
{readability_table(readable or {})}

## 5. Where the time went
{timing_table(steps or {}, comparison)}
"""
    (out / "REPORT.md").write_text(text)
    return out / "REPORT.md"
