"""Capability kept: the shipped items, lm-eval's scoring rule reproduced exactly, the ratio and its bootstrap CI."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from saebasis.core import hooks
from saebasis.core.models import tiny_model
from saebasis.eval.capability import (
    CATEGORIES,
    ITEMS,
    Item,
    bootstrap_ratio,
    capability_kept,
    choice_logliks,
    context,
    correct,
    load_items,
    select_items,
)
from saebasis.interventions import build


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("tiny-llama", seed=3)  # byte-level tokenizer: every text is scored, none is [UNK]


@pytest.fixture
def steering_vector():
    iv = build("diffmean", {}, 32)
    with torch.no_grad():
        iv.v.copy_(torch.randn(32, generator=torch.Generator().manual_seed(0)) * 3)
    return iv


def test_shipped_items_are_at_least_200_over_three_categories_with_valid_answers():
    items = load_items()
    assert len(items) >= 200
    assert {i.category for i in items} == set(CATEGORIES)
    assert all(len(i.choices) == 4 and len(set(i.choices)) == 4 and 0 <= i.answer < 4 for i in items)
    assert len({(i.question, tuple(i.choices)) for i in items}) == len(items)  # no duplicates


def test_bad_answer_index_is_refused(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": 2}\n')
    with pytest.raises(ValueError, match="not an index"):
        load_items(path)


def direct_loglik(model, tokenizer, item: Item, choice: str, iv=None, hook=None, strength=1.0) -> float:
    """One unpadded forward per choice: the reference the batched scorer must reproduce."""
    ctx = tokenizer(context(item), add_special_tokens=False)["input_ids"]
    whole = tokenizer(context(item) + " " + choice, add_special_tokens=False)["input_ids"]
    with torch.no_grad(), hooks.steering(model, hook, iv, strength):
        logprobs = model(input_ids=torch.tensor([whole])).logits[0].log_softmax(-1)
    return float(sum(logprobs[t - 1, whole[t]] for t in range(len(ctx), len(whole))))


@pytest.mark.parametrize("steered", [False, True])
def test_batched_right_padded_scores_equal_one_forward_per_choice(tiny, steering_vector, steered):
    model, tok = tiny.model, tiny.tokenizer
    items = load_items()[::37]  # every category, different lengths in one batch
    kw = dict(intervention=steering_vector, hook="blocks.1.hook_resid_post", strength=1.0) if steered else {}
    got = choice_logliks(model, tok, items, batch_size=7, **kw)
    for item, scores in zip(items, got):
        want = torch.tensor(
            [direct_loglik(model, tok, item, c, kw.get("intervention"), kw.get("hook")) for c in item.choices]
        )
        torch.testing.assert_close(scores, want, rtol=0, atol=1e-4)


def test_strength_zero_keeps_everything_and_the_ratio_is_steered_over_unsteered(tiny, steering_vector):
    model, tok = tiny.model, tiny.tokenizer
    items = load_items()[:60]
    base = correct(model, tok, items)
    same = capability_kept(model, tok, steering_vector, "blocks.1.hook_resid_post", 0.0, items, unsteered=base)
    assert same.kept == 1.0 and same.ci == (1.0, 1.0)
    result = capability_kept(model, tok, steering_vector, "blocks.1.hook_resid_post", 4.0, items, unsteered=base)
    steered = correct(model, tok, items, steering_vector, "blocks.1.hook_resid_post", 4.0)
    assert result.kept == pytest.approx(float(steered.float().mean()) / float(base.float().mean()))
    assert result.ci[0] <= result.kept <= result.ci[1] and result.n_items == 60


def test_bootstrap_ratio_ci_is_tight_for_identical_and_wide_for_disagreeing_answers():
    same = torch.tensor([True, False] * 50)
    assert bootstrap_ratio(same, same) == (1.0, 1.0)
    half = torch.tensor([True, False, False, False] * 25)  # a quarter right
    low, high = bootstrap_ratio(half, same)
    assert low < 0.5 < high < 1.0  # steered 0.25 / unsteered 0.5


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval absent: bash scripts/setup_lmeval.sh")
def test_the_lm_eval_task_scores_the_items_as_saebasis_does(tiny):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tok = tiny.model, tiny.tokenizer
    n = 40
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=8, device="cpu")
    tasks = TaskManager(include_path=str(ITEMS.parent))
    out = simple_evaluate(model=lm, tasks=["saebasis_capability"], task_manager=tasks, limit=n, log_samples=False)
    want = float(correct(model, tok, load_items()[:n]).float().mean())
    assert out["results"]["saebasis_capability"]["acc,none"] == pytest.approx(want, abs=1e-9)


def test_select_items_takes_the_categories_in_turn_and_keeps_file_order():
    items = load_items()
    some = select_items(items, 7)
    assert [i.category for i in some[:3]] == list(dict.fromkeys(i.category for i in items))  # one of each first
    per = {c: [i for i in items if i.category == c] for c in CATEGORIES}
    for c in CATEGORIES:  # within a category: the first ones, in file order
        mine = [i for i in some if i.category == c]
        assert mine == per[c][: len(mine)]
    assert select_items(items, None) == items and select_items(items, 10_000) == items
    assert len(select_items(items, 110)) == 110 and {i.category for i in select_items(items, 110)} == set(CATEGORIES)
    with pytest.raises(ValueError, match=">= 1"):
        select_items(items, 0)


def test_a_prompting_prefix_is_scored_before_the_question(tiny):
    model, tok = tiny.model, tiny.tokenizer
    items = load_items()[:5]
    assert context(items[0], "Be kind. ").startswith("Be kind. Question: ")
    got = choice_logliks(model, tok, items, prefix="Be kind. ")
    ctx = tok(context(items[0], "Be kind. "), add_special_tokens=False)["input_ids"]
    whole = tok(context(items[0], "Be kind. ") + " " + items[0].choices[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = model(input_ids=torch.tensor([whole])).logits[0].log_softmax(-1)
    want = float(sum(logprobs[t - 1, whole[t]] for t in range(len(ctx), len(whole))))
    assert float(got[0][0]) == pytest.approx(want, abs=1e-4)
    assert not torch.equal(got[0], choice_logliks(model, tok, items)[0])  # the prefix changes the scores
