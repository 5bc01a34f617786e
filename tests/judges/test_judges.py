"""Every judge on hand-written examples with known answers; the registry; judge agreement."""

import math
import subprocess
import sys

import pytest
import torch

from saebasis import judges
from saebasis.judges import (
    JUDGES,
    brevity_scores,
    distinct_n,
    fluency_from_ppl,
    formality_scores,
    judge_agreement,
    perplexities,
    register_judge,
    repetition_factor,
    score,
    winner_disagreement,
)
from saebasis.judges.agreement import average_ranks
from saebasis.judges.fluency import fluency
from saebasis.judges.lexicon import register_markers

FLUENT = "The weather was warm, so we walked to the park and had lunch under a tree."
LOOP_MAN = "a man who is a man who is a man who is a man"
LOOP_FAMILY = "Your family, your culture, your family, your culture, your family"
SHUFFLED = "tree lunch warm park the had, walked so we under and a to weather was The the."
CASUAL = "Hey guys! I'm gonna grab some pizza lol, it's super cool!"
FORMAL = "Furthermore, we regret to inform you that your application has been declined."


# -- registry -------------------------------------------------------------------------------------
def test_registry_holds_every_judge_the_concepts_name():
    concept = {"vader", "vader_negative", "textblob", "textblob_negative", "minilm", "ab", "brevity", "formality"}
    assert set(judges.judge_names("concept")) == concept
    assert set(judges.judge_names("quality")) == {"instruction", "fluency"}
    assert JUDGES["minilm"].needs == ("description",) and JUDGES["vader"].needs == ()
    assert JUDGES["fluency"].needs == ("instructions", "model", "tokenizer")


def test_registry_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"Unknown judge 'gpt4'\. Registered judges: \[.*'vader'.*\]"):
        score("gpt4", ["x"])
    with pytest.raises(ValueError, match=r"judge 'minilm' needs \['description'\]; missing \['description'\]"):
        score("minilm", ["x"])
    with pytest.raises(ValueError, match=r"needs must come from"):
        register_judge("x", needs=("gpu",))
    with pytest.raises(ValueError, match=r"judge 'vader' is already registered"):
        register_judge("vader")(lambda texts: [0.0] * len(texts))
    with pytest.raises(ValueError, match=r"'fluency' is a quality judge"):
        judges.concept_scores("fluency", ["x"], "d")
    assert score("vader", []) == []


def test_a_judge_is_one_function_and_one_registration():
    @register_judge("_test_length", needs=("description",))
    def length(texts, description):
        """len(text) / len(description), clipped to 1."""
        return [min(1.0, len(t) / len(description)) for t in texts]

    try:
        assert score("_test_length", ["ab", "abcdef"], description="abcd", instructions=["unused"] * 2) == [0.5, 1.0]
        assert JUDGES["_test_length"].doc == "len(text) / len(description), clipped to 1."
    finally:
        del JUDGES["_test_length"]


def test_judges_module_imports_no_data_eval_train_or_interpret():
    code = (
        "import sys, saebasis.judges; print(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['saebasis', 'data'], ['saebasis', 'eval'], ['saebasis', 'train'], ['saebasis', 'interpret'])))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


# -- sentiment: two independent lexicons ----------------------------------------------------------
def test_sentiment_judges_on_clear_cases():
    texts = ["What a wonderful, happy, lovely day!", "This is awful, horrible and sad.", "The meeting is at noon."]
    for pos, neg in (("vader", "vader_negative"), ("textblob", "textblob_negative")):
        p, n = score(pos, texts), score(neg, texts)
        assert p[0] > 0.5 and p[1] == 0.0 and p[2] == 0.0, pos
        assert n[0] == 0.0 and n[1] > 0.5 and n[2] == 0.0, neg
    assert score("textblob", ["What a wonderful, happy, lovely day!"]) == pytest.approx(
        [0.8083333]
    )  # mean of 3 adjectives, x1 "!"


# -- embedding judges: topic (minilm, ab on free text) and instruction relevance ---------------------------
def test_embedding_judges_order_clear_cases():
    texts = ["The sea waves crash on the sandy beach.", "Tax forms are due in April."]
    on, off = score("minilm", texts, description="the ocean")
    assert 0.3 <= on <= 1.0 and 0.0 <= off < on - 0.2
    assert score("ab", texts, description="the ocean") == [on, off]  # A/B concepts: the same text judge
    relevant, irrelevant = score(
        "instruction",
        ["Boil the pasta for ten minutes, then drain it.", "The moon orbits the earth."],
        instructions=["How do I cook pasta?"] * 2,
    )
    assert relevant > irrelevant + 0.2


# -- brevity, formality -----------------------------------------------------------------------------
def test_brevity_is_linear_between_10_and_30_words():
    texts = [
        "",
        "Yes.",
        " ".join(["w"] * 10),
        " ".join(["w"] * 20),
        " ".join(["w"] * 25),
        " ".join(["w"] * 30),
        " ".join(["w"] * 80),
    ]
    assert brevity_scores(texts) == [0.0, 1.0, 1.0, 0.5, 0.25, 0.0, 0.0]


def test_formality_separates_formal_from_casual_text():
    # CASUAL: hey, guys, gonna, lol, super, cool (6 words) + I'm, it's (2 contractions) + 2 runs of "!" -> I = 10, F = 0
    assert register_markers(CASUAL) == (0, 10)
    # FORMAL: furthermore, regret, inform (lexicon) + application (>= 11 letters) -> F = 4, I = 0
    assert register_markers(FORMAL) == (4, 0)
    neutral = "The meeting is at noon."
    assert formality_scores([CASUAL, FORMAL, neutral]) == pytest.approx([1 / 12, 5 / 6, 0.5])
    formal = [
        "Dear Sir or Madam, I am writing to request further information regarding the position advertised on your "
        "website. I would be grateful if you could provide details of the application procedure.",
        "Thank you for your message. The report will be available on Monday; please let me know if you require any "
        "further assistance.",
    ]
    casual = [
        "omg yeah that movie was awesome, you know? we totally loved it :)",
        "lol no way, that's crazy! can't wait to see ya",
    ]
    assert min(formality_scores(formal)) >= 0.75 and max(formality_scores(casual)) <= 0.15


# -- fluency: perplexity x repetition ---------------------------------------------------------------
def test_repetition_factor_exact_on_loops():
    assert distinct_n(LOOP_MAN) == pytest.approx(4 / 13)  # 14 words, 13 bigrams, 4 distinct
    assert distinct_n(LOOP_FAMILY) == pytest.approx(4 / 9)  # punctuation and case dropped
    assert repetition_factor(LOOP_MAN) == pytest.approx((4 / 13 / 0.9) ** 2)  # 0.117
    assert repetition_factor(LOOP_FAMILY) == pytest.approx((4 / 9 / 0.9) ** 2)  # 0.244
    assert repetition_factor(FLUENT) == 1.0 and repetition_factor(SHUFFLED) == 1.0 and repetition_factor("Yes.") == 1.0
    assert repetition_factor(" ".join(["the"] * 12)) == pytest.approx((1 / 11 / 0.9) ** 2)


def test_fluency_combines_perplexity_and_repetition():
    assert fluency_from_ppl(2.0) == 1.0 and fluency_from_ppl(1000.0) == 0.0 and fluency_from_ppl(float("inf")) == 0.0
    assert fluency_from_ppl(math.sqrt(2.0 * 1000.0)) == pytest.approx(0.5)  # log-linear: geometric midpoint -> 0.5
    assert fluency(2.0, FLUENT) == 1.0
    assert fluency(2.0, LOOP_MAN) <= 0.3 and fluency(2.0, LOOP_FAMILY) <= 0.3  # even a perfectly predictable loop
    assert fluency(6000.0, SHUFFLED) == 0.0 and fluency(2.0, "") == 0.0 and fluency(2.0, "  ") == 0.0


def test_fluency_judge_on_the_tiny_model_is_f_ppl_times_repetition(model, tokenizer):
    prompts = ["tell me about the film"] * 3
    texts = ["the movie was good and the day was great", "a good film a good film a good film", ""]
    ppl = perplexities(model, tokenizer, prompts, texts)
    got = score("fluency", texts, instructions=prompts, model=model, tokenizer=tokenizer)
    assert got[:2] == pytest.approx([fluency_from_ppl(p) * repetition_factor(t) for p, t in zip(ppl, texts)][:2])
    assert got[2] == 0.0 and math.isinf(ppl[2])
    assert repetition_factor(texts[1]) == pytest.approx((3 / 8 / 0.9) ** 2)


def test_perplexity_on_the_completion_window_equals_each_text_alone_with_full_logits(model, tokenizer):
    """Batched, left-padded, LM head on the last positions only == one text at a time with every position's logits."""
    from saebasis.core.activations import encode_pairs

    prompts = ["tell me about the film", "hi", "what is the weather like today in the town by the sea"]
    texts = ["the movie was good and the day was great", "ok", "rain and then sun and then rain again"]
    got = perplexities(model, tokenizer, prompts, texts, batch_size=3)
    for p, t, g in zip(prompts, texts, got):
        b = encode_pairs(tokenizer, [p], [t], 256)
        logp = model(input_ids=b["input_ids"]).logits[0, :-1].float().log_softmax(-1)  # [pos-1, vocab]
        nll = -logp.gather(-1, b["input_ids"][0, 1:, None])[:, 0][b["completion_mask"][0, 1:]].mean()
        assert g == pytest.approx(math.exp(float(nll)), rel=1e-4)


REUSE_PROMPTS = ["tell me about the film", "hi", "what is the weather like today in the town by the sea", "hi"]
REUSE_TEXTS = ["the movie was good and the day was great", "ok", "rain and then sun and then rain again", ""]


def test_prompt_reuse_gives_the_full_forward_perplexities_and_runs_each_prompt_once(model, tokenizer):
    full = perplexities(model, tokenizer, REUSE_PROMPTS, REUSE_TEXTS)
    store = judges.PromptReuse()
    with store.active():
        first = perplexities(model, tokenizer, REUSE_PROMPTS, REUSE_TEXTS, batch_size=3)  # "hi" twice, across batches
        assert store.prompt_forwards == 3
        again = perplexities(
            model, tokenizer, REUSE_PROMPTS[::-1], ["ok", "sun", "the film", "a a a"]
        )  # other responses
    assert store.prompt_forwards == 3 and store.reused == 1 + 4  # the second "hi" (batch 2), then every row
    assert first[:3] == pytest.approx(full[:3], rel=1e-5) and math.isinf(first[3])
    assert again == pytest.approx(
        perplexities(model, tokenizer, REUSE_PROMPTS[::-1], ["ok", "sun", "the film", "a a a"]), rel=1e-5
    )
    assert (
        perplexities(model, tokenizer, REUSE_PROMPTS, REUSE_TEXTS) == full
    )  # outside the block: the full path, untouched


def test_prompt_reuse_is_not_used_under_a_hook_and_recomputes_after_a_weight_change(model, tokenizer):
    store = judges.PromptReuse()
    with store.active():
        perplexities(model, tokenizer, REUSE_PROMPTS, REUSE_TEXTS)
        handle = model.model.layers[0].register_forward_hook(
            lambda mod, args, out: (out[0] * 1.5,) + tuple(out[1:]) if isinstance(out, tuple) else out * 1.5
        )
        try:
            hooked = perplexities(model, tokenizer, REUSE_PROMPTS, REUSE_TEXTS)
        finally:
            handle.remove()
        assert store.prompt_forwards == 3 and store.reused == 1  # the hooked call never touched the store
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.mul_(2.0)  # in place: the parameter's version moves
        changed = perplexities(model, tokenizer, REUSE_PROMPTS, REUSE_TEXTS)
        assert store.prompt_forwards == 6  # the stored prompt states were the old weights'
    assert hooked[:3] != pytest.approx(changed[:3], rel=1e-3)
    assert changed[:3] == pytest.approx(perplexities(model, tokenizer, REUSE_PROMPTS, REUSE_TEXTS)[:3], rel=1e-5)


def test_perplexity_of_a_left_padded_row_under_learned_absolute_positions(tokenizer):
    """GPT-2 reads positions from position_ids: a left-padded row must start at 0, as it does alone (and as the
    prompt-reuse path counts them)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2)
    ).eval()
    batched = perplexities(gpt2, tokenizer, REUSE_PROMPTS[:3], REUSE_TEXTS[:3])
    alone = [perplexities(gpt2, tokenizer, [p], [t])[0] for p, t in zip(REUSE_PROMPTS[:3], REUSE_TEXTS[:3])]
    assert batched == pytest.approx(alone, rel=1e-5)
    with judges.PromptReuse().active():
        assert perplexities(gpt2, tokenizer, REUSE_PROMPTS[:3], REUSE_TEXTS[:3]) == pytest.approx(alone, rel=1e-5)


@pytest.mark.slow
def test_fluency_on_hand_written_examples_under_the_embedded_model():
    from saebasis.core.models import load_model

    loaded = load_model("smollm2")
    texts = [FLUENT, LOOP_MAN, LOOP_FAMILY, SHUFFLED, ""]
    prompts = ["Tell me about your afternoon."] * len(texts)
    good, man, family, shuffled, empty = score(
        "fluency", texts, instructions=prompts, model=loaded.model, tokenizer=loaded.tokenizer
    )
    assert good >= 0.6 and man <= 0.3 and family <= 0.3 and shuffled <= 0.05 and empty == 0.0


# -- agreement --------------------------------------------------------------------------------------
def test_spearman_exact_with_ties():
    assert average_ranks([5, 1, 5]) == [2.5, 1.0, 2.5]
    assert judge_agreement([0.1, 0.5, 0.9], [1, 2, 3]) == pytest.approx(1.0)
    assert judge_agreement([0.1, 0.5, 0.9], [3, 2, 1]) == pytest.approx(-1.0)
    assert judge_agreement([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))  # ranks [1, 2.5, 2.5, 4]
    assert judge_agreement([0.0, 0.0, 0.7, 0.2], [0.0, 0.1, 0.5, 0.0]) == pytest.approx(
        0.5
    )  # ranks [1.5,1.5,4,3] vs [1.5,3,4,1.5] (scipy agrees)
    assert math.isnan(judge_agreement([0.3, 0.3], [0.1, 0.2])) and math.isnan(judge_agreement([0.3], [0.1]))
    with pytest.raises(ValueError, match="one score per response"):
        judge_agreement([0.1], [0.1, 0.2])


def test_winner_disagreement():
    a = {"bias": 0.8, "adaptor": 0.7, "unsteered": 0.5}
    assert not winner_disagreement(a, {"bias": 0.6, "adaptor": 0.5, "unsteered": 0.1})
    assert winner_disagreement(a, {"bias": 0.6, "adaptor": 0.7, "unsteered": 0.1})
    assert not winner_disagreement(a, {"bias": 0.7, "adaptor": 0.7, "unsteered": 0.1})  # a tie that includes a's winner
    assert not winner_disagreement(a, {"bias": float("nan")})  # no winner under b: nothing to disagree on
