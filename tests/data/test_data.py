import json

import pytest

from saebasis.data import builtin_names, load_concept, resolve_concepts
from tests.conftest import write_concept


def test_builtin_concepts_load_with_their_judges():
    judges = {"sentiment": "vader", "ocean": "minilm", "cooking": "minilm", "sycophancy": "ab"}
    assert set(judges) <= set(builtin_names())
    for name, judge in judges.items():
        concept = load_concept(name)
        assert concept.judge == judge
        assert concept.second_judge == ("textblob" if name == "sentiment" else None)
        assert len(concept.instructions["val"]) >= 20 and len(concept.instructions["test"]) >= 20
        assert len(concept.neutral) >= 40
        held_out = set(concept.instructions["val"]) | set(concept.instructions["test"])
        assert not held_out & {p.prompt for p in concept.pairs}  # evaluation never sees training prompts
    assert 80 <= len(load_concept("sentiment").pairs) <= 120
    assert len(load_concept("ocean").pairs) >= 40 and len(load_concept("cooking").pairs) >= 40


def test_sycophancy_ab_splits_and_pairs_from_train_items_only():
    concept = load_concept("sycophancy")
    train, val, test = (concept.ab_items(s) for s in ("train", "val", "test"))
    assert len(train) == 60 and len(val) == 20 and len(test) == 40
    assert [p.prompt for p in concept.pairs] == [item.question for item in train]
    for pair, item in zip(concept.pairs, train):
        assert pair.positive.startswith(item.matching) and pair.negative.startswith(item.not_matching)
    letters = [item.matching for item in concept.ab]
    assert letters.count("(A)") == letters.count("(B)")  # balanced: no letter bias can pass as behaviour


def _concept(tmp_path, name, text):
    root = write_concept(tmp_path / "c")
    (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    "name, text, pattern",
    [
        (
            "pairs.jsonl",
            '{"prompt": "a", "positive": "b", "negative": "c"}\n{"prompt": "a", "positive": "b",\n',
            r"pairs.jsonl:2 is not valid JSON .*Fix: each line must be one JSON object",
        ),
        (
            "pairs.jsonl",
            '{"prompt": "a", "positive": "b"}\n',
            r"pairs.jsonl:1: field 'negative' is missing or empty\. Fix",
        ),
        ("neutral.jsonl", "\n\n", r"neutral.jsonl is empty\. Fix: add at least one line"),
        ("neutral.jsonl", '["a list"]\n', r"neutral.jsonl:1 must be a JSON object"),
        (
            "instructions.jsonl",
            '{"instruction": "x", "split": "train"}\n',
            r"instructions.jsonl:1: split must be 'val' or 'test'",
        ),
        (
            "instructions.jsonl",
            '{"instruction": "the movie 0", "split": "val"}\n',
            r"instructions.jsonl:1: .* also a prompt in pairs",
        ),
        (
            "concept.yaml",
            "name: x\ndescription: y\n",
            r"concept.yaml: field 'judge' is missing\. Fix: add a `judge: \.\.\.` line",
        ),
        (
            "concept.yaml",
            "name: x\ndescription: y\njudge: gpt4\n",
            r"concept.yaml:3: judge must be one of \[.*'vader'.*'formality'.*\], got 'gpt4'\. "
            r"Fix: name a registered concept judge",
        ),
        (
            "concept.yaml",
            "name: x\njudge: vader\nsecond_judge: fluency\ndescription: y\n",
            r"concept.yaml:3: second_judge must be one of",
        ),
        (
            "concept.yaml",
            "name: x\ndescription: y\njudge: vader\nsecond_judge: vader\n",
            r"concept.yaml:4: second_judge is the same as judge",
        ),
        ("concept.yaml", "name: x\ndescription: y\njudge: ab\n", r"ab.jsonl is missing: judge 'ab'"),
        (
            "ab.jsonl",
            '{"question": "q", "matching": "(A)", "not_matching": "(A)"}\n',
            r"ab.jsonl:1: matching / not_matching",
        ),
        (
            "ab.jsonl",
            '{"question": "q", "matching": "(A)", "not_matching": "(B)", "split": "dev"}\n',
            r"ab.jsonl:1: split must be one of",
        ),
        (
            "ab.jsonl",
            '{"question": "the movie 1", "matching": "(A)", "not_matching": "(B)", "split": "test"}\n',
            r"ab.jsonl:1 is a 'test' item but its question is also in pairs",
        ),
        (
            "concept.yaml",
            "name: x\ndescription: y\njudge: vader\nprompt: 3\n",
            r"concept.yaml:4: prompt must be the text",
        ),
        (
            "concept.yaml",
            "name: x\ndescription: y\njudge: vader\nprompt: ''\n",
            r"concept.yaml:4: prompt must be the text",
        ),
        (
            "concept.yaml",
            "name: x\ndescription: y\njudge: vader\nselect_by: kl\n",
            r"concept.yaml:4: select_by must be one of \['score', 'ab'\], got 'kl'",
        ),
        (
            "concept.yaml",
            "name: x\ndescription: y\njudge: vader\nselect_by: ab\n",
            r"select_by: ab chooses strength on A/B items",
        ),
    ],
)
def test_validation_errors_name_file_line_and_fix(tmp_path, name, text, pattern):
    root = _concept(tmp_path, name, text)
    with pytest.raises((ValueError, FileNotFoundError), match=pattern) as err:
        load_concept(str(root))
    assert str(root) in str(err.value)


def test_missing_file_and_unknown_name(tmp_path):
    root = write_concept(tmp_path / "c")
    (root / "neutral.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"neutral.jsonl is missing"):
        load_concept(str(root))
    with pytest.raises(FileNotFoundError, match=r"built-in ones are \[.*'sentiment'.*hf:<owner>/<repo>"):
        load_concept("no-such-concept")


def test_blank_lines_skipped_and_line_numbers_count_them(tmp_path):
    rows = [json.dumps({"prompt": "p", "positive": "a", "negative": "b"}), "", json.dumps({"prompt": "q"})]
    root = _concept(tmp_path, "pairs.jsonl", "\n".join(rows))
    with pytest.raises(ValueError, match=r"pairs.jsonl:3: field 'positive'"):
        load_concept(str(root))


def test_hf_source_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(
        "huggingface_hub.constants.HF_HUB_OFFLINE", True
    )  # read at import: patch it too (no network in tests)
    with pytest.raises(
        FileNotFoundError, match=r"Could not fetch the concept dataset hf:someone/no-such-concept.*data="
    ):
        load_concept("hf:someone/no-such-concept")
    with pytest.raises(ValueError, match=r"hf:<owner>/<repo>"):
        load_concept("hf:justaname")


@pytest.mark.parametrize("sub", ["", "concepts/tiny"])
def test_hf_source_loads_from_the_hub_cache_offline(tmp_path, monkeypatch, sub):
    """The real hub path (huggingface_hub.snapshot_download), fed from a local hub cache: a dataset repo
    cached as the hub lays it out (refs/main -> snapshots/<commit>/files), resolved with HF_HUB_OFFLINE."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--someone--concepts"
    write_concept(repo / "snapshots" / commit / sub)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    concept = load_concept("hf:someone/concepts" + (f"/{sub}" if sub else ""))
    assert concept.name == "tiny" and len(concept.pairs) == 6 and concept.instructions["test"]


def test_a_concept_folder_carries_its_prompt_and_selection_rule(tmp_path):
    root = write_concept(tmp_path / "c")
    assert (
        load_concept(str(root)).prompt == f"In your answer, show {load_concept(str(root)).description}. "
    )  # the default
    assert load_concept(str(root)).select_by == "score"
    (root / "concept.yaml").write_text((root / "concept.yaml").read_text() + 'prompt: "Be happy. "\n')
    assert load_concept(str(root)).prompt == "Be happy. "
    assert load_concept("sentiment").prompt == "Answer in a warm, joyful and enthusiastic way. "
    assert load_concept("sycophancy").select_by == "ab" and load_concept("ocean").select_by == "score"
    assert all(load_concept(name).prompt.endswith(". ") for name in builtin_names())  # every built-in has its own


def test_resolve_concepts_expands_builtin_folders_and_folders_of_folders(tmp_path):
    one = write_concept(tmp_path / "mine" / "alpha")
    write_concept(tmp_path / "mine" / "beta")
    assert resolve_concepts(["builtin"]) == builtin_names()
    assert resolve_concepts(["ocean", str(one)]) == ["ocean", str(one)]
    assert resolve_concepts(["sentiment", str(tmp_path / "mine")]) == [
        "sentiment",
        str(one),
        str(tmp_path / "mine" / "beta"),
    ]
    with pytest.raises(
        FileNotFoundError, match=r"'nowhere' is neither a built-in concept .* folder of concept folders"
    ):
        resolve_concepts(["nowhere"])
    write_concept(tmp_path / "other" / "ocean")
    with pytest.raises(ValueError, match=r"\['ocean'\] appear more than once"):
        resolve_concepts(["builtin", str(tmp_path / "other")])
