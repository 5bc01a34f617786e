"""`saebasis leaderboard`: every method x every concept, strength chosen on validation, scored on test.

Concepts: `concepts` entries, expanded by saebasis.data.resolve_concepts -- `builtin` (every concept folder in
saebasis/data/), a built-in name, a concept folder, or a folder of concept folders: a new concept is one folder.
Methods: configs/methods/board.yaml (`methods: board`, the list `saebasis compare methods=board` runs too).
For each concept the leaderboard runs `compare` (saebasis/experiments/compare/) in-process with the board's methods,
the concept's own prompting prefix and selection rule (its concept.yaml), sharing one model/SAE stack across concepts.

Cells and workers: every (concept, method) is a cell (saebasis/experiments/cells.py) -- claimed with the run-folder
lock, saved on its own in one rename, never computed twice at once nor again once saved (every seed of a method is in
its cell: the strength is chosen on all seeds together). So a killed run resumes where it stopped, and several
workers build one board: each walks every cell, computes the free ones and leaves the claimed ones to their owner;
concepts/<name>/results.json and the board's pages are merged from the cells under a lock (the last merge holds every
cell). Run them as a Hydra multirun over `worker` (hydra/launcher=joblib on one machine, submitit on SLURM) or as
wandb sweep agents (docs/scaling.md). `worker` is recorded in each cell and in concepts/<name>/cells/computed.jsonl.

Outputs in out_dir: `per_concept.md` (score of every method on every concept), `leaderboard.md` / `.html` /
`.json` (overall: mean score, mean rank, wins, 95% CI by a bootstrap over concepts then test instructions), and
`heatmap.png` (methods x concepts), `tradeoff.png` (mean score vs SAE latents changed per token, KL as colour), and
paired differences (the leader against every method and the configured `contrasts`, paired by test instruction, with
a bootstrap CI: which orderings are resolved); rendered by saebasis/experiments/board_render.py. Concepts with a second
judge report the two judges' Spearman agreement and flag a disagreement on the winner. Every SAE-basis method
(trained or fitted) is also read on every concept (readability=true): coverage and concept alignment of its seed-0 run
(saebasis/interpret/readability.py), a methods x concepts table.
`make_only=true` trains / fits every cell and reads the SAE-basis runs without generating (e.g. the readability
table on every concept first, or the training on a GPU); the board's next run in the same out_dir reuses those runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from saebasis.config import compose, setup_env, to_dict
from saebasis.data import load_concept, resolve_concepts
from saebasis.experiments import cells
from saebasis.experiments.board_render import markdown, write  # noqa: F401 -- the board's pages (re-exported)
from saebasis.interpret.readability import read_runs
from saebasis.runs import check_writable

PASSED = (
    "only",
    "model",
    "sae",
    "hook",
    "stack_overrides",
    "seeds",
    "n_val",
    "n_test",
    "n_neutral",
    "capability",
    "max_new_tokens",
    "batch_size",
    "strength_search",
    "autocast",
    "worker",
)
"""Board settings every concept's compare takes."""


def concept_cfg(cfg: dict, concept: str) -> dict:
    """The compare config of one concept: compare's defaults, the board's methods and budget on top; the prompting
    prefix and select_by come from the concept's concept.yaml (compare.for_concept)."""
    base = to_dict(compose("compare", []))
    methods = {k: dict(v) for k, v in cfg["methods"].items() if v is not None}  # a preset drops a method with null
    keep = {k: cfg[k] for k in PASSED if cfg.get(k) is not None}
    return {
        **base,
        **keep,
        "methods": methods,
        "data": concept,
        "out_dir": str(concept_out(cfg, concept)),
        "logger": {"mode": "disabled"},
        "resume": True,
    }


def concept_out(cfg: dict, concept: str) -> Path:
    return Path(cfg["out_dir"]) / "concepts" / Path(concept).name


def leaderboard(cfg) -> dict:
    from saebasis.core.stack import load_stack
    from saebasis.experiments.compare import compare, keep_methods

    setup_env()
    cfg = to_dict(cfg)
    out = check_writable(Path(cfg["out_dir"]), "out_dir")  # a read-only out_dir is found before any work
    concepts = resolve_concepts(cfg["concepts"])
    loaded = {name: load_concept(name) for name in concepts}  # every concept loads (and validates) before heavy work
    rows = list(keep_methods(cfg["methods"], cfg.get("only")))  # a misnamed `only` row is found before any work
    unknown = sorted({m for pair in cfg.get("contrasts") or [] for m in pair} - set(cfg["methods"]))
    if unknown:  # a typo loses a table row, not results: said up front, the board runs
        print(
            f"[saebasis leaderboard] contrasts name methods this board does not have: {unknown} (known: "
            f"{sorted(cfg['methods'])}); those pairs are left out -- fix the names in contrasts",
            flush=True,
        )
    stack = load_stack(cfg)  # the leaderboard's model and SAE, shared by every concept and method
    start = time.time()
    bar = tqdm(
        concepts,
        desc="leaderboard concepts",
        unit="concept",
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
    )
    # the work left in concepts' worth of cells (a partly finished concept counts its missing cells only), and the
    # wall seconds / share of a concept's cells saved (by any worker) while this run computed each concept
    make_only = bool(cfg.get("make_only"))
    left_work = [0.0 if judged(out, c, rows) else share_left(concept_out(cfg, c), rows, make_only) for c in concepts]
    worked: list[tuple[float, float]] = []
    for i, name in enumerate(bar):
        ccfg = concept_cfg(cfg, name)
        bar.set_postfix_str(f"{Path(name).name}; {time_left(worked, sum(left_work[i:]))}")
        t0 = time.time()
        if make_only:  # train / fit every cell, no generation: a later full run reuses the runs
            make_cells(ccfg, stack, loaded[name])
        else:
            compare(ccfg, stack=stack, concept=loaded[name])
        if cfg["readability"] and (make_only or judged(out, name)):
            read_concept(cfg, name)  # coverage / alignment of every SAE-basis method on this concept
        merge(out, cfg, concepts, time.time() - start)
        if left_work[i]:
            share = (
                left_work[i]  # make_only saves runs, not cells: the concept's pass is its share
                if make_only
                else cells.saved_between(concept_out(cfg, name), rows, t0) / len(rows)
            )
            if share:
                worked.append((time.time() - t0, share))
        print(
            f"[saebasis leaderboard] {Path(name).name}: {(time.time() - t0) / 60:.1f} min ({i + 1}/{len(concepts)}); "
            f"{time_left(worked, sum(left_work[i + 1 :]))}",
            flush=True,
        )
    paths, left = merge(out, cfg, concepts, time.time() - start, final=True)
    print((out / "leaderboard.md").read_text())
    if make_only:  # runs made and read, no cell judged: no concept is finished, and that is not another worker's doing
        print(
            f"[saebasis leaderboard] make_only: the runs of {len(concepts)} concept(s) made (and read) in "
            f"{(time.time() - start) / 60:.1f} min, no cell judged -> {out}; the same command without make_only "
            "judges them",
            flush=True,
        )
        return {"out_dir": str(out), **paths, "pending": left}
    if left:
        print(
            f"[saebasis leaderboard] not finished yet (another worker holds cells of): {', '.join(left)}; the last "
            "worker to finish merges them",
            flush=True,
        )
    print(
        f"[saebasis leaderboard] {len(concepts) - len(left)} of {len(concepts)} concepts in "
        f"{(time.time() - start) / 60:.1f} min -> {out}"
    )
    return {"out_dir": str(out), **paths, "pending": left}


def read_concept(cfg: dict, concept: str) -> dict:
    """The readability of a concept's seed-0 SAE-basis runs (each run interpreted once; one reader at a time)."""
    runs = concept_out(cfg, concept) / "runs"
    if not runs.is_dir():
        return {}
    with cells.merge_lock(concept_out(cfg, concept) / "readability"):
        return read_runs(runs, Path(cfg["out_dir"]), cfg["readability_overrides"])


def merge(out: Path, cfg: dict, concepts: list[str], seconds: float, final: bool = False) -> tuple[dict, list[str]]:
    """The board's pages from every finished concept on disk (whichever worker computed it), under the board's merge
    lock. Returns (the pages' paths, the concepts of this board not finished yet)."""
    names = [Path(c).name for c in concepts]

    def read(done: dict, have: dict) -> dict:  # readability of the finished concepts not read yet (each run once)
        if not cfg["readability"]:
            return {}
        found = {
            Path(c).name: read_concept(cfg, c)
            for c in concepts
            if Path(c).name not in have and (cfg.get("make_only") or Path(c).name in done)
        }
        return {**have, **{n: r for n, r in found.items() if r or n in done}}

    readable = read(finished_concepts(out, names)[0], {})  # the slow part (interpreting runs) outside the board lock
    with cells.merge_lock(out / "board"):
        done, _ = finished_concepts(out, names)
        results = {} if cfg.get("make_only") else {n: done[n] for n in names if n in done}
        readable = read(done, readable)  # a concept finished meanwhile
        left = [n for n in names if n not in done]
        paths = write(
            out,
            results,
            seconds,
            final=final,
            readable=readable,
            pairs=cfg.get("contrasts"),
            complete=final and not left and not cfg.get("make_only"),
        )
    return paths, left


def concept_results(out: Path, concept: str) -> dict:
    """A concept's results.json in the board `out`, or {} when it is missing or unreadable (a file torn by a stopped
    merge): the one reader behind `judged` (a resume) and `finished_concepts` (a page), so both count such a concept
    as not finished and a resume computes it again."""
    path = Path(out) / "concepts" / Path(concept).name / "results.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}


def judged(out: Path, concept: str, rows=()) -> bool:
    """The concept's results.json in the board `out` is complete already and holds every one of `rows` (a resume will
    skip its cells; a row added to the method set after it was written is still to compute)."""
    blob = concept_results(out, concept)
    return bool(blob.get("complete")) and set(rows) <= set(blob.get("results") or {})


def finished_concepts(out: Path, order: list[str] = ()) -> tuple[dict[str, dict], list[str]]:
    """A board's complete concepts ({name: its results.json}, in `order`, then any others found) and the names of the
    concept folders that are not finished (no results.json, an unreadable one, or not complete): what a page is
    rendered from."""
    found = sorted(d.name for d in (Path(out) / "concepts").glob("*") if d.is_dir())
    results, left = {}, []
    for concept in [c for c in order if c in found] + [c for c in found if c not in order]:
        blob = concept_results(out, concept)
        if blob.get("complete"):
            results[concept] = blob
        else:
            left.append(concept)
    return results, left


def share_left(concept_dir: Path, rows: list[str], make_only: bool = False) -> float:
    """The share of a concept's cells (one per row) not saved yet; make_only saves runs, not cells: 1.0."""
    return 1.0 if make_only or not rows else 1.0 - cells.saved_between(concept_dir, rows) / len(rows)


def time_left(worked: list[tuple[float, float]], left: float) -> str:
    """The time estimate of a board: the wall seconds this run spent on concepts over the share of their cells saved
    meanwhile (by every worker), times the concepts' worth of cells left. Cells found finished count in neither, so
    a resumed, partly finished concept neither inflates nor deflates the estimate."""
    if left <= 0:
        return "nothing left to compute"
    if not worked:
        return f"{left:.3g} concept(s) to compute, no estimate until one has run here"
    done = sum(share for _, share in worked)
    per = sum(s for s, _ in worked) / done
    return (
        f"~{per * left / 3600:.1f} h left ({left:.3g} concept(s) at {per / 60:.1f} min, from the {done:.3g} "
        "computed in this run)"
    )


def make_cells(ccfg: dict, stack, concept) -> None:
    """make_only=true: every trained / fitted (method, seed) of one concept, saved where compare looks for it
    (concepts/<name>/runs/), skipping runs already made with the same composed config; an optional peer whose
    library is missing is skipped with a line. Nothing is generated or judged: the board's later run reuses these."""
    from saebasis.experiments.compare import normalise, obtain, seeds_for

    ccfg = normalise(dict(ccfg))
    out = Path(ccfg["out_dir"])
    for method, spec in ccfg["methods"].items():
        if spec["kind"] not in ("train", "fit"):
            continue  # unsteered / prompting / a saved run: nothing to make
        with cells.claim(out, method) as mine:
            if not mine:
                print(f"[saebasis leaderboard] {method}: being made by another worker, left to it", flush=True)
                continue
            for seed in seeds_for(spec, ccfg):
                try:
                    obtain(method, spec, ccfg, out, stack, concept, seed)
                except ImportError as err:
                    if not spec.get("optional"):
                        raise
                    print(f"[saebasis leaderboard] {method}: SKIPPED, its environment is missing ({err})", flush=True)
                    break
