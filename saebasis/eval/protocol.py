"""The evaluation protocol: search strength on validation, choose it, report test with confidence intervals.

For each method and each seed, every strength in the method's start grid is scored on the validation
instructions (or, with select_by=ab, on the validation A/B items). The chosen strength maximises the
validation metric averaged over seeds (ties -> the smallest |strength|, i.e. the gentler intervention).
The search is fair to every method (search_strength): while the chosen strength is the largest (smallest)
of those evaluated and strictly beats all others, the grid is extended outward by one step, s * factor
(s / factor), until the optimum is interior, or a cap stops it (max_steps per side, |s| <= cap,
|s| >= min_strength); a choice still on an
edge then is flagged (Selection.on_edge). The start grid is only the starting point.
At that one strength the method is scored on the test instructions; the reported number is the mean
over seeds and examples with a 95% percentile-bootstrap CI that resamples examples (one seed) or seeds
and then examples within each drawn seed (several seeds), so seed-to-seed variance widens the interval.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from statistics import mean
from typing import NamedTuple, Union


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over examples."""
    return hierarchical_bootstrap_ci([list(values)], n_boot, alpha, seed)


def hierarchical_bootstrap_ci(
    groups: Sequence[Sequence[float]], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the grand mean: draw groups (seeds) with replacement, then values
    (examples) within each drawn group. With one group this is the ordinary bootstrap over examples."""
    groups = [list(g) for g in groups if len(g)]
    if not groups:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    means = []
    for _ in range(n_boot):
        drawn = [groups[rng.randrange(len(groups))] for _ in groups] if len(groups) > 1 else groups
        sample = [g[rng.randrange(len(g))] for g in drawn for _ in g]
        means.append(sum(sample) / len(sample))
    means.sort()
    return means[int(alpha / 2 * n_boot)], means[min(n_boot - 1, int((1 - alpha / 2) * n_boot))]


def choose_strength(val_scores: Mapping[float, float]) -> float:
    """The strength with the best mean validation score (ties -> the smallest |strength|)."""
    if not val_scores:
        raise ValueError("No validation scores to choose a strength from; give a non-empty strength grid.")
    return max(val_scores, key=lambda s: (val_scores[s], -abs(s)))


class Selection(NamedTuple):
    strength: float
    curve: dict[float, float]
    """strength -> validation metric, averaged over examples then seeds."""
    on_edge: bool = False
    """The chosen strength is an edge of the evaluated grid and a cap stopped the search from going past it."""


def select_strength(val: Mapping[int, Mapping[float, Sequence[float]]]) -> Selection:
    """`val[seed][strength]` holds per-example validation values; choose on their mean over seeds."""
    if not val:
        raise ValueError("No validation results: give at least one seed.")
    strengths = list(next(iter(val.values())))
    for seed, per_strength in val.items():
        if list(per_strength) != strengths:
            raise ValueError(
                f"seed {seed} was swept over {list(per_strength)}, others over {strengths}: sweep every seed alike."
            )
    curve = {s: mean(mean(val[seed][s]) for seed in val) for s in strengths}
    return Selection(choose_strength(curve), curve)


Scores = Union[float, Sequence[float], Mapping[int, Sequence[float]]]
"""What score_at returns for one strength: one number, per-example values, or {seed: per-example values}."""


def _per_seed(scores: Scores) -> dict[int, list[float]]:
    if isinstance(scores, Mapping):
        return {int(k): list(v) for k, v in scores.items()}
    return {0: [float(scores)] if isinstance(scores, (int, float)) else list(scores)}


def _outward(s: float, up: bool, factor: float) -> float | None:
    """The next strength past edge s: away from the grid (x factor when |s| grows, / factor when it shrinks).
    None at s = 0 (no steering: a hard boundary, never extended past)."""
    if s == 0:
        return None
    grows = (s > 0) == up  # above a positive edge, or below a negative one
    return s * factor if grows else s / factor


def search_strength(
    score_at: Callable[[float], Scores],
    start_grid: Sequence[float],
    factor: float = 2.0,
    max_steps: int = 4,
    cap: float = 64.0,
    min_strength: float = 1 / 64,
) -> Selection:
    """Evaluate `start_grid`; while the chosen strength (select_strength's rule) is the top (bottom) of the
    evaluated grid and strictly better than every other strength evaluated, evaluate one step further out,
    s * factor above / s / factor below (for positive s), at most `max_steps` per side and only within
    min_strength <= |s| <= cap. on_edge: the choice is still such an edge and a cap, not the curve, stopped the
    search. Not extended (and not flagged): an edge tied with an interior strength (a plateau that already reaches
    inside; ties -> the smallest |strength|), and 0 (no steering: a natural end).
    A peak inside the start grid costs no extra evaluation. score_at(s) returns {seed: per-example values} (or
    one seed's values, or one number); the curve averages examples, then seeds."""
    if not start_grid:
        raise ValueError("No validation scores to choose a strength from; give a non-empty strength grid.")
    if factor <= 1:
        raise ValueError(f"factor must be > 1 (each step multiplies or divides the edge strength by it), got {factor}.")
    val: dict[float, dict[int, list[float]]] = {
        float(s): _per_seed(score_at(float(s))) for s in dict.fromkeys(start_grid)
    }
    steps = {True: 0, False: 0}
    while True:
        chosen = select_strength(_by_seed(val))
        blocked = []
        for up in (True, False):
            edge = max(val) if up else min(val)
            if chosen.strength != edge or not _strictly_best(chosen.curve, edge):
                continue
            nxt = _outward(edge, up, factor)
            if nxt is None:
                continue
            if steps[up] >= max_steps or not (min_strength <= abs(nxt) <= cap):
                blocked.append(up)
                continue
            steps[up] += 1
            val[nxt] = _per_seed(score_at(nxt))
            break
        else:
            return Selection(chosen.strength, dict(sorted(chosen.curve.items())), bool(blocked))


def _strictly_best(curve: Mapping[float, float], s: float) -> bool:
    """s beats every other evaluated strength (a tie means the optimum already reaches an interior point)."""
    return all(curve[s] > v for t, v in curve.items() if t != s)


def _by_seed(val: Mapping[float, Mapping[int, Sequence[float]]]) -> dict[int, dict[float, Sequence[float]]]:
    """{strength: {seed: values}} -> {seed: {strength: values}} (select_strength's layout)."""
    seeds = list(next(iter(val.values())))
    return {seed: {s: val[s][seed] for s in val} for seed in seeds}


class Report(NamedTuple):
    mean: float
    ci_low: float
    ci_high: float
    n_examples: int
    n_seeds: int


def report(test: Mapping[int, Sequence[float]], seed: int = 0, n_boot: int = 1000) -> Report:
    """Test score over seeds and examples with its bootstrap CI (`test[seed]` = per-example scores)."""
    groups = [list(v) for v in test.values()]
    values = [x for g in groups for x in g]
    if not values:
        raise ValueError("No test scores to report: the test split is empty (check n_test and instructions.jsonl).")
    lo, hi = hierarchical_bootstrap_ci(groups, n_boot=n_boot, seed=seed)
    return Report(mean(values), lo, hi, len(groups[0]), len(groups))
