"""The evaluation protocol: sweep strength, choose it on validation, report test with confidence intervals.

For each method and each seed, every strength in the method's grid is scored on the validation
instructions (or, with select_by=ab, on the validation A/B items). The chosen strength maximises the
validation metric averaged over seeds (ties -> the smallest |strength|, i.e. the gentler intervention).
At that one strength the method is scored on the test instructions; the reported number is the mean
over seeds and examples with a 95% percentile-bootstrap CI that resamples examples (one seed) or seeds
and then examples within each drawn seed (several seeds), so seed-to-seed variance widens the interval.
"""

from __future__ import annotations

import random
from statistics import mean
from typing import Mapping, NamedTuple, Sequence


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
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


def select_strength(val: Mapping[int, Mapping[float, Sequence[float]]]) -> Selection:
    """`val[seed][strength]` holds per-example validation values; choose on their mean over seeds."""
    if not val:
        raise ValueError("No validation results: give at least one seed.")
    strengths = list(next(iter(val.values())))
    for seed, per_strength in val.items():
        if list(per_strength) != strengths:
            raise ValueError(f"seed {seed} was swept over {list(per_strength)}, others over {strengths}: sweep every seed alike.")
    curve = {s: mean(mean(val[seed][s]) for seed in val) for s in strengths}
    return Selection(choose_strength(curve), curve)


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
