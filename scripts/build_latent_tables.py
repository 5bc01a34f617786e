"""Build the per-latent table of each shipped SAE on the shipped held-out corpus, into the SAE's folder.

    python scripts/build_latent_tables.py                      # every SAE in saebasis/assets/sae
    python scripts/build_latent_tables.py --sae smollm2-l12 --device cuda

Each table gets every latent's effect scores too (output score, input score, delta_conf;
saebasis/interventions/latent_effect.py), in a second step whose seconds are printed. Resumable: a table already
up to date is not rebuilt (one built before the lift columns existed gets them from its top tokens, table.add_lift),
and one whose effect scores match this model, SAE and settings is not rescored.

Writes saebasis/assets/sae/<name>/latents/{table.safetensors.gz, table.json} (see saebasis/interpret/table.py),
so `saebasis interpret` with corpus=auto finds it by key and loads it in seconds. The settings are those of
configs/interpret.yaml, so the key matches what `interpret` computes; a table whose key no longer matches (SAE
retrained, corpus rebuilt) is ignored there and rebuilt here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from saebasis.config import compose
from saebasis.core.models import load_model
from saebasis.core.sae import ASSETS, SAEBasis
from saebasis.interpret.report import table_settings
from saebasis.interpret.table import add_effect, add_lift, has_effect, latent_table, save_table
from saebasis.interpret.texts import load_corpus
from saebasis.interventions.latent_effect import EffectSettings


def portable(info: dict, model_name: str) -> dict:
    """The table's info without machine paths: a model given by path is named by its saebasis name, the corpus is
    shown relative to the repository."""
    root = str(ASSETS.parent.parent) + "/"
    model = str(info.get("model", ""))
    corpus = str(info.get("corpus", "")).replace(root, "")
    return {**info, "model": model_name if model.startswith("/") else model, "corpus": corpus}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sae", nargs="*", help="shipped SAE names (default: all of saebasis/assets/sae)")
    parser.add_argument(
        "--corpus", default="auto", help="auto = held-out shards of the shipped corpus (the shipped tables use this)"
    )
    parser.add_argument("--out", type=Path, help="write here instead of <SAE folder>/latents (for trials)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--effect-batch", type=int, default=128, help="latents scored per forward pass")
    args = parser.parse_args()
    cfg = compose("interpret", [f"corpus={args.corpus}"])
    names = args.sae or sorted(p.name for p in (ASSETS / "sae").iterdir() if (p / "cfg.json").exists())
    corpus = load_corpus(cfg["corpus"], cfg["table_docs"])
    print(f"[saebasis] corpus: {corpus.source}, {len(corpus.texts)} documents")
    for name in names:
        folder = ASSETS / "sae" / name
        model_name = json.loads((folder / "cfg.json").read_text()).get("metadata", {}).get("model_name") or "smollm2"
        loaded = load_model(model_name, args.device)
        sae = SAEBasis.load(f"builtin:{name}").to(args.device)
        start = time.perf_counter()
        out = args.out / name if args.out else folder / "latents"
        table, where = latent_table(
            loaded.model,
            loaded.tokenizer,
            sae,
            corpus.texts,
            corpus.ids,
            corpus.source,
            table_settings(cfg),
            batch_size=args.batch_size,
            write_to=out,
            effect=False,
        )
        table.info = portable(table.info, model_name)
        save_table(out, table)  # also when it came up to date from the SAE folder or the cache
        print(f"[saebasis] {name}: table {where} in {time.perf_counter() - start:.0f} s")
        if "lift_ids" not in table.t:  # a table built before lift existed: re-rank its top tokens (no model pass)
            add_lift(table, loaded.tokenizer, corpus.texts)
            save_table(out, table)
            print(f"[saebasis] {name}: lift columns added from the table's top tokens")
        effect = EffectSettings(batch_size=args.effect_batch)
        if has_effect(table, loaded.model, sae, effect):
            print(f"[saebasis] {name}: effect scores already there ({table.info['effect']['seconds']} s when computed)")
        else:
            seconds = add_effect(table, loaded.model, loaded.tokenizer, sae, effect)
            save_table(out, table)
            print(f"[saebasis] {name}: effect scores of {table.d_sae} latents in {seconds:.0f} s")
        size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
        fire = int((table.t["n_fire"] > 0).sum())
        print(f"[saebasis] {name}: {out} ({size:.1f} MiB; {fire} of {table.d_sae} latents fire)")


if __name__ == "__main__":
    main()
