"""Bad input and faults found in review: each gets a clear error (or the right behaviour) before heavy work,
and loses no earlier result. One test per defect, named after it."""

from __future__ import annotations

import os
import pickle
import warnings

import pytest
import torch

from saebasis.config import compose
from saebasis.runs import load_run
from saebasis.validate import ConfigError
from tests.test_reliability import train_overrides


def _train(tmp_path, *extra, run="run"):
    from saebasis.training.train import train

    return train(compose("train", [*train_overrides(tmp_path, run), "trainer.max_epochs=1", *extra]))


def test_resume_with_a_mistyped_run_dir_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="resume=true but .* does not exist.*typo"):
        _train(tmp_path, "resume=true", run="typo")


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    _train(tmp_path, "seed=0")  # leaves run.ckpt/last.ckpt of seed 0
    with pytest.raises(ValueError, match="belongs to another configuration"):
        _train(tmp_path, "seed=1", "resume=true")


def test_a_finished_run_is_not_overwritten_silently(tmp_path):
    first = _train(tmp_path)
    before = (tmp_path / "run" / "intervention.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a finished run.*overwrite=true"):
        _train(tmp_path, "seed=3")
    assert (tmp_path / "run" / "intervention.safetensors").read_bytes() == before
    again = _train(tmp_path, "seed=3", "overwrite=true")
    assert again["run_dir"] == first["run_dir"] and load_run(again["run_dir"]).cfg["config"]["seed"] == 3


def test_a_second_writer_of_the_same_run_dir_fails_at_once(tmp_path):
    (tmp_path / "run.lock").write_text(str(os.getpid()))  # a live process holds the run folder
    with pytest.raises(RuntimeError, match="being written by another process"):
        _train(tmp_path)
    assert not (tmp_path / "run").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / "run.lock").write_text("999999999")
    assert _train(tmp_path)["steps"] > 0 and not (tmp_path / "run.lock").exists()


def test_an_unwritable_run_dir_is_found_before_training(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(PermissionError, match="Cannot write to .* pick a writable run_dir"):
        _train(tmp_path, f"run_dir={tmp_path / 'file' / 'run'}")


@pytest.mark.parametrize(
    "override, field",
    [
        ("val_fraction=1.0", "val_fraction"),
        ("max_len=0", "max_len"),
        ("batch_size=0", "batch_size"),
        ("trainer.max_steps=abc", "trainer.max_steps"),
        ("~lr", "lr"),
        ("~seed", "seed"),
        ("~batch_size", "batch_size"),
        ("lr=nan", "lr"),
    ],
)
def test_bad_training_numbers_name_the_field(tmp_path, override, field):
    with pytest.raises(ConfigError, match=f"config field '{field}'"):
        _train(tmp_path, override)
    assert not (tmp_path / "run").exists()


def test_a_diverged_training_is_not_saved(tmp_path):
    with pytest.raises(ValueError, match="diverged|non-finite"):
        _train(tmp_path, "lr=1e30", "experiment=residual_vector")
    assert not (tmp_path / "run").exists()


def test_nan_weights_on_disk_are_refused_at_load(tmp_path):
    from safetensors.torch import load_file, save_file

    run = _train(tmp_path)["run_dir"]
    weights = load_file(f"{run}/intervention.safetensors")
    name = next(iter(weights))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, f"{run}/intervention.safetensors")
    with pytest.raises(ValueError, match="non-finite"):
        load_run(run)


def test_a_truncated_checkpoint_gets_a_clear_error(tmp_path):
    import shutil

    _train(tmp_path)
    shutil.rmtree(tmp_path / "run")  # the run never finished (a crash): resume reads its checkpoint
    last = tmp_path / "run.ckpt" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated, corrupt or not a saebasis checkpoint"):
        _train(tmp_path, "resume=true")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PAYLOAD_RAN",))


def test_a_planted_pickle_checkpoint_never_runs_even_if_the_environment_asks(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.ckpt").mkdir()
    with open(tmp_path / "run.ckpt" / "last.ckpt", "wb") as f:
        torch.save({"state_dict": {}, "evil": _Payload()}, f, pickle_module=pickle)
    with pytest.raises(ValueError, match="cannot be loaded as a weights-only checkpoint"):
        _train(tmp_path, "resume=true")
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_run_weights_of_another_width_get_a_clear_error(tmp_path, sae):
    from saebasis.interventions import build
    from saebasis.runs import save_run
    from tests.conftest import tiny_sae

    iv = build("sae_bias", {}, 32, sae)
    save_run(tmp_path / "r", iv, {"sae": None})
    with pytest.raises(
        ValueError, match="does not fit a 'sae_bias' intervention.*Load it with the SAE it was trained with"
    ):
        load_run(tmp_path / "r", sae=tiny_sae(d_sae=128))


def test_generate_rejects_bad_lengths_and_clips_to_the_context(model, tokenizer):
    from saebasis.core.generation import generate_timed

    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        generate_timed(model, tokenizer, ["hi"], max_new_tokens="abc")
    context = model.config.max_position_embeddings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen = generate_timed(model, tokenizer, ["x " * (context + 50)], max_new_tokens=3)
    assert any("context" in str(w.message) for w in caught) and len(gen.responses) == 1


def test_cuda_without_a_gpu_is_explained():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from saebasis.core.models import load_model

    with pytest.raises(ValueError, match="no CUDA GPU.*device=cpu"):
        load_model("tiny-llama", device="cuda")


def test_non_utf8_dataset_bytes_name_file_and_line(tmp_path):
    from saebasis.data import load_concept
    from tests.conftest import write_concept

    folder = write_concept(tmp_path / "c")
    pairs = folder / "pairs.jsonl"
    lines = pairs.read_bytes().split(b"\n")
    lines[2] = b'{"prompt": "caf\xe9", "positive": "a", "negative": "b"}'
    pairs.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=r"pairs.jsonl:3: .* is not UTF-8.*save the file as UTF-8"):
        load_concept(str(folder))
