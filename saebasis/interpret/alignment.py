"""Two numbers per run: coverage and concept alignment of its top latents.

coverage   of the top latents (by the method's change), how many have >= `min_contexts` max-activating
           contexts in the corpus table -- latents with fewer have too little evidence to read.
alignment  the concept's own judge on the top latents' max-activating contexts (each context's window as
           text; a latent's score = the mean over its contexts), minus the same on `n_random` random alive
           latents (alive: fired on the corpus; drawn with a fixed seed, the top latents left out). Reported as
           the difference of the two group means with a percentile bootstrap 95% CI (latents resampled with
           replacement within each group). For a sentiment concept also the share of top (and random) latents
           whose contexts lean positive: mean VADER compound > 0.05, VADER's usual threshold.
lens       the same difference with each latent judged on its logit-lens tokens (its 8 most promoted output
           tokens joined as one text) instead of its contexts (`lens_alignment`; `board_lens_alignment` for every
           run of a board): which evidence the judge reads, contexts or output tokens.

`judge_texts` is the one place the judge is called, so the judge registry can replace it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from saebasis.data import load_concept
from saebasis.interpret.lens import logit_lens
from saebasis.judges import concept_scores, vader_compound

LEANS_POSITIVE = 0.05


def judge_texts(concept, texts: list[str]) -> list[float]:
    """The concept's own judge on each text, in [0, 1]."""
    return concept_scores(concept.judge, texts, concept.description)


def polarity_texts(concept, texts: list[str]) -> list[float] | None:
    """Signed sentiment of each text (VADER compound in [-1, 1]) for a sentiment concept; None otherwise."""
    return vader_compound(texts) if concept.judge == "vader" else None


def coverage(table, latents: list[int], min_contexts: int = 5) -> dict:
    covered = [i for i in latents if table.n_contexts(i) >= min_contexts]
    return {"covered": len(covered), "of": len(latents), "min_contexts": min_contexts, "latents": covered}


def random_alive(table, exclude: list[int], n: int, seed: int = 0) -> list[int]:
    pool = [i for i in table.alive().tolist() if i not in set(exclude)]
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(pool[j] for j in order[:n])


def bootstrap_diff(a: list[float], b: list[float], n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% CI of mean(a) - mean(b), resampling each group with replacement."""
    gen = torch.Generator().manual_seed(seed)
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    da = ta[torch.randint(len(a), (n_boot, len(a)), generator=gen)].mean(1)
    db = tb[torch.randint(len(b), (n_boot, len(b)), generator=gen)].mean(1)
    lo, hi = torch.quantile(da - db, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return lo, hi


def _per_latent(score, concept, texts: dict[int, list[str]]) -> dict[int, float] | None:
    flat = [t for ts in texts.values() for t in ts]
    values = score(concept, flat) if flat else []
    if values is None:
        return None
    out, j = {}, 0
    for latent, ts in texts.items():
        out[latent] = sum(values[j : j + len(ts)]) / len(ts)
        j += len(ts)
    return out


def concept_alignment(
    concept, table, tokenizer, top: list[int], n_random: int = 10, seed: int = 0, n_boot: int = 1000
) -> dict:
    """The alignment numbers (see the module docstring); latents without contexts are left out of both groups."""
    rand = random_alive(table, top, n_random, seed)
    texts = {i: table.context_texts(i, tokenizer) for i in dict.fromkeys(top + rand)}
    texts = {i: t for i, t in texts.items() if t}
    scores = _per_latent(judge_texts, concept, texts)
    a, b = [scores[i] for i in top if i in scores], [scores[i] for i in rand if i in scores]
    out = {
        "judge": concept.judge,
        "concept": concept.name,
        "top": {str(i): scores.get(i) for i in top},
        "random": {str(i): scores.get(i) for i in rand},
        "n_top": len(a),
        "n_random": len(b),
        "seed": seed,
        "top_mean": None,
        "random_mean": None,
        "diff": None,
        "ci95": None,
        "positive_share": None,
    }
    if not a or not b:
        return out
    out.update(
        top_mean=sum(a) / len(a),
        random_mean=sum(b) / len(b),
        diff=sum(a) / len(a) - sum(b) / len(b),
        ci95=list(bootstrap_diff(a, b, n_boot, seed)),
    )
    polarity = _per_latent(polarity_texts, concept, texts)
    if polarity is not None:
        lean = lambda group: (
            sum(polarity[i] > LEANS_POSITIVE for i in group if i in polarity)
            / max(1, sum(i in polarity for i in group))
        )
        out["positive_share"] = {"top": lean(top), "random": lean(rand), "threshold": LEANS_POSITIVE}
    return out


def lens_alignment(
    concept, lens_tokens: dict[int, list[str]], top: list[int], rand: list[int], seed: int = 0, n_boot: int = 1000
) -> dict:
    """The alignment difference with each latent judged on its logit-lens tokens (its promoted tokens joined by
    spaces, one text a latent) instead of its contexts: same groups, same judge, same bootstrap as
    `concept_alignment`, so the two can be compared cell by cell."""
    texts = {i: [" ".join(t.strip() for t in lens_tokens[i])] for i in dict.fromkeys(top + rand) if lens_tokens.get(i)}
    scores = _per_latent(judge_texts, concept, texts)
    a, b = [scores[i] for i in top if i in scores], [scores[i] for i in rand if i in scores]
    if not a or not b:
        return {"judge": concept.judge, "diff": None, "ci95": None, "n_top": len(a), "n_random": len(b)}
    diff = sum(a) / len(a) - sum(b) / len(b)
    return {
        "judge": concept.judge,
        "diff": diff,
        "ci95": list(bootstrap_diff(a, b, n_boot, seed)),
        "n_top": len(a),
        "n_random": len(b),
        "texts": {str(i): t[0] for i, t in texts.items()},
    }


def board_lens_alignment(board: str | Path, model, tokenizer, sae, seed: int = 0) -> dict:
    """For every interpreted seed-`seed` run of a board folder (concepts/<c>/runs/<name>-seed<seed>/interpret/
    report.json), keyed by concept and run name: its stored context alignment beside `lens_alignment` on the same
    top and random latents, each latent's 8 most promoted logit-lens tokens computed from `sae` and `model` (no
    forward pass)."""
    out, lens = {}, {}
    for report in sorted(Path(board).glob(f"concepts/*/runs/*-seed{seed}/interpret/report.json")):
        rep = json.loads(report.read_text())
        al, concept = rep["alignment"], load_concept(report.parents[3].name)
        top, rand = [int(i) for i in al["top"]], [int(i) for i in al["random"]]
        for i in top + rand:
            if i not in lens:
                lens[i] = logit_lens(model, tokenizer, sae.W_dec[i], k=8)["promoted"]
        cell = {
            "contexts": {"diff": al["diff"], "ci95": al["ci95"]},
            "lens": lens_alignment(concept, lens, top, rand, al["seed"]),
        }
        out.setdefault(concept.name, {})[report.parents[1].name.removesuffix(f"-seed{seed}")] = cell  # run name
    return out
