"""The leaderboard's statistics over per-concept results (pure functions of `concepts/<name>/results.json` blobs):
scores and ranks per concept, the overall table with a bootstrap over concepts then instructions, concept families,
what each method changes (costs), judge agreement, paired differences between methods and the score / latents /
KL points of the trade-off plot. saebasis/experiments/leaderboard.py runs the board and writes the pages from these."""

from __future__ import annotations

import math
import random
from statistics import mean


def per_concept_scores(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """{method: {concept: test score}}."""
    table: dict[str, dict[str, float]] = {}
    for concept, blob in results.items():
        for method, res in blob["results"].items():
            table.setdefault(method, {})[concept] = res["row"]["score"]
    return table


def ranks(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """{method: {concept: rank}} (1 = best; ties share the mean rank)."""
    out: dict[str, dict[str, float]] = {m: {} for m in table}
    concepts = sorted({c for row in table.values() for c in row})
    for c in concepts:
        scores = sorted(((row[c], m) for m, row in table.items() if c in row), reverse=True)
        i = 0
        while i < len(scores):
            j = i
            while j + 1 < len(scores) and scores[j + 1][0] == scores[i][0]:
                j += 1
            for k in range(i, j + 1):
                out[scores[k][1]][c] = (i + j) / 2 + 1
            i = j + 1
    return out


def percentile_ci(draws: list[float]) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of bootstrap draws (nan, nan when there are none)."""
    if not draws:
        return (math.nan, math.nan)
    ordered = sorted(draws)
    return ordered[int(0.025 * len(ordered))], ordered[min(len(ordered) - 1, int(0.975 * len(ordered)))]


def concept_bootstrap_ci(per_concept: dict[str, list[float]], n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% CI of the mean over concepts of each concept's mean: resample concepts, then examples within each."""
    groups = [g for g in per_concept.values() if g]
    if not groups:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    means = []
    for _ in range(n_boot):
        drawn = [groups[rng.randrange(len(groups))] for _ in groups]
        means.append(mean(mean(g[rng.randrange(len(g))] for _ in g) for g in drawn))
    return percentile_ci(means)


def per_instruction(res: dict) -> list[float]:
    """One cell's test scores per instruction, averaged over seeds (their mean is the cell's score); seeds of unequal
    length (not written by compare) are cut to the shortest."""
    seeds = [v for v in res.get("test_scores", {}).values() if v]
    return [mean(v[i] for v in seeds) for i in range(min(map(len, seeds)))] if seeds else []


def paired_difference(results: dict[str, dict], a: str, b: str, n_boot: int = 1000, seed: int = 0) -> dict | None:
    """a minus b on the concepts both ran, paired by test instruction (every method answers the same ones): the mean
    over concepts of the mean per-instruction difference, its 95% CI (bootstrap over concepts, then instructions),
    and on how many concepts a scored higher. A concept where the two answered different numbers of instructions is
    left out (they cannot be paired); None where no concept is left."""
    diffs = {}
    for concept, blob in results.items():
        ra, rb = blob["results"].get(a), blob["results"].get(b)
        if ra is None or rb is None:
            continue
        xa, xb = per_instruction(ra), per_instruction(rb)
        if xa and len(xa) == len(xb):
            diffs[concept] = [u - v for u, v in zip(xa, xb)]
    if not diffs:
        return None
    low, high = concept_bootstrap_ci(diffs, n_boot=n_boot, seed=seed)
    return {
        "a": a,
        "b": b,
        "diff": mean(mean(d) for d in diffs.values()),
        "ci_low": low,
        "ci_high": high,
        "a_higher": sum(1 for d in diffs.values() if mean(d) > 0),
        "concepts": len(diffs),
    }


def paired_ratio(
    results: dict[str, dict], a: str, b: str, field: str = "concept", n_boot: int = 1000, seed: int = 0
) -> dict | None:
    """a's mean over concepts of a row field (default the concept judge's column) divided by b's, on the concepts both
    ran, with a 95% CI from a bootstrap over concepts (paired: both means from the same drawn concepts; draws whose b
    mean is 0 are left out). None where no concept has both."""
    pairs = [
        (float(blob["results"][a]["row"][field]), float(blob["results"][b]["row"][field]))
        for blob in results.values()
        if a in blob["results"] and b in blob["results"]
    ]
    if not pairs:
        return None
    mean_a, mean_b = mean(x for x, _ in pairs), mean(y for _, y in pairs)
    rng = random.Random(seed)
    ratios = []
    for _ in range(n_boot):
        drawn = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        denominator = mean(y for _, y in drawn)
        if denominator:
            ratios.append(mean(x for x, _ in drawn) / denominator)
    low, high = percentile_ci(ratios)
    return {
        "a": a,
        "b": b,
        "field": field,
        "mean_a": mean_a,
        "mean_b": mean_b,
        "ratio": mean_a / mean_b if mean_b else math.nan,
        "ci_low": low,
        "ci_high": high,
        "concepts": len(pairs),
    }


def contrasts(results: dict[str, dict], pairs: list | None = None, rows: list[dict] | None = None) -> list[dict]:
    """The leader (best mean rank) against every other method, then the configured pairs (leaderboard.yaml
    `contrasts`, e.g. the trained peers against one-latent SAE steering: AxBench's question); a pair with a method
    that did not run is left out. Each CI is 95% on its own, and the leader is picked on the same data: several
    comparisons, so one CI in twenty may exclude 0 by chance. `rows` = overall(results) when the caller has it."""
    rows = overall(results) if rows is None else rows
    if not rows:
        return []
    leader = rows[0]["method"]
    wanted = [(leader, r["method"]) for r in rows[1:]] + [tuple(p) for p in (pairs or [])]
    out = []
    for a, b in dict.fromkeys(wanted):
        got = paired_difference(results, a, b)
        if got is not None:
            out.append(got)
    return out


def overall(results: dict[str, dict]) -> list[dict]:
    table = per_concept_scores(results)
    rank = ranks(table)
    n_concepts = len(results)
    rows = []
    for method, scores in table.items():
        examples = {
            c: [x for xs in results[c]["results"][method].get("test_scores", {}).values() for x in xs] for c in scores
        }
        low, high = concept_bootstrap_ci(examples)
        rows.append(
            {
                "method": method,
                "mean_score": mean(scores.values()),
                "ci_low": low,
                "ci_high": high,
                "mean_rank": mean(rank[method].values()),
                "wins": sum(1 for r in rank[method].values() if r == 1),
                "concepts": len(scores),
                "complete": len(scores) == n_concepts,
                "edges": sum(1 for c in scores if results[c]["results"][method]["row"].get("on_edge")),
            }
        )
    return sorted(rows, key=lambda r: (r["mean_rank"], -r["mean_score"]))


def family_of(concept: str, blob: dict) -> str:
    """The concept's family (concept.yaml `family`), "other" where its folder is gone or names none."""
    from saebasis.data import concept_family

    try:
        return concept_family((blob.get("config") or {}).get("data") or concept)
    except (FileNotFoundError, ValueError):
        return "other"


def families(results: dict[str, dict]) -> dict[str, dict]:
    """{family: {"concepts": [...], "scores": {method: mean test score over the family's concepts it ran on}}}, the
    families in first-seen order."""
    out: dict[str, dict] = {}
    table = per_concept_scores(results)
    for concept, blob in results.items():
        out.setdefault(family_of(concept, blob), {"concepts": [], "scores": {}})["concepts"].append(concept)
    for fam in out.values():
        for method, row in table.items():
            got = [row[c] for c in fam["concepts"] if c in row]
            if got:
                fam["scores"][method] = mean(got)
    return out


COST_FIELDS = ("concept", "instruction", "fluency", "kl_neutral", "latent_l0", "params", "capability_kept")


def costs(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """{method: {field: mean over concepts}} of what a method's score is made of and what it changes: the three judges,
    KL to the base model on neutral prompts, SAE latents changed per token, trainable parameters (a field a method
    lacks on every concept -- prompting's KL -- is left out)."""
    out: dict[str, dict[str, float]] = {}
    for blob in results.values():
        for method, res in blob["results"].items():
            for field in COST_FIELDS:
                value = res["row"].get(field)
                if field == "latent_l0" and "kl_neutral" in res["row"] and res["row"]["kl_neutral"] is None:
                    continue  # a change made by the prompt (no KL at the hook): no latents changed at the hook either
                if isinstance(value, (int, float)) and value == value:
                    out.setdefault(method, {}).setdefault(field, []).append(float(value))
    return {m: {f: mean(v) for f, v in fields.items()} for m, fields in out.items()}


def timings(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """{method: {"make_s": mean over concepts of one seed's train / fit wall time (compare's fit_time_s), "cell_s":
    mean over concepts of the cell's wall time (every seed made, strength search, test, judges, KL, capability),
    "concepts": how many}}: what a method costs to run, on the machine the board ran on."""
    per: dict[str, dict[str, list[float]]] = {}
    for blob in results.values():
        for method, res in blob["results"].items():
            got = per.setdefault(method, {"make_s": [], "cell_s": []})
            for field, value in (("make_s", res["row"].get("fit_time_s")), ("cell_s", res.get("eval_time_s"))):
                if isinstance(value, (int, float)) and value == value:
                    got[field].append(float(value))
    return {
        m: {**{f: mean(v) for f, v in fields.items() if v}, "concepts": max(map(len, fields.values()))}
        for m, fields in per.items()
        if any(fields.values())
    }


def capability(results: dict[str, dict], n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """{method: {"kept": mean over concepts of capability kept (steered / unsteered accuracy on the capability items,
    compare's `capability`), "ci_low", "ci_high": 95% bootstrap over concepts, "concepts": how many}} for the methods
    measured."""
    per: dict[str, list[float]] = {}
    for blob in results.values():
        for method, res in blob["results"].items():
            value = res["row"].get("capability_kept")
            if isinstance(value, (int, float)) and value == value:
                per.setdefault(method, []).append(float(value))
    out = {}
    for method, values in per.items():
        low, high = concept_bootstrap_ci({str(i): [v] for i, v in enumerate(values)}, n_boot, seed)
        out[method] = {"kept": mean(values), "ci_low": low, "ci_high": high, "concepts": len(values)}
    return out


def ab_matching(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """{concept: {method: A/B matching probability on test items, at the strength the board chose}} for concepts with
    A/B items (compare's `ab_matching`): the behaviour measured directly, beside the free-text score."""
    out: dict[str, dict[str, float]] = {}
    for concept, blob in results.items():
        for method, res in blob["results"].items():
            value = res["row"].get("ab_matching")
            if isinstance(value, (int, float)) and value == value:
                out.setdefault(concept, {})[method] = float(value)
    return out


def judge_notes(results: dict[str, dict]) -> list[str]:
    """Per concept with a second judge: the two judges' Spearman (median over methods) and a flag when they crown
    different winners."""
    from saebasis.judges import winner_disagreement

    notes = []
    for concept, blob in results.items():
        rows = [r["row"] for r in blob["results"].values()]
        rhos = [r["judge_rho"] for r in rows if r.get("judge_rho") is not None and r["judge_rho"] == r["judge_rho"]]
        if not rhos:
            continue
        a = {r["method"]: r["score"] for r in rows if "score2" in r}
        b = {r["method"]: r["score2"] for r in rows if "score2" in r}
        flag = " **the two judges disagree on the winner**" if winner_disagreement(a, b) else " (same winner)"
        notes.append(
            f"- {concept}: judge agreement, Spearman over responses (median over methods) "
            f"{sorted(rhos)[len(rhos) // 2]:.2f}{flag}"
        )
    return notes


def tradeoff_points(results: dict[str, dict], rows: list[dict] | None = None) -> list[dict]:
    """Per method: mean test score, SAE latents changed per token, KL on neutral prompts and capability kept (means
    over concepts, at the chosen strength; None where a method has none): what steering trades against score."""
    cost = costs(results)
    return [
        {
            "method": r["method"],
            "score": r["mean_score"],
            "latents": cost.get(r["method"], {}).get("latent_l0"),
            "kl": cost.get(r["method"], {}).get("kl_neutral"),
            "capability": cost.get(r["method"], {}).get("capability_kept"),
        }
        for r in (overall(results) if rows is None else rows)
    ]


def board_agreement(a: dict, b: dict) -> dict:
    """How far two published boards (leaderboard.json: the same methods and concepts run twice, e.g. in fp32 and
    in bf16) agree, on the methods and concepts both have (mean scores and ranks recomputed on those only): Spearman's
    rho of the methods' mean scores and of their mean ranks; per concept the rho of the methods' scores and whether
    the same method wins (tied winners count as the same when the two winner sets meet); per method both mean
    scores, mean ranks and places (ordered by mean rank, then mean score, as the overall table)."""
    from saebasis.judges.agreement import judge_agreement

    methods = [m for m in a["per_concept"] if m in b["per_concept"]]
    if len(methods) < 2:
        raise ValueError(f"the two boards share {len(methods)} method(s) ({methods}); agreement needs at least 2.")
    concepts = [
        c
        for c in a["per_concept"][methods[0]]
        if all(c in board["per_concept"][m] for board in (a, b) for m in methods)
    ]
    if not concepts:
        raise ValueError("the two boards share no concept that every shared method ran.")
    tables = [{m: {c: board["per_concept"][m][c] for c in concepts} for m in methods} for board in (a, b)]
    summary = []
    for table in tables:
        rank = ranks(table)
        mean_score = {m: mean(table[m].values()) for m in methods}
        mean_rank = {m: mean(rank[m].values()) for m in methods}
        order = sorted(methods, key=lambda m: (mean_rank[m], -mean_score[m]))
        summary.append((mean_score, mean_rank, {m: i + 1 for i, m in enumerate(order)}))
    (score_a, rank_a, place_a), (score_b, rank_b, place_b) = summary
    per_concept = {}
    for c in concepts:
        sa, sb = ({m: t[m][c] for m in methods} for t in tables)
        wa, wb = ({m for m, s in s_.items() if s == max(s_.values())} for s_ in (sa, sb))
        per_concept[c] = {
            "rho": judge_agreement([sa[m] for m in methods], [sb[m] for m in methods]),
            "winner_a": sorted(wa),
            "winner_b": sorted(wb),
            "same_winner": bool(wa & wb),
        }
    return {
        "methods": [
            {
                "method": m,
                "score_a": score_a[m],
                "score_b": score_b[m],
                "rank_a": rank_a[m],
                "rank_b": rank_b[m],
                "place_a": place_a[m],
                "place_b": place_b[m],
            }
            for m in sorted(methods, key=place_a.get)
        ],
        "n_concepts": len(concepts),
        "rho_scores": judge_agreement([score_a[m] for m in methods], [score_b[m] for m in methods]),
        "rho_ranks": judge_agreement([rank_a[m] for m in methods], [rank_b[m] for m in methods]),
        "concepts": per_concept,
        "same_winners": sum(v["same_winner"] for v in per_concept.values()),
        "median_concept_rho": sorted(v["rho"] for v in per_concept.values())[len(per_concept) // 2],
    }


def resolved(diff: dict) -> bool:
    """A paired difference whose 95% CI excludes 0."""
    return diff["ci_low"] > 0 or diff["ci_high"] < 0


def contrast_agreement(a: dict[str, dict], b: dict[str, dict], pairs) -> list[dict]:
    """Each ordering (x, y) measured on two boards' raw results ({concept: a compare's results.json}, e.g. the same
    board in fp32 and in bf16), on the concepts both ran, in a's concept order (the order the pages bootstrapped in):
    x minus y on each board (`paired_difference`) and whether it is resolved there. Says which orderings survive the
    change between the boards and which only one board resolves. A pair given both ways is measured once (as first
    given); pairs a board lacks a method of are left out."""
    shared = [c for c in a if c in b]
    if not shared:
        raise ValueError("the two boards share no concept.")
    rows, seen = [], set()
    for x, y in pairs:
        if frozenset((x, y)) in seen:
            continue
        seen.add(frozenset((x, y)))
        da = paired_difference({c: a[c] for c in shared}, x, y)
        db = paired_difference({c: b[c] for c in shared}, x, y)
        if da is None or db is None:
            continue
        where = {
            (True, True): "both" if (da["diff"] > 0) == (db["diff"] > 0) else "both, opposite signs",
            (True, False): "a only",
            (False, True): "b only",
            (False, False): "neither",
        }[(resolved(da), resolved(db))]
        rows.append({"a": x, "b": y, "in_a": da, "in_b": db, "resolved": where})
    return rows
