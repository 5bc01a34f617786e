from pathlib import Path

import saebasis
from saebasis.interpret.render import shown_path


def test_report_paths_are_shown_relative_to_the_working_folder_or_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    package_parent = Path(saebasis.__file__).resolve().parent.parent
    assert shown_path(f"{tmp_path}/outputs/demo/runs/sae_bias") == "outputs/demo/runs/sae_bias"
    corpus = "saebasis/assets/corpus (heldout shards)"
    assert shown_path(f"{package_parent}/{corpus}") == corpus
    assert shown_path("/elsewhere/corpus.jsonl") == "/elsewhere/corpus.jsonl"  # outside both: left as given
