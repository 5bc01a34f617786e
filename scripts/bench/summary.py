"""Write scripts/bench/results/SUMMARY.md from results/{memory,generation,training}.json and their .cuda*.json
variants (not the --quick ones).

python scripts/bench/summary.py
"""

from __future__ import annotations

import json
from pathlib import Path

import common


def machine_line(record: dict) -> str:
    m = record["machine"]
    gpu = m["gpu"] or "no GPU"
    load = m.get("load_avg_1m")
    busy = (
        f"; load average {load['start']}..{load['end']} on {m['cores']} cores (shared machine: noisy)" if load else ""
    )
    return (
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, transformers {m['transformers']}, {gpu}; "
        f"device {m['device']}, {record['args'].get('dtype')}"
        + (f" weights under {record['args']['autocast']} autocast" if record["args"].get("autocast") else "")
        + f"; {record['date']}, commit {m['git_commit']}{busy}"
    )


def memory(record: dict) -> list[str]:
    s = record["setup"]
    lines = [
        f"### SAE encoding peak memory ({s['tokens']} tokens, d_model {s['d_model']}, chunk {s['chunk']}, k {s['k']})",
        "",
        "| d_sae | dense | chunked | top-k sparse | dense / top-k |",
        "|---:|---:|---:|---:|---:|",
    ]
    by = {(r["d_sae"], r["path"]): r["peak_mib"] for r in record["results"]}
    for d in sorted({r["d_sae"] for r in record["results"]}):
        lines.append(
            f"| {d} | {by[(d, 'dense')]:.0f} MiB | {by[(d, 'chunked')]:.0f} MiB | {by[(d, 'topk')]:.0f} MiB | "
            f"{by[(d, 'dense')] / by[(d, 'topk')]:.1f}x |"
        )
    lines += ["", f"Measured as {s['measure']}; {s['weights']}."]
    return lines


def generation(record: dict) -> list[str]:
    s = record["setup"]
    x = lambda v, f="{:.3f}x": "-" if v is None else f.format(v)
    lines = [
        f"### Generation overhead ({s['prompts']} prompts x {s['new_tokens']} new tokens, batch {s['batch']}, "
        f"{s['decoding']}, hook {s['hook']})",
        "",
        "| method | end to end / unsteered (median) | hook cost per decode call | per-call ratio | target | met |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for r in record["results"]:
        target = f"<= {r['target']}" if r["target"] else "-"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(
            f"| {r['method']} | {x(r['ratio'])} | {x(r.get('hook_us_per_call'), '{:.0f} us')} | "
            f"{x(r.get('isolated_ratio'), '{:.4f}x')} | {target} | {met} |"
        )
    lines += [
        "",
        f"SAE: {s['sae']}. End to end: median of {record['args']['reps']} interleaved repetitions; the "
        f"unsteered model took {s['unsteered_seconds_per_token'] * 1e3:.1f} ms per generated token and timed "
        f"against itself (`unsteered_again`, an A/A test) it differed by {s['aa_noise']:.1%}: end-to-end ratios "
        f"closer to 1 than that are noise. Per-call ratio = 1 + hook cost / unsteered time per token, the hook "
        f"timed on its own (attached minus bare, best of 7 blocks of 300 calls); `met` is judged on it.",
    ]
    return lines


def training(record: dict) -> list[str]:
    lines = [
        "### Training throughput (one step loop for every method: forward, CE loss, backward, AdamW)",
        "",
        "| method | trainable params | tokens/s (median) | rep times |",
        "|---|---:|---:|---:|",
    ]
    for r in record["results"]:
        spread = f"{min(r['seconds_all']):.1f}..{max(r['seconds_all']):.1f} s"
        lines.append(f"| {r['method']} | {r['params']:,} | {r['tokens_per_s']:.0f} | {spread} |")
    if record.get("cache_results"):
        lines += [
            "",
            "| cache_activations (sae_adaptor, saebasis ActivationCache) | epochs | tokens/s |",
            "|---|---:|---:|",
        ]
        for r in record["cache_results"]:
            lines.append(f"| {r['cache_activations']} | {r['epochs']} | {r['tokens_per_s']:.0f} |")
    met = record.get("met", {})
    lines += ["", "| ratio | value | target >= 1.0 met |", "|---|---:|:---:|"]
    lines += [
        f"| {k} | {v:.2f}x | {'-' if k not in met else ('yes' if met[k] else '**no**')} |"
        for k, v in record["ratios"].items()
    ]
    lines += [""] + [f"- {n}" for n in record.get("notes", [])]
    return lines


SECTIONS = {"memory": memory, "generation": generation, "training": training}


def main() -> None:
    out = [
        "# Benchmarks",
        "",
        "Written by `python scripts/bench/summary.py` from scripts/bench/results/*.json: "
        "`<name>.json` measured on CPU, `<name>.cuda*.json` on a GPU (every script takes `--device cuda --dtype "
        "bfloat16`).",
        "",
    ]
    for name, section in SECTIONS.items():
        path = common.RESULTS / f"{name}.json"
        if not path.exists():
            out += [f"### {name}", "", f"not measured yet (`python scripts/bench/bench_{name}.py`)", ""]
        for path in ([path] if path.exists() else []) + sorted(common.RESULTS.glob(f"{name}.cuda*.json")):
            record = json.loads(path.read_text())
            out += section(record) + [
                "",
                f"Machine: {machine_line(record)}.",
                f"Command: `{command(name, record)}`",
                f"File: `{path.name}`",
                "",
            ]
    Path(common.RESULTS / "SUMMARY.md").write_text("\n".join(out))
    print(f"[bench] wrote {common.RESULTS / 'SUMMARY.md'}")


STACK_DEFAULTS = {
    "device": "cpu",
    "dtype": "float32",
    "model": "smollm2",
    "random_weights": False,
    "layer": 12,
    "sae": None,
}
SCRIPT_DEFAULTS = {
    "training": {"batch": 8, "seq": 64, "steps": 3, "reps": 5, "epochs": 3, "runs": 3, "autocast": None},
    "generation": {"batch": 1, "new_tokens": 32, "reps": 5},
    "memory": {},
}  # as each script resolves them


def command(name: str, record: dict) -> str:
    """The command line that wrote `record`: the script and every argument that differs from its default."""
    defaults = {**STACK_DEFAULTS, **SCRIPT_DEFAULTS.get(name, {})}
    flags = [
        f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}")
        for key, value in record["args"].items()
        if key in defaults and value != defaults[key]
    ]
    return " ".join([f"python scripts/bench/bench_{name}.py", *flags])


if __name__ == "__main__":
    main()
