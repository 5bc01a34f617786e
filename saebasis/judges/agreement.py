"""Agreement between two judges of the same concept (e.g. VADER and TextBlob for sentiment).

- judge_agreement: Spearman's rho over responses = Pearson correlation of the two score lists' ranks, ties
  given their average rank; NaN when either list is constant (no ranking to agree on) or shorter than 2.
- winner_disagreement: True when the two judges crown different winners among methods, i.e. the sets of
  methods tied at the top under each judge do not intersect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span ([5, 1, 5] -> [2.5, 1, 2.5])."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va, vb = sum((x - ma) ** 2 for x in a), sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else float("nan")


def judge_agreement(scores_a: Sequence[float], scores_b: Sequence[float]) -> float:
    """Spearman's rho between two judges' scores of the same responses (average ranks for ties)."""
    if len(scores_a) != len(scores_b):
        raise ValueError(
            f"judge_agreement needs one score per response from each judge, got {len(scores_a)} and {len(scores_b)}."
        )
    if len(scores_a) < 2:
        return float("nan")
    return pearson(average_ranks(scores_a), average_ranks(scores_b))


def winners(per_method: Mapping[str, float]) -> set[str]:
    """Methods tied at the top score (NaN scores never win)."""
    finite = {m: s for m, s in per_method.items() if s == s}
    best = max(finite.values(), default=None)
    return {m for m, s in finite.items() if s == best}


def winner_disagreement(per_method_a: Mapping[str, float], per_method_b: Mapping[str, float]) -> bool:
    """True when no method is a winner under both judges (method -> score under judge a / judge b)."""
    a, b = winners(per_method_a), winners(per_method_b)
    return bool(a and b) and not (a & b)
