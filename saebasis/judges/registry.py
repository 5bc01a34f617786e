"""The judge registry: name -> Judge (a scorer of responses to [0, 1] plus what it needs to score them).

A judge is one function and one registration:

    @register_judge("vader", needs=())
    def vader(responses): return [max(0.0, c) for c in vader_compound(responses)]

`needs` names the keyword arguments the function takes besides the responses, from NEEDS:
  description   the concept's description (str), e.g. the target of the topic judge
  instructions  the instruction each response answers (list[str], aligned with the responses)
  model, tokenizer  the UNSTEERED language model and its tokenizer (the fluency judge's perplexity)
`role` is "concept" for judges a concept.yaml may name (`judge:` / `second_judge:`), "quality" for the
instruction-relevance and fluency judges every response gets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

NEEDS = ("description", "instructions", "model", "tokenizer")
Role = Literal["concept", "quality"]


class Judge(NamedTuple):
    name: str
    fn: Callable[..., list[float]]
    """fn(responses, **{need: value for need in needs}) -> one score in [0, 1] per response."""
    needs: tuple[str, ...]
    role: Role
    doc: str
    """First line of fn's docstring: the formula, shown in error messages and docs."""


JUDGES: dict[str, Judge] = {}


def register_judge(name: str, needs: Sequence[str] = (), role: Role = "concept") -> Callable:
    """Decorator: register `fn` under `name`, declaring the keyword arguments it needs (from NEEDS)."""
    unknown = [n for n in needs if n not in NEEDS]
    if unknown:
        raise ValueError(
            f"judge '{name}' needs {unknown}, which no caller provides; needs must come from {list(NEEDS)}."
        )

    def wrap(fn: Callable) -> Callable:
        if name in JUDGES:
            raise ValueError(
                f"judge '{name}' is already registered (by {JUDGES[name].fn.__module__}.{JUDGES[name].fn.__name__})."
            )
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        JUDGES[name] = Judge(name, fn, tuple(needs), role, doc)
        return fn

    return wrap


def judge_names(role: Role | None = None) -> list[str]:
    """Registered names (of one role), in registration order."""
    return [name for name, judge in JUDGES.items() if role is None or judge.role == role]


def get_judge(name: str) -> Judge:
    if name not in JUDGES:
        raise ValueError(
            f"Unknown judge '{name}'. Registered judges: {judge_names()} "
            "(concept judges: "
            + ", ".join(judge_names("concept"))
            + "); add one with @register_judge in saebasis/judges/."
        )
    return JUDGES[name]


def score(name: str, responses: Sequence[str], **available) -> list[float]:
    """Score `responses` with judge `name`, passing it the subset of `available` it declared it needs."""
    judge = get_judge(name)
    missing = [n for n in judge.needs if available.get(n) is None]
    if missing:
        raise ValueError(
            f"judge '{name}' needs {list(judge.needs)}; missing {missing}. Pass them as keyword arguments to score()."
        )
    if not responses:
        return []
    return [float(s) for s in judge.fn(list(responses), **{n: available[n] for n in judge.needs})]
