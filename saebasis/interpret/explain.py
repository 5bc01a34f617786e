"""Explanations of a latent: a deterministic one from its token statistics (default), or one written by a
language model from its top contexts (`explainer=<any HF causal LM>`, off by default).

Deterministic (`token_explanation`), built from the per-latent table (table.py), exact format:

    fires on: "tok" Lx (n), ... | after: "tok" Lx (n), ... | promotes: "tok", "tok", "tok"

  fires on   the tokens the latent fires on, by lift: L = round(share among its firing tokens / share among all
             corpus tokens), n = count; only tokens seen >= table.MIN_COUNT times are ranked, so a frequent
             function word the latent fires on no more often than the corpus uses it (L ~ 1) never leads. At
             most `k` (3), and only those with L >= `min_lift` (2) -- but always the first
  after      the same for the token just before each firing token
  promotes   the first `k` logit-lens tokens of W_dec[i] (lens.py)
A table without lift columns (built before they existed) falls back to raw shares: `"tok" P% (n)`, P = round(100 x
count / firing tokens), kept when P >= `min_share` (5%). Tokens are written as JSON strings (quotes, a leading space
kept, a newline as \n). A latent that never fired on the corpus reads `never fires on this corpus | promotes: ...`;
empty parts are left out. `short_explanation` is the chart's label: the first two tokens by lift.

Model-written (`explain`): the explainer is shown the text the latent fires on in each top context (the run of
tokens at >= half the context's peak activation, around the peak) and asked for a short label; greedy decoding,
first sentence kept. Prompt choice, tried on SmolLM2-135M-Instruct: given whole excerpts with [[marked]] words it
copies the excerpts back; given the marked words alone it at least names the group now and then ("used to
indicate comparisons" for than / as / compared to / beyond). It is still a weak explainer, so every explanation is
labelled "automatic explanation (<model>, unreliable)" and the words it saw are kept in the report.
"""

from __future__ import annotations

import json
import re

from saebasis.core.models import EMBEDDED_NAMES
from saebasis.interpret.contexts import Context

EMBEDDED_LABEL = "SmolLM2-135M"
PROMPT = "Words: {words}.\nWhat do these words have in common? Give one short label for this group of words."


def _tok(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _counted(rows: list, k: int, min_share: float) -> str:
    """rows [token, count, share], most frequent first -> '"tok" P% (n), ...' (see the module docstring)."""
    kept = [r for j, r in enumerate(rows[:k]) if j == 0 or r[2] >= min_share]
    return ", ".join(f"{_tok(t)} {round(100 * share)}% ({count})" for t, count, share in kept)


def _lifted(rows: list, k: int, min_lift: float) -> str:
    """rows [token, count, share, lift], highest lift first -> '"tok" Lx (n), ...' (see the module docstring)."""
    kept = [r for j, r in enumerate(rows[:k]) if j == 0 or r[3] >= min_lift]
    return ", ".join(f"{_tok(t)} {round(lift)}x ({count})" for t, count, _, lift in kept)


def _tokens(stats: dict, key: str, k: int, min_share: float, min_lift: float) -> str:
    lifted = stats.get(f"{key}_lift") or []
    return _lifted(lifted, k, min_lift) if lifted else _counted(stats[key], k, min_share)


def token_explanation(stats: dict, k: int = 3, min_share: float = 0.05, min_lift: float = 2.0) -> str:
    """The deterministic explanation of one latent from table.LatentTable.token_stats (format: module docstring)."""
    fired = stats["fires_on"] or stats.get("fires_on_lift")
    fires = f"fires on: {_tokens(stats, 'fires_on', k, min_share, min_lift)}"
    parts = [fires if fired else "never fires on this corpus"]
    if stats["before"] or stats.get("before_lift"):
        parts.append(f"after: {_tokens(stats, 'before', k, min_share, min_lift)}")
    if stats["promotes"]:
        parts.append("promotes: " + ", ".join(_tok(t) for t, _ in stats["promotes"][:k]))
    return " | ".join(parts)


def short_explanation(stats: dict, n: int = 2, max_chars: int = 32) -> str:
    """The first n tokens the latent fires on, by lift (raw share without lift columns), for the chart's labels."""
    rows = stats.get("fires_on_lift") or stats["fires_on"]
    if not rows:
        return "never fires"
    text = ", ".join(_tok(r[0]) for r in rows[:n])
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def label(model_name: str) -> str:
    name = EMBEDDED_LABEL if model_name.lower() in EMBEDDED_NAMES else model_name
    return f"automatic explanation ({name}, unreliable)"


def hot_span(context: Context, threshold: float = 0.5) -> str:
    """The tokens around the peak whose activation is >= threshold x the peak, as one string."""
    peak = max(range(len(context.acts)), key=context.acts.__getitem__)
    hot = [a >= threshold * context.max for a in context.acts]
    lo, hi = peak, peak + 1
    while lo > 0 and hot[lo - 1]:
        lo -= 1
    while hi < len(hot) and hot[hi]:
        hi += 1
    return "".join(context.tokens[lo:hi])


def snippet(context: Context, threshold: float = 0.5, max_chars: int = 160) -> str:
    """The context as text with the tokens at >= threshold x its peak in [[ ]] (runs merged)."""
    parts, inside = [], False
    for text, act in zip(context.tokens, context.acts):
        hot = context.max > 0 and act >= threshold * context.max
        if hot != inside:
            parts.append("[[" if hot else "]]")
        parts.append(text)
        inside = hot
    return " ".join("".join(parts + (["]]"] if inside else [])).split())[-max_chars:]


def evidence(contexts: list[Context], n: int = 8) -> list[str]:
    """Distinct hot spans of the top contexts (whitespace made visible), strongest first."""
    words: list[str] = []
    for c in contexts:
        span = hot_span(c)
        shown = span.strip() or span.replace("\n", "\\n").replace(" ", "␣")
        if shown and shown not in words:
            words.append(shown)
    return words[:n]


def explain(model, tokenizer, contexts: list[Context], max_new_tokens: int = 24) -> tuple[str | None, list[str]]:
    """(one sentence from the explainer model, the words it was shown); (None, []) when the latent never fired."""
    from saebasis.core.generation import generate

    words = evidence(contexts)
    if not words:
        return None, []
    prompt = PROMPT.format(words=", ".join(f'"{w}"' for w in words))
    out, _ = generate(model, tokenizer, [prompt], max_new_tokens=max_new_tokens, batch_size=1)
    text = " ".join(out[0].split())
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return first, words
