"""Offline judges, each scoring a response in [0, 1] (AxBench-style, no API calls), behind one registry.

    from saebasis.judges import JUDGES, score
    score("vader", responses)                                   # concept judges name what they need
    score("minilm", responses, description="the ocean")
    score("fluency", responses, instructions=prompts, model=model, tokenizer=tokenizer)

Registered (name: formula; module):
  vader               max(0, VADER compound)                                          lexicon.py
  vader_negative      max(0, -VADER compound)                                         lexicon.py
  textblob            max(0, TextBlob pattern polarity)  (second, independent lexicon) lexicon.py
  textblob_negative   max(0, -TextBlob pattern polarity)                              lexicon.py
  brevity             clip((30 - words) / 20, 0, 1): 1 at <= 10 words, 0 at >= 30     lexicon.py
  formality           (F + 1) / (F + I + 2), F / I = formal / informal marker counts   lexicon.py
  minilm              clip(cos(MiniLM(response), MiniLM(description)), 0, 1)          embedding.py
  ab                  on free text as minilm; A/B probability: eval.metrics.ab_matching_prob
  instruction         clip(cos(MiniLM(response), MiniLM(instruction)), 0, 1)  (quality) embedding.py
  fluency             f_ppl * min(1, distinct2 / 0.9) ** 2                    (quality) fluency.py
                      f_ppl = clip((ln 1000 - ln ppl) / (ln 1000 - ln 2), 0, 1), ppl under the unsteered model
Per-example score (eval.metrics.harmonic_mean): harmonic mean of concept, instruction and fluency, 0 if any is 0.
Two judges of one concept are compared by agreement.judge_agreement (Spearman over responses) and
agreement.winner_disagreement (do they crown different methods).
Add a judge: write one function in a module here, decorate it with @register_judge(name, needs=(...)).
This package imports nothing from saebasis.data / eval / train / interpret (they import it).
"""

from __future__ import annotations

from collections.abc import Sequence

from saebasis.judges import agreement, embedding, fluency, lexicon  # noqa: F401  (registers the judges)
from saebasis.judges.agreement import judge_agreement, winner_disagreement
from saebasis.judges.embedding import embed, minilm_dir, similarity_scores
from saebasis.judges.fluency import (
    PPL_BEST,
    PPL_WORST,
    PromptReuse,
    distinct_n,
    fluency_from_ppl,
    fluency_scores,
    perplexities,
    repetition_factor,
)
from saebasis.judges.lexicon import (
    brevity_scores,
    formality_scores,
    sentiment_scores,
    textblob_polarity,
    vader_compound,
)
from saebasis.judges.registry import JUDGES, NEEDS, Judge, get_judge, judge_names, register_judge, score

__all__ = [
    "JUDGES",
    "NEEDS",
    "PPL_BEST",
    "PPL_WORST",
    "Judge",
    "PromptReuse",
    "brevity_scores",
    "concept_scores",
    "distinct_n",
    "embed",
    "fluency_from_ppl",
    "fluency_scores",
    "formality_scores",
    "get_judge",
    "judge_agreement",
    "judge_names",
    "minilm_dir",
    "perplexities",
    "register_judge",
    "repetition_factor",
    "score",
    "sentiment_scores",
    "similarity_scores",
    "textblob_polarity",
    "vader_compound",
    "winner_disagreement",
]


def concept_scores(judge: str, texts: Sequence[str], description: str) -> list[float]:
    """Scores of a concept judge (by name) on `texts`; `description` is passed to judges that need it."""
    if get_judge(judge).role != "concept":
        raise ValueError(
            f"'{judge}' is a quality judge, not a concept judge; concept judges: {judge_names('concept')}."
        )
    return score(judge, texts, description=description)
