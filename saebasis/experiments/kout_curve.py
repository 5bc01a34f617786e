"""Score and KL against the number of latents the sparse SAE adaptor writes, and the verdict on the target.

    saebasis compare experiment=kout_curve
    python scripts/kout_curve.py outputs/compare/kout_curve-<time>

Reads the comparison's results.json: the `kout_<k>` rows (k = 8, 16, 32, 64, 128, all), the dense low-rank adaptor
(`sae_adaptor_lowrank`) and `sae_bias` as references. "Latents written" is the row's measured `latent_l0` (latents
changed per token on neutral prompts, in the SAE basis), not the nominal k. Target (issue: adaptors that write to
few latents): some adaptor writing <= 64 latents scores within the dense adaptor's 95% CI, with KL on neutral prompts
no worse than sae_bias's. Writes kout_curve.{json,md,png} beside results.json and prints the table and the verdict.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DENSE, BIAS, PREFIX = "sae_adaptor_lowrank", "sae_bias", "kout_"


def curve(rows: list[dict]) -> dict:
    """The k_out rows sorted by latents written, the references, and the verdict."""
    by = {r["method"]: r for r in rows}
    missing = [m for m in (DENSE, BIAS) if m not in by]
    if missing or not any(m.startswith(PREFIX) for m in by):
        raise ValueError(
            f"results.json lacks {missing or 'kout_* rows'}: run `saebasis compare experiment=kout_curve`."
        )
    dense, bias = by[DENSE], by[BIAS]
    points = sorted((r for m, r in by.items() if m.startswith(PREFIX)), key=lambda r: r.get("latent_l0") or 0)
    out = []
    for r in points:
        within = r["score"] >= dense["ci_low"]  # at or above the dense adaptor's lower CI bound
        kl_ok = (
            r.get("kl_neutral") is not None
            and bias.get("kl_neutral") is not None
            and r["kl_neutral"] <= bias["kl_neutral"]
        )
        out.append(
            {
                "method": r["method"],
                "latents_written": r.get("latent_l0"),
                "params": r.get("params"),
                "score": r["score"],
                "ci": [r["ci_low"], r["ci_high"]],
                "kl_neutral": r.get("kl_neutral"),
                "strength": r["strength"],
                "within_dense_ci": within,
                "kl_no_worse_than_sae_bias": kl_ok,
            }
        )
    met = [
        p for p in out if (p["latents_written"] or 0) <= 64 and p["within_dense_ci"] and p["kl_no_worse_than_sae_bias"]
    ]
    return {
        "points": out,
        "dense": {k: dense.get(k) for k in ("score", "ci_low", "ci_high", "kl_neutral", "latent_l0")},
        "sae_bias": {k: bias.get(k) for k in ("score", "ci_low", "ci_high", "kl_neutral", "latent_l0")},
        "target_met_by": [p["method"] for p in met],
    }


def markdown(c: dict) -> str:
    d, b = c["dense"], c["sae_bias"]
    lines = [
        "| adaptor | latents written | params | strength | score [95% CI] | KL neutral "
        "| >= dense CI low | KL <= sae_bias |",
        "|---|---:|---:|---:|---|---:|:-:|:-:|",
    ]
    for p in c["points"]:
        kl = "-" if p["kl_neutral"] is None else f"{p['kl_neutral']:.3f}"
        lines.append(
            f"| {p['method']} | {p['latents_written']:.0f} | {p['params']} | {p['strength']:g} | {p['score']:.3f} "
            f"[{p['ci'][0]:.3f}, {p['ci'][1]:.3f}] | {kl} | {'yes' if p['within_dense_ci'] else 'no'} | "
            f"{'yes' if p['kl_no_worse_than_sae_bias'] else 'no'} |"
        )
    lines.append(
        f"\nDense low-rank adaptor: {d['score']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}], "
        f"KL {d['kl_neutral']:.3f}, "
        f"{d['latent_l0']:.0f} latents; sae_bias: {b['score']:.3f}, KL {b['kl_neutral']:.3f}."
    )
    lines.append(
        "Target (<= 64 latents written, score at or above the dense CI's lower bound, KL no worse than sae_bias): "
        + (f"met by {', '.join(c['target_met_by'])}." if c["target_met_by"] else "NOT met.")
    )
    return "\n".join(lines) + "\n"


def plot(c: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p["latents_written"] for p in c["points"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.errorbar(
        x,
        [p["score"] for p in c["points"]],
        yerr=[[p["score"] - p["ci"][0] for p in c["points"]], [p["ci"][1] - p["score"] for p in c["points"]]],
        marker="o",
        capsize=3,
        label="sparse SAE adaptor",
    )
    d = c["dense"]
    a.axhspan(
        d["ci_low"], d["ci_high"], alpha=0.2, color="C1", label=f"dense low-rank adaptor ({d['latent_l0']:.0f} latents)"
    )
    a.axvline(64, ls=":", color="grey")
    a.set(
        xscale="log",
        xlabel="latents written per token (measured)",
        ylabel="test score",
        title="score vs latents written",
    )
    a.legend(fontsize=8)
    b.plot(x, [p["kl_neutral"] for p in c["points"]], marker="o", label="sparse SAE adaptor")
    b.axhline(c["sae_bias"]["kl_neutral"], color="C2", ls="--", label="sae_bias")
    b.axhline(d["kl_neutral"], color="C1", ls="--", label="dense adaptor")
    b.set(
        xscale="log",
        xlabel="latents written per token (measured)",
        ylabel="KL to base on neutral prompts",
        title="KL vs latents written",
    )
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    results = json.loads((args.out_dir / "results.json").read_text())
    c = curve([r["row"] for r in results["results"].values()])
    (args.out_dir / "kout_curve.json").write_text(json.dumps(c, indent=2))
    (args.out_dir / "kout_curve.md").write_text(markdown(c))
    plot(c, args.out_dir / "kout_curve.png")
    print(markdown(c))


if __name__ == "__main__":
    main()
