"""A folding run exported to llama.cpp, generating there: judged on a concept's test instructions beside saebasis'
own generation of the same run at the same strength, and steered tokens/s in both engines.

    python scripts/bench/llamacpp_generation.py --run <sentiment sae_bias run> --strength 1.0
Writes scripts/bench/results/llamacpp_generation.json (figures in docs/export.md and docs/benchmarks.md).

Both engines get the same token ids (saebasis' tokenizer and chat template) and decode greedily for max_new_tokens;
llama.cpp runs the embedded Q4_1 GGUF with the run's control vector (`saebasis.export`, format gguf, at --strength),
saebasis the dequantised weights with the run's intervention. Responses are judged as `saebasis compare` judges
them (the concept's judge, instruction relevance, fluency; score = their harmonic mean) with a bootstrap 95% CI over
instructions. Speed: llama.cpp one prompt at a time (llama-cpp-python has no batched generate); saebasis one prompt
at a time too and all prompts in one batched call, both on --threads CPU threads. llama.cpp:
bash scripts/setup_llamacpp.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from saebasis.core.activations import chat_prefix  # noqa: E402
from saebasis.core.generation import generate_timed  # noqa: E402
from saebasis.core.models import GGUF_FILE, embedded_gguf_dir, load_model  # noqa: E402
from saebasis.core.stack import Stack  # noqa: E402
from saebasis.data import load_concept  # noqa: E402
from saebasis.eval.protocol import report  # noqa: E402
from saebasis.experiments.compare import Evaluator  # noqa: E402
from saebasis.export import export  # noqa: E402
from saebasis.export.llamacpp import LlamaCpp  # noqa: E402
from saebasis.runs import load_run  # noqa: E402


def judged(concept, model, tokenizer, hook: str, prompts: list[str], responses: list[str]) -> dict:
    """Judged by `saebasis compare`'s own Evaluator.judge, with its bootstrap CI over instructions."""
    ev = Evaluator(Stack(model, tokenizer, None, hook, None), concept, {"n_val": 0, "n_test": 0})
    got = ev.judge(prompts, responses)
    rep = report({0: got["score"]})
    return {
        "score": rep.mean,
        "ci": [rep.ci_low, rep.ci_high],
        **{k: sum(got[k]) / len(got[k]) for k in ("concept", "instruction", "fluency")},
        "scores": got["score"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a folding run folder made on the embedded model")
    parser.add_argument("--strength", type=float, default=1.0, help="the strength the run was chosen at")
    parser.add_argument("--concept", default="sentiment")
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "scripts" / "bench" / "results" / "llamacpp_generation.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    concept = load_concept(args.concept)
    prompts = concept.instructions["test"][: args.n_test]
    loaded = load_model("smollm2")
    model, tok = loaded.model, loaded.tokenizer
    hook = run.cfg["hook"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    result = {
        "command": " ".join(["python", "scripts/bench/llamacpp_generation.py", *sys.argv[1:]]),
        "commit": commit.strip(),
        "method": run.cfg["method"],
        "hook": hook,
        "strength": args.strength,
        "concept": args.concept,
        "n_test": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "load_avg_start": os.getloadavg()[0],
    }
    steer = dict(intervention=run.intervention, hook=hook, strength=args.strength)
    batched = generate_timed(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=len(prompts), **steer)
    single = generate_timed(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=1, **steer)
    with tempfile.TemporaryDirectory() as tmp:
        path = export(run, Path(tmp) / "steer.gguf", "gguf", args.strength)
        engine = LlamaCpp(embedded_gguf_dir() / GGUF_FILE, n_threads=args.threads)
        engine.set_control_vector(path)
        cpp_responses, cpp_tokens = [], 0
        start = time.perf_counter()
        for prompt in prompts:
            ids = tok(chat_prefix(tok, prompt), add_special_tokens=False)["input_ids"]
            new = engine.generate(ids, args.max_new_tokens)
            cpp_tokens += len(new)
            cpp_responses.append(tok.decode(new, skip_special_tokens=True).strip())
        cpp_seconds = time.perf_counter() - start
        engine.close()
    ours = judged(concept, model, tok, hook, prompts, batched.responses)
    theirs = judged(concept, model, tok, hook, prompts, cpp_responses)
    result["saebasis"] = {
        **ours,
        "tokens_per_s_batch1": single.token_slots / single.seconds,
        "tokens_per_s_batched": batched.token_slots / batched.seconds,
        "seconds_batch1": single.seconds,
        "seconds_batched": batched.seconds,
    }
    result["llamacpp"] = {**theirs, "tokens_per_s": cpp_tokens / cpp_seconds, "seconds": cpp_seconds}
    result["llamacpp_score_inside_saebasis_ci"] = ours["ci"][0] <= theirs["score"] <= ours["ci"][1]
    result["same_text"] = sum(a == b for a, b in zip(batched.responses, cpp_responses))
    result["speed_ratio_llamacpp_over_saebasis_batch1"] = (
        result["llamacpp"]["tokens_per_s"] / (result["saebasis"]["tokens_per_s_batch1"])
    )
    result["speed_ratio_llamacpp_over_saebasis_batched"] = (
        result["llamacpp"]["tokens_per_s"] / (result["saebasis"]["tokens_per_s_batched"])
    )
    result["load_avg_end"] = os.getloadavg()[0]
    result["responses"] = [
        {"instruction": p, "saebasis": a, "llamacpp": b} for p, a, b in zip(prompts, batched.responses, cpp_responses)
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k != "responses"}
    for engine_name in ("saebasis", "llamacpp"):
        summary[engine_name] = {k: v for k, v in result[engine_name].items() if k != "scores"}
    print(json.dumps(summary, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
