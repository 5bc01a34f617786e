"""Check an exported steering where it runs: llama.cpp logits vs saebasis' on the embedded model (unsteered and
steered by the run's control vector), and the capability the steering keeps (saebasis' in-process scorer).

    python scripts/bench/export_check.py --run <run dir> --strength 2.0            # both checks
    python scripts/bench/export_check.py --run <run dir> --strength 2.0 --skip-llamacpp
Writes scripts/bench/results/export_check.json. llama.cpp: bash scripts/setup_llamacpp.sh.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from saebasis.core.models import GGUF_FILE, embedded_gguf_dir, load_model  # noqa: E402
from saebasis.eval.capability import capability_kept, correct, load_items  # noqa: E402
from saebasis.export import export  # noqa: E402
from saebasis.export.llamacpp import AGREEMENT_PROMPTS  # noqa: E402
from saebasis.runs import load_run  # noqa: E402

PROMPTS = AGREEMENT_PROMPTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a folding run folder on the embedded model")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--skip-llamacpp", action="store_true")
    parser.add_argument("--skip-capability", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "scripts" / "bench" / "results" / "export_check.json")
    args = parser.parse_args()
    run = load_run(args.run)
    loaded = load_model("smollm2")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    result = {
        "command": " ".join(["python", "scripts/bench/export_check.py", *sys.argv[1:]]),
        "commit": commit.strip(),
        "method": run.cfg["method"],
        "hook": run.cfg["hook"],
        "strength": args.strength,
        "load_avg_start": os.getloadavg()[0],
    }
    if not args.skip_llamacpp and importlib.util.find_spec("llama_cpp") is not None:
        from saebasis.export.llamacpp import LlamaCpp, compare_engines

        with tempfile.TemporaryDirectory() as tmp:
            path = export(run, Path(tmp) / "steer.gguf", "gguf", args.strength)
            engine = LlamaCpp(embedded_gguf_dir() / GGUF_FILE, n_threads=args.threads)
            result["llamacpp"] = compare_engines(
                loaded.model, loaded.tokenizer, engine, PROMPTS, path, run.intervention, run.cfg["hook"], args.strength
            )
        print(json.dumps(result["llamacpp"]["summary"], indent=2))
    if not args.skip_capability:
        items = load_items()
        start = time.time()
        base = correct(loaded.model, loaded.tokenizer, items)
        cap = capability_kept(
            loaded.model, loaded.tokenizer, run.intervention, run.cfg["hook"], args.strength, items, unsteered=base
        )
        result["capability"] = {**cap._asdict(), "seconds": round(time.time() - start, 1)}
        print(json.dumps(result["capability"], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
