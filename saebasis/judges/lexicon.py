"""Text-only judges (no model): sentiment lexicons, brevity, formality. Each returns scores in [0, 1].

- vader / vader_negative: max(0, c) / max(0, -c) with c = VADER's compound score in [-1, 1] (the
  vaderSentiment package ships its lexicon: ~7.5k crowd-rated tokens plus rules for negation, boosters,
  capitals and punctuation).
- textblob / textblob_negative: max(0, p) / max(0, -p) with p = TextBlob's PatternAnalyzer polarity in
  [-1, 1]: the mean polarity of the adjectives/adverbs found in pattern's `en-sentiment.xml` lexicon (~2.9k
  hand-annotated words, De Smedt & Daelemans 2012; shipped inside the textblob wheel, no corpus download),
  with negation and intensifier handling. A different lexicon built by different annotators with different
  rules, so it is the second, independent sentiment judge (it agrees with VADER on clear cases and not on
  borderline ones; `agreement.judge_agreement` reports how much).
- brevity: b = clip((30 - n) / (30 - 10), 0, 1), n = whitespace-separated words: 1 at <= 10 words, 0.5 at
  20, 0 at >= 30; an empty response scores 0 (no answer is not a short answer). 30 words is about where
  compare's default max_new_tokens=40 cuts a reply off, so a truncated reply scores ~0.
- formality: (F + 1) / (F + I + 2), a Laplace-smoothed share of formal among register markers:
  F = formal markers (FORMAL_WORDS, FORMAL_PHRASES, and any other word of >= 11 letters),
  I = informal markers (contractions, INFORMAL_WORDS, INFORMAL_PHRASES, each run of "!", emoticons/emoji).
  Text with no markers scores exactly 0.5; "Hey guys! I'm gonna grab pizza lol" ~0.1; a business letter ~0.9.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from saebasis.judges.registry import register_judge

BREVITY_FULL, BREVITY_ZERO = 10, 30


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_compound(texts: Sequence[str]) -> list[float]:
    """VADER compound score in [-1, 1] per text."""
    return [_vader().polarity_scores(t)["compound"] for t in texts]


def textblob_polarity(texts: Sequence[str]) -> list[float]:
    """TextBlob PatternAnalyzer polarity in [-1, 1] per text (pattern's shipped lexicon; no NLTK corpora)."""
    from textblob import TextBlob

    return [float(TextBlob(t).sentiment.polarity) for t in texts]


@register_judge("vader")
def sentiment_scores(texts: Sequence[str]) -> list[float]:
    """max(0, VADER compound): 0 for neutral or negative text, near 1 for strongly positive text."""
    return [max(0.0, c) for c in vader_compound(texts)]


@register_judge("vader_negative")
def vader_negative(texts: Sequence[str]) -> list[float]:
    """max(0, -VADER compound): 0 for neutral or positive text, near 1 for strongly negative text."""
    return [max(0.0, -c) for c in vader_compound(texts)]


@register_judge("textblob")
def textblob_positive(texts: Sequence[str]) -> list[float]:
    """max(0, TextBlob polarity): pattern's adjective lexicon, independent of VADER's."""
    return [max(0.0, p) for p in textblob_polarity(texts)]


@register_judge("textblob_negative")
def textblob_negative(texts: Sequence[str]) -> list[float]:
    """max(0, -TextBlob polarity): pattern's adjective lexicon, independent of VADER's."""
    return [max(0.0, -p) for p in textblob_polarity(texts)]


@register_judge("brevity")
def brevity_scores(texts: Sequence[str]) -> list[float]:
    """clip((30 - words) / 20, 0, 1): 1 at <= 10 words, 0 at >= 30; empty -> 0."""
    out = []
    for text in texts:
        n = len(text.split())
        out.append(0.0 if n == 0 else min(1.0, max(0.0, (BREVITY_ZERO - n) / (BREVITY_ZERO - BREVITY_FULL))))
    return out


FORMAL_WORDS = frozenset(
    [
        "furthermore",
        "moreover",
        "however",
        "therefore",
        "thus",
        "hence",
        "consequently",
        "accordingly",
        "nevertheless",
        "nonetheless",
        "whereas",
        "whereby",
        "hereby",
        "herein",
        "thereby",
        "therein",
        "additionally",
        "subsequently",
        "notwithstanding",
        "regarding",
        "concerning",
        "pursuant",
        "respectively",
        "namely",
        "sincerely",
        "respectfully",
        "kindly",
        "regret",
        "inform",
        "request",
        "require",
        "ensure",
        "provide",
        "assistance",
        "obtain",
        "purchase",
        "commence",
        "endeavour",
        "endeavor",
        "facilitate",
        "approximately",
        "individuals",
        "utilize",
        "sufficient",
        "prior",
        "shall",
        "whom",
        "dear",
        "madam",
        "sir",
    ]
)
FORMAL_PHRASES = (
    "in accordance with",
    "with regard to",
    "with respect to",
    "in order to",
    "we would like to",
    "i am writing to",
    "please find",
    "as well as",
    "on behalf of",
    "should you",
)
INFORMAL_WORDS = frozenset(
    [
        "hey",
        "hi",
        "yeah",
        "yep",
        "yup",
        "nope",
        "nah",
        "wow",
        "oh",
        "ooh",
        "ugh",
        "oops",
        "hmm",
        "haha",
        "hahaha",
        "lol",
        "omg",
        "btw",
        "gonna",
        "wanna",
        "gotta",
        "kinda",
        "sorta",
        "dunno",
        "ya",
        "dude",
        "guys",
        "buddy",
        "cool",
        "awesome",
        "super",
        "totally",
        "stuff",
        "okay",
        "ok",
        "yay",
        "woohoo",
        "cheers",
        "folks",
        "chill",
        "crazy",
        "literally",
        "basically",
        "gosh",
        "damn",
        "heck",
        "huh",
        "um",
        "uh",
    ]
)
INFORMAL_PHRASES = ("you know", "i mean", "kind of", "sort of", "a lot", "no way", "by the way", "so much", "i guess")
CONTRACTION = re.compile(
    r"\b\w+n't\b|\b\w+'(?:m|re|ll|ve|d)\b|\b(?:it|that|there|here|what|who|where|how|he|she|let)'s\b"
)
EMOTICON = re.compile(r"[:;]-?[()dp]|[\U0001F300-\U0001FAFF\u2600-\u27BF]")
WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
LONG_WORD = 11


def _count_phrases(text: str, phrases: Sequence[str]) -> int:
    return sum(len(re.findall(r"\b" + re.escape(p) + r"\b", text)) for p in phrases)


def register_markers(text: str) -> tuple[int, int]:
    """(F, I): counts of formal and informal markers in `text` (see the module docstring)."""
    text = text.lower().replace("\u2019", "'")
    words = WORD.findall(text)
    formal = sum(w in FORMAL_WORDS or len(w) >= LONG_WORD for w in words) + _count_phrases(text, FORMAL_PHRASES)
    informal = (
        len(CONTRACTION.findall(text))
        + sum(w in INFORMAL_WORDS for w in words)
        + _count_phrases(text, INFORMAL_PHRASES)
        + len(re.findall(r"!+", text))
        + len(EMOTICON.findall(text))
    )
    return formal, informal


@register_judge("formality")
def formality_scores(texts: Sequence[str]) -> list[float]:
    """(F + 1) / (F + I + 2): smoothed share of formal among formal (F) and informal (I) register markers."""
    out = []
    for text in texts:
        formal, informal = register_markers(text)
        out.append((formal + 1) / (formal + informal + 2))
    return out
