"""Peak memory of SAE encoding vs d_sae: the dense path vs chunked / top-k sparse paths.

    python scripts/bench/bench_memory.py                 # d_sae 16k and 65k, d_model 576, 4096 tokens, CPU
    python scripts/bench/bench_memory.py --device cuda   # torch.cuda.max_memory_allocated instead of maxrss

Paths compared (saebasis.core.sae.SAEBasis):
    dense    encode(h)                        -> [tokens, d_sae]; holds pre-activations + activations
    chunked  encode_chunked(h, chunk)         -> [tokens, d_sae]; holds the output + one chunk
    topk     encode_topk_sparse(h, k, chunk)  -> indices/values [tokens, k]; flat in d_sae beyond one chunk

On CPU, tracemalloc does not see torch's allocations, so each case runs in a fresh (forked) process and
reports resource.getrusage maxrss after the encode minus maxrss after set-up (SAE built, h allocated,
a small warm-up encode done). On CUDA it reports torch.cuda.max_memory_allocated above the set-up level.
The SAE has random weights (sae-lens StandardSAE init): memory does not depend on the weight values.
"""

from __future__ import annotations

import multiprocessing
import resource
import time

import common

PATHS = ("dense", "chunked", "topk")


def worker(d_sae: int, path: str, tokens: int, d_model: int, chunk: int, k: int, device: str, dtype: str) -> dict:
    """Run one case in this (fresh) process; return its peak memory above set-up, in MiB."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig

    from saebasis.core.sae import SAEBasis

    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=d_sae, dtype=dtype, device=device))
    basis = SAEBasis(sae, "blocks.12.hook_resid_post")
    h = torch.randn(tokens, d_model, device=device, dtype=getattr(torch, dtype))  # [tokens, d_model]
    run = {
        "dense": lambda: basis.encode(h),
        "chunked": lambda: basis.encode_chunked(h, chunk),
        "topk": lambda: basis.encode_topk_sparse(h, k, chunk),
    }[path]
    with torch.no_grad():
        basis.encode_topk_sparse(h[:8], k, chunk)  # warm-up: thread pools, kernels
        common.sync(device)
        base = _peak(device)
        start = time.perf_counter()
        out = run()
        common.sync(device)
        seconds = time.perf_counter() - start
        peak = _peak(device)
    kept = (
        (out.values.numel() * out.values.element_size() + out.indices.numel() * 8)
        if path == "topk"
        else out.numel() * out.element_size()
    )
    return {
        "d_sae": d_sae,
        "path": path,
        "peak_mib": (peak - base) / 2**20,
        "output_mib": kept / 2**20,
        "seconds": seconds,
    }


def _peak(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_case(args, d_sae: int, path: str) -> dict:
    """One case in a forked child: its maxrss starts at the parent's current RSS, not the parent's peak,
    and nothing it allocates outlives it. The parent has only imported torch / sae-lens (no CUDA init)."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send(worker(d_sae, path, args.tokens, args.d_model, args.chunk, args.k, args.device, args.dtype))
        except BaseException as err:  # report, never hang the parent
            send.send({"error": f"{type(err).__name__}: {err}"})

    proc = ctx.Process(target=child)
    proc.start()
    result = recv.recv() if recv.poll(timeout=1800) else {"error": "timed out"}
    proc.join()
    if "error" in result:
        raise RuntimeError(f"case d_sae={d_sae} path={path} failed: {result['error']}")
    return result


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--d-sae", type=int, nargs="+", default=None, help="SAE widths (default 16384 65536)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens encoded at once (default 4096)")
    parser.add_argument("--d-model", type=int, default=576)
    parser.add_argument("--chunk", type=int, default=256, help="tokens per chunk (chunked / topk paths)")
    parser.add_argument("--k", type=int, default=64, help="latents kept per token (topk path)")
    args = parser.parse_args()
    import sae_lens  # noqa: F401  (imported once here; every forked case inherits it)

    args.d_sae = args.d_sae or ([1024, 4096] if args.quick else [16384, 65536])
    args.tokens = args.tokens or (256 if args.quick else 4096)
    args.reps = args.reps or (1 if args.quick else 3)
    rows = measure(args)
    common.write("memory", args, summarise(args, rows))


def measure(args) -> list[dict]:
    cases = [(d, p) for d in args.d_sae for p in PATHS]
    samples: dict[tuple[int, str], list[dict]] = {c: [] for c in cases}
    for rep in range(args.reps):  # interleaved: every case once per repetition, rotating order
        shift = rep % len(cases)
        for d_sae, path in cases[shift:] + cases[:shift]:
            samples[(d_sae, path)].append(run_case(args, d_sae, path))
            print(
                f"[memory] rep {rep} d_sae={d_sae:>6} {path:<8} peak {samples[(d_sae, path)][-1]['peak_mib']:8.1f} MiB",
                flush=True,
            )
    rows = []
    for (d_sae, path), runs in samples.items():
        rows.append(
            {
                "d_sae": d_sae,
                "path": path,
                "peak_mib": common.median([r["peak_mib"] for r in runs]),
                "output_mib": runs[0]["output_mib"],
                "seconds": common.median([r["seconds"] for r in runs]),
                "peak_mib_all": [r["peak_mib"] for r in runs],
            }
        )
    return rows


def summarise(args, rows: list[dict]) -> dict:
    by = {(r["d_sae"], r["path"]): r for r in rows}
    small, large = min(args.d_sae), max(args.d_sae)
    ratios = {
        f"dense_over_topk_peak_d{d}": by[(d, "dense")]["peak_mib"] / max(by[(d, "topk")]["peak_mib"], 1e-9)
        for d in args.d_sae
    }
    ratios.update(
        {
            f"{p}_peak_growth_d{small}_to_d{large}": by[(large, p)]["peak_mib"] / max(by[(small, p)]["peak_mib"], 1e-9)
            for p in PATHS
        }
    )
    return {
        "setup": {
            "tokens": args.tokens,
            "d_model": args.d_model,
            "chunk": args.chunk,
            "k": args.k,
            "weights": "random (sae-lens StandardSAE init); memory does not depend on values",
            "measure": "torch.cuda.max_memory_allocated"
            if args.device.startswith("cuda")
            else "getrusage maxrss after encode minus after set-up, fresh forked process per case",
        },
        "results": rows,
        "ratios": ratios,
        "notes": [
            "topk is exact only when k >= the per-token L0; a random-weight SAE has L0 ~ d_sae/2, so here it "
            "only measures memory. A trained SAE (L0 ~ 20-100) with k=64..128 is exact or near it."
        ],
    }


if __name__ == "__main__":
    main()
