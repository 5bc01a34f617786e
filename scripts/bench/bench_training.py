"""Training throughput (tokens/s): SAE-basis and residual adaptors vs LoRA (peft) and LoReFT (pyreft).

    python scripts/bench/bench_training.py                      # embedded SmolLM2, layer 12, CPU
    python scripts/bench/bench_training.py --device cuda --dtype bfloat16 --model <hf id> --layer 20
    python scripts/bench/bench_training.py --device cuda --autocast bfloat16   # as trainer=gpu (bf16-mixed) trains

Part 1, step throughput: ONE hand-written loop for every method (forward with labels, next-token
cross-entropy (+ the method's penalty), backward, AdamW step), the same model, layer, batches and
rank, repetitions interleaved, median. Nothing upstream of the layer needs gradients in any method.
    sae_adaptor / residual_adaptor   saebasis interventions at blocks.L.hook_resid_post
    lora_o_proj                      peft LoRA on block L's o_proj (as many parameters as the residual adaptor)
    lora_all_linear                  peft LoRA on all seven linear maps of block L
    loreft                           pyreft LoReFT at block L's output, every position (own venv, see below)
    sae_bias / residual_vector       saebasis' constant shifts (the SAE-basis bias and the residual vector)
Part 2, the activation cache: E epochs of sae_adaptor training over the same batches, from the token
ids every epoch (cache false) vs through saebasis.training.cache.ActivationCache (cache true: the first
epoch stores the hook activations, later epochs run only the blocks after L), with a check that the
cached path computes the same logits; its speed-up is compared with the bound from the layer index and the
model's shapes (cache_bound: the LM head and the SAE work every epoch pays are counted). Both parts are repeated
--runs times (default 3): every ratio is reported as the median over
runs with its min-max spread, and a target (ours >= 1.05x LoRA o_proj / all-linear, >= 1.1x LoReFT; cache
>= 95% of its bound) counts as met only when the slowest run meets it.

pyreft pins transformers==4.45.1 (saebasis needs 5.x), so LoReFT runs in its own venv through
scripts/bench/pyreft_worker.py. Create it once with `bash scripts/setup_pyreft.sh`. The worker reads a
transformers-4 copy of the model folder (saebasis.core.models.transformers4_folder: rope theta, tokenizer).
Token batches are random ids (seeded): throughput does not depend on the text.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
import time
from pathlib import Path

import common
import torch

PYREFT_PY = common.REPO / ".venv-pyreft" / "bin" / "python"
OURS = ("sae_adaptor", "residual_adaptor", "sae_bias", "residual_vector")
PEERS = {"lora_o_proj": 1.05, "lora_all_linear": 1.05, "loreft": 1.10}  # target: ours / peer >= this, in every run
CACHE_TARGET = 0.95  # cached-prefix speed-up >= 95% of the bound from the layer index and the shapes
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def ours(model, sae, hook, method: str, rank: int | None):
    """A step function training a saebasis intervention, its parameter count, its rank."""
    from saebasis.core import hooks
    from saebasis.interventions import REGISTRY, build

    if method not in REGISTRY:
        return None
    cls = REGISTRY[method]
    fields = {f for f in cls.Config.__dataclass_fields__}
    cfg = {"rank": rank} if rank is not None and "rank" in fields else {}
    iv = build(method, cfg, model.config.hidden_size, sae if cls.uses_sae else None)
    iv.to(next(model.parameters()).device)
    opt = torch.optim.AdamW([p for p in iv.parameters() if p.requires_grad], lr=1e-3)

    def step(x):
        with hooks.attach(model, hook, iv), common.autocast(model):
            loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=x).loss + iv.penalty()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in iv.parameters() if p.requires_grad), getattr(iv.cfg, "rank", None)


def lora(model, layer: int, rank: int, targets: list[str]):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        copy.deepcopy(model),
        LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets, layers_to_transform=[layer]),
    )
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)

    def step(x):
        with common.autocast(peft_model):
            loss = peft_model(input_ids=x, attention_mask=torch.ones_like(x), labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in params)


class PyreftWorker:
    """LoReFT steps in the .venv-pyreft subprocess, timed there (see pyreft_worker.py)."""

    def __init__(self, args, model_dir: Path, data: Path, rank: int) -> None:
        cmd = [
            str(PYREFT_PY),
            str(Path(__file__).with_name("pyreft_worker.py")),
            "--model-dir",
            str(model_dir),
            "--data",
            str(data),
            "--layer",
            str(args.layer),
            "--rank",
            str(rank),
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--seed",
            "0",
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**common.os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
        )
        try:
            self.params = self._reply()["params"]
        except (RuntimeError, json.JSONDecodeError):
            self.proc.kill()
            raise

    def _reply(self) -> dict:
        """The next JSON line of the worker (pyvene prints notices on stdout at import: skipped)."""
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError("the pyreft worker exited early (run scripts/bench/pyreft_worker.py by hand to see why)")

    def steps(self, n: int) -> float:
        self.proc.stdin.write(f"steps {n}\n")
        self.proc.stdin.flush()
        return self._reply()["seconds"]

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def step_throughput(args, model, sae, hook) -> tuple[list[dict], list[str]]:
    notes: list[str] = []
    torch.manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(4, vocab, (args.n_batches, args.batch, args.seq), device=args.device)  # [n, batch, pos]
    cases, params = {}, {}
    for method in OURS:
        built = ours(model, sae, hook, method, args.rank)
        if built is None:
            notes.append(f"{method}: not registered in saebasis.interventions; not measured")
            continue
        cases[method], params[method], rank = built
        args.rank = args.rank or rank
    args.rank = args.rank or 4
    for name, targets in (("lora_o_proj", ["o_proj"]), ("lora_all_linear", LINEAR)):
        try:
            cases[name], params[name] = lora(model, args.layer, args.rank, targets)
        except (ImportError, ValueError) as err:
            notes.append(f"{name}: not measured ({type(err).__name__}: {err}); pip install -e '.[bench]'")
    worker = start_pyreft(args, ids, notes)
    counter = {name: 0 for name in cases}

    def run(name, fn):
        def go():
            for _ in range(args.steps):
                fn(ids[counter[name] % args.n_batches])
                counter[name] += 1

        return go

    timed = {name: run(name, fn) for name, fn in cases.items()}
    if worker is not None:
        params["loreft"] = worker.params
        timed["loreft"] = lambda: worker.steps(args.steps)
    times = interleave_with_worker(timed, args, worker)
    if worker is not None:
        worker.close()
    tokens = args.steps * args.batch * args.seq
    rows = [
        {
            "method": name,
            "params": params[name],
            "tokens_per_step": args.batch * args.seq,
            "tokens_per_s": tokens / common.median(ts),
            "seconds_all": ts,
        }
        for name, ts in times.items()
    ]
    return rows, notes


def start_pyreft(args, ids, notes):
    if args.quick:
        notes.append("loreft: skipped in --quick mode")
        return None
    if args.autocast:
        notes.append(
            "loreft: not measured under --autocast "
            "(the pyreft worker runs without autocast: it would not be the same loop)"
        )
        return None
    if not PYREFT_PY.exists():
        notes.append(f"loreft: not measured: {PYREFT_PY} does not exist (create it as in this script's docstring)")
        return None
    from safetensors.torch import save_file

    from saebasis.core.models import EMBEDDED_NAMES, embedded_model_dir

    model_dir = embedded_model_dir() if args.model.lower() in EMBEDDED_NAMES else Path(args.model)
    if not (model_dir / "config.json").exists():
        notes.append(f"loreft: not measured: the worker needs a local model folder, got {args.model}")
        return None
    from saebasis.core.models import transformers4_folder

    model_dir = transformers4_folder(model_dir)  # the worker runs transformers 4.45
    data = Path(tempfile.mkdtemp()) / "ids.safetensors"
    save_file({"input_ids": ids.cpu().contiguous()}, data)
    try:
        return PyreftWorker(args, model_dir, data, args.rank)
    except (RuntimeError, OSError, json.JSONDecodeError) as err:
        notes.append(f"loreft: not measured: {err}")
        return None


def interleave_with_worker(timed: dict, args, worker) -> dict[str, list[float]]:
    """common.interleaved, except that the pyreft worker reports its own (inner) time."""
    names = list(timed)
    for name in names:  # warm-up
        timed[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(args.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            common.sync(args.device)
            start = time.perf_counter()
            inner = timed[name]()
            common.sync(args.device)
            times[name].append(inner if name == "loreft" else time.perf_counter() - start)
            print(
                f"[training] rep {rep} {name:<17} {args.steps * args.batch * args.seq / times[name][-1]:8.1f} tok/s",
                flush=True,
            )
    return times


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    common.add_stack_args(parser)
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (default 8)")
    parser.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 64)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per timed repetition (default 3)")
    parser.add_argument("--n-batches", type=int, default=4, help="distinct batches cycled through")
    parser.add_argument("--rank", type=int, default=None, help="rank for every method (default: the adaptors' default)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs of the activation-cache comparison (default 3)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="full measurements (each: every case, interleaved "
        "repetitions, median); ratios are reported as the median and the spread over runs (default 3)",
    )
    parser.add_argument(
        "--autocast",
        default=None,
        choices=["bfloat16"],
        help="run every method's forward "
        "under torch.autocast in this dtype (Lightning's bf16-mixed, which trainer=gpu uses: with --dtype "
        "float32 the weights stay fp32; the SAE's and adaptors' matmuls then run in bf16 too)",
    )
    args = parser.parse_args()
    common.AUTOCAST = args.autocast
    args.batch = args.batch or (2 if args.quick else 8)
    args.seq = args.seq or (16 if args.quick else 64)
    args.steps = args.steps or (1 if args.quick else 3)
    args.reps = args.reps or (1 if args.quick else 5)
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.runs = args.runs or (1 if args.quick else 3)
    model, _tok, sae, hook, sae_note = common.stack(args)
    runs = []
    for run in range(args.runs):
        print(f"[training] run {run + 1} of {args.runs}", flush=True)
        rows, notes = step_throughput(args, model, sae, hook)
        cache_rows, cache_notes = cache_speedup(args, model, sae, hook)
        runs.append((rows, cache_rows, notes + cache_notes))
    head, per_epoch = bound_terms(model, sae)
    bound = cache_bound(model.config.num_hidden_layers, args.layer, args.epochs, head, per_epoch)
    print(
        f"[training] cache bound {bound:.3f} (LM head {head:.2f} blocks, SAE {per_epoch:.2f} blocks per epoch; "
        f"without them {cache_bound(model.config.num_hidden_layers, args.layer, args.epochs):.3f})",
        flush=True,
    )
    common.write("training", args, summarise(runs, bound, [sae_note]))


def cache_bound(n_layers: int, layer: int, epochs: int, head: float = 0.0, per_epoch: float = 0.0) -> float:
    """The speed-up the activation cache can give at most, in units of one block's forward: uncached, every epoch
    runs all n blocks forward and the u = n - layer - 1 blocks after the hook backward (input gradients only, ~ one
    forward each); cached, epochs after the first run only those u blocks forward and backward. Work every epoch
    pays either way -- the LM head forward and backward (2 head) and the method's own work (per_epoch, e.g. the SAE
    encode / decode forward and backward) -- is the same in both and lowers the bound:
        E (n + u + c) / ((n + u + c) + (E - 1)(2u + c)),  c = 2 head + per_epoch.
    Layer 12 of 30, 3 epochs, c = 0: 1.226 (the old, optimistic form); with SmolLM2's head (49,152 x 576 = 8.0
    blocks) and a d_sae 4,096 SAE (1.33 blocks, forward and backward: 2.67) c = 18.7 and the bound is 1.152."""
    u = n_layers - layer - 1
    c = 2 * head + per_epoch
    return epochs * (n_layers + u + c) / ((n_layers + u + c) + (epochs - 1) * (2 * u + c))


def bound_terms(model, sae) -> tuple[float, float]:
    """(head, per_epoch) of cache_bound in block-forward units, from the shapes: the LM head's weight entries over
    one block's, and the SAE's encoder + decoder entries, forward and backward (Part 2 trains sae_adaptor)."""
    from saebasis.core.hooks import blocks

    block = sum(p.numel() for p in blocks(model)[0].parameters())
    head = model.get_output_embeddings().weight.numel() / block
    sae_entries = 2 * sae.d_model * sae.d_sae if sae is not None else 0
    return head, 2 * sae_entries / block


def summarise(runs: list[tuple[list[dict], list[dict], list[str]]], bound: float, notes: list[str]) -> dict:
    """Every run's ratios; the reported ratio is their median, the spread their min-max; a target is met when the
    slowest run meets it (the claim is then outside the run-to-run noise)."""
    per_run: list[dict[str, float]] = []
    for rows, cache_rows, _ in runs:
        speed = {r["method"]: r["tokens_per_s"] for r in rows}
        ratios = {f"{a}_over_{b}": speed[a] / speed[b] for a in OURS if a in speed for b in PEERS if b in speed}
        cache = {r["cache_activations"]: r["tokens_per_s"] for r in cache_rows}
        if True in cache and False in cache:
            ratios["cache_true_over_false"] = cache[True] / cache[False]
            ratios["cache_over_bound"] = ratios["cache_true_over_false"] / bound
        per_run.append(ratios)
    names = [k for k in per_run[0] if all(k in r for r in per_run)]
    ratios = {k: common.median([r[k] for r in per_run]) for k in names}
    spread = {k: [min(r[k] for r in per_run), max(r[k] for r in per_run)] for k in names}
    targets = {k: PEERS[k.split("_over_", 1)[1]] for k in names if k.split("_over_", 1)[1] in PEERS}
    if "cache_over_bound" in names:
        targets["cache_over_bound"] = CACHE_TARGET
    met = {k: spread[k][0] >= t for k, t in targets.items()}
    gaps = [
        f"{k} = {ratios[k]:.3f} (runs {spread[k][0]:.3f}-{spread[k][1]:.3f}): "
        f"target >= {targets[k]} in every run not met"
        for k, ok in met.items()
        if not ok
    ]
    for k in names:
        print(
            f"[training] {k:<36} median {ratios[k]:.3f}  runs {spread[k][0]:.3f}-{spread[k][1]:.3f}"
            + (f"  target >= {targets[k]}: {'met' if met[k] else 'NOT met'}" if k in targets else ""),
            flush=True,
        )
    return {
        "results": [dict(r, run=i) for i, (rows, _, _) in enumerate(runs) for r in rows],
        "cache_results": [dict(r, run=i) for i, (_, rows, _) in enumerate(runs) for r in rows],
        "ratios": ratios,
        "spread": spread,
        "per_run": per_run,
        "runs": len(runs),
        "cache_bound": bound,
        "targets": targets,
        "met": met,
        "notes": gaps + sorted({n for _, _, ns in runs for n in ns}) + notes,
    }


def cache_speedup(args, model, sae, hook) -> tuple[list[dict], list[str]]:
    """Part 2: E epochs of sae_adaptor training over the same batches through saebasis' own
    `ActivationCache` (the path `train(cfg)` takes with cache_activations=true): off = every epoch from
    the token ids; on = the hook activations computed once, later epochs run only the blocks after L."""
    from saebasis.core import hooks
    from saebasis.training.cache import ActivationCache

    torch.manual_seed(1)
    ids = torch.randint(4, model.config.vocab_size, (args.n_batches, args.batch, args.seq), device=args.device)
    batches = [{"input_ids": x, "attention_mask": torch.ones_like(x)} for x in ids]
    check = max_logit_gap(model, hook, ours_module(model, sae, args.rank), batches[0])

    def epochs(cached: bool):
        def go():
            iv = ours_module(model, sae, args.rank)
            opt = torch.optim.AdamW([p for p in iv.parameters() if p.requires_grad], lr=1e-3)
            cache = ActivationCache(model, hook) if cached else None  # fresh: the first epoch fills it
            for _ in range(args.epochs):
                for batch in batches:
                    with common.autocast(model):
                        if cache is None:
                            with hooks.attach(model, hook, iv):
                                logits = model(**batch, use_cache=False).logits
                        else:
                            logits = cache.logits(batch, iv)
                    loss = next_token_loss(logits, batch["input_ids"]) + iv.penalty()
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)

        return go

    times = common.interleaved(
        {False: epochs(False), True: epochs(True)}, max(1, args.reps // 2), args.device, warmup=0
    )
    tokens = args.epochs * ids.numel()
    rows = [
        {"cache_activations": k, "epochs": args.epochs, "tokens_per_s": tokens / common.median(v), "seconds_all": v}
        for k, v in times.items()
    ]
    for r in rows:
        print(f"[training] cache_activations={r['cache_activations']!s:<5} {r['tokens_per_s']:8.1f} tok/s", flush=True)
    return rows, [
        f"cache_activations: saebasis.training.cache.ActivationCache (as train(cfg) with cache_activations=true), "
        f"sae_adaptor, {args.epochs} epochs over {args.n_batches} batches, cache filled in the first epoch; "
        f"the cached path computes the same logits as the full forward (max |gap| {check:.2e})."
    ]


def next_token_loss(logits, ids):
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


def ours_module(model, sae, rank):
    from saebasis.interventions import build

    iv = build("sae_adaptor", {"rank": rank or 4}, model.config.hidden_size, sae)
    return iv.to(next(model.parameters()).device)


@torch.no_grad()
def max_logit_gap(model, hook: str, iv, batch) -> float:
    """The cached path must compute the same model: compare its logits with the full forward + hook."""
    from saebasis.core import hooks
    from saebasis.training.cache import ActivationCache

    with hooks.attach(model, hook, iv), common.autocast(model):  # the path that is timed, autocast included
        full = model(**batch, use_cache=False).logits
    with common.autocast(model):
        cached = ActivationCache(model, hook).logits(batch, iv)
    return float((full - cached).abs().max())


if __name__ == "__main__":
    main()
