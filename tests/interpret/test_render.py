from pathlib import Path

import saebasis
from saebasis.interpret.texts import shown_path


def test_report_paths_are_shown_relative_to_the_working_folder_or_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    package_parent = Path(saebasis.__file__).resolve().parent.parent
    assert shown_path(f"{tmp_path}/outputs/demo/runs/sae_bias") == "outputs/demo/runs/sae_bias"
    corpus = "saebasis/assets/corpus (heldout shards)"
    assert shown_path(f"{package_parent}/{corpus}") == corpus
    assert shown_path("/elsewhere/corpus.jsonl") == "/elsewhere/corpus.jsonl"  # outside both: left as given


def test_the_shipped_corpus_is_recorded_without_a_machine_path(tmp_path, monkeypatch):
    # report.json and the board archives store this source: it must read the same on every machine
    from saebasis.interpret.texts import shard_corpus

    monkeypatch.chdir(tmp_path)
    folder = Path(saebasis.__file__).resolve().parent / "assets" / "corpus"
    assert shard_corpus(folder).source == "saebasis/assets/corpus (heldout shards)"
