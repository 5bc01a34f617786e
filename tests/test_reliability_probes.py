"""The bad-input / fault probes of issue 31, each reproduced on the tiny model: run folders never delete what
saebasis did not write, resume cannot pick the wrong checkpoint, archives cannot escape, every config typo is
caught -- with a clear error naming the problem and the fix, before heavy work.

T below is the issue's shorthand: a 1-epoch residual vector on the tiny model, no SAE, no logger."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
import torch

from saebasis import runs
from saebasis.config import compose, override
from saebasis.runs import load_run
from saebasis.validate import ConfigError
from tests.conftest import write_concept

REPO = Path(__file__).resolve().parents[1]
T = [
    "model=tiny",
    "sae=none",
    "hook=blocks.1.hook_resid_post",
    "logger=none",
    "n_samples=0",
    "max_pairs=8",
    "trainer.max_epochs=1",
    "intervention=residual_vector",
    "trainer.enable_progress_bar=false",
    "batch_size=2",
    "max_len=24",
]


def t_overrides(tmp_path: Path, run: str = "run", *extra: str) -> list[str]:
    concept = tmp_path / "pairs" if (tmp_path / "pairs").exists() else write_concept(tmp_path / "pairs", n_pairs=12)
    return [*T, f"data={concept}", f"run_dir={tmp_path / run}", *extra]


def train_t(tmp_path: Path, *extra: str, run: str = "run") -> dict:
    from saebasis.training.train import train

    return train(compose("train", t_overrides(tmp_path, run, *extra)))


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: the refusal must come before any heavy work."""
    import importlib

    from saebasis.core import models

    mods = [
        importlib.import_module(m)
        for m in (
            "saebasis.core.stack",
            "saebasis.training.train",
            "saebasis.training.fit",
            "saebasis.experiments.compare",
        )
    ]  # imported before anything is patched

    def heavy(*_a, **_k):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(models, "load_model", heavy)
    monkeypatch.setattr(models, "tiny_model", heavy)
    from saebasis.core import stack

    monkeypatch.setattr(stack, "load_stack", heavy)
    for module in mods[1:]:
        if hasattr(module, "load_stack"):
            monkeypatch.setattr(module, "load_stack", heavy)


def read_only_dir(path: Path, monkeypatch) -> Path:
    """A folder nothing may be written into (also when the tests run as root, which permissions do not stop)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    real = tempfile.mkstemp

    def refuse(*a, dir=None, **k):
        if dir is not None and Path(dir).resolve().is_relative_to(path.resolve()):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    return path


# == data loss ====================================================================================================
def test_train_into_a_folder_of_user_files_is_refused_and_nothing_is_deleted(tmp_path, no_model_load):
    mydata = tmp_path / "mydata"
    (mydata / "sub").mkdir(parents=True)
    (mydata / "notes.txt").write_text("precious")
    for extra in ([], ["overwrite=true"]):  # not even overwrite=true replaces a folder saebasis did not write
        with pytest.raises(
            FileExistsError, match=r"not a saebasis run folder \(it holds notes.txt, sub/\).*new run_dir"
        ):
            train_t(tmp_path, *extra, run="mydata")
    assert (mydata / "notes.txt").read_text() == "precious" and (mydata / "sub").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata", "pairs"]  # no lock, no checkpoint folder left


def test_fit_baseline_into_a_folder_of_user_files_is_refused(tmp_path, no_model_load):
    from saebasis.training.fit import fit_baseline

    mydata = tmp_path / "mydata2"
    mydata.mkdir()
    (mydata / "notes.txt").write_text("precious")
    concept = write_concept(tmp_path / "pairs")
    cfg = compose(
        "fit_baseline",
        [
            "model=tiny",
            "sae=none",
            "hook=blocks.1.hook_resid_post",
            "experiment=diffmean",
            f"data={concept}",
            f"run_dir={mydata}",
            "overwrite=true",
        ],
    )
    with pytest.raises(FileExistsError, match="not a saebasis run folder"):
        fit_baseline(cfg)
    assert (mydata / "notes.txt").read_text() == "precious"


def test_run_dir_that_is_a_file_is_refused_before_training(tmp_path, no_model_load):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(FileExistsError, match="is an existing file, not a run folder.*new run_dir"):
        train_t(tmp_path, run="afile")
    assert afile.read_text() == "keep me" and not list(tmp_path.glob(".afile*"))


def test_a_finished_run_is_replaced_only_by_a_run_with_overwrite(sae, tmp_path):
    from saebasis.interventions import build

    iv = build("sae_bias", {}, 32, sae)
    runs.save_run(tmp_path / "r", iv, {"sae": None}, {"v": 1})
    assert runs.check_run_dir(tmp_path / "r", overwrite=True) == "replace"
    assert runs.check_run_dir(tmp_path / "r", resume=True) == "finished"
    assert runs.check_run_dir(tmp_path / "empty") == "new"
    (tmp_path / "r" / "README.md").write_text("model card")  # what Steering.save adds: still a saebasis run
    assert runs.check_run_dir(tmp_path / "r", overwrite=True) == "replace"
    (tmp_path / "r" / "mine.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="holds mine.txt"):
        runs.check_run_dir(tmp_path / "r", overwrite=True)
    with pytest.raises(FileExistsError, match="not a saebasis run folder"):  # save_run itself refuses it as well
        runs.save_run(tmp_path / "r", iv, {"sae": None}, {"v": 2})
    assert (tmp_path / "r" / "mine.txt").exists() and load_run(tmp_path / "r", sae=sae).metrics == {"v": 1}


def test_an_empty_stale_lock_is_named_with_how_to_clear_it(tmp_path, no_model_load):
    lock = tmp_path / "run.lock"
    lock.write_text("")  # what a full disk left: created, pid never written
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with pytest.raises(RuntimeError, match=r"stale lock: it is empty .*no saebasis process holds .*rm '.*run.lock'"):
        train_t(tmp_path)
    lock.write_text(str(os.getpid()))  # a live writer: refused, and told how to clear a lock whose pid was reused
    with pytest.raises(RuntimeError, match=r"being written by another process \(pid \d+.*rm '"):
        train_t(tmp_path)


def test_a_full_disk_while_taking_the_lock_leaves_no_lock_behind(tmp_path, monkeypatch):
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match=r"is full .* free.*needs at least .* MB.*Nothing was started"):
        with runs.run_guard(tmp_path / "run"):
            pass
    monkeypatch.setattr(os, "write", real_write)
    assert not (tmp_path / "run.lock").exists()  # the next run is not blocked forever
    with runs.run_guard(tmp_path / "run"):
        assert (tmp_path / "run.lock").read_text().split()[0] == str(os.getpid())


def test_too_little_free_space_is_refused_before_training(tmp_path, monkeypatch, no_model_load):
    usage = type("Usage", (), {"free": 5 * 2**20, "total": 2**30, "used": 2**30})
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda _p: usage)
    with pytest.raises(OSError, match=r"Only 5.0 MB free .* needs at least 64.0 MB.*Free at least 59.0 MB"):
        train_t(tmp_path)


def test_a_full_disk_while_saving_is_explained_and_keeps_the_previous_run(sae, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from saebasis.interventions import build

    iv = build("sae_bias", {}, 32, sae)
    runs.save_run(tmp_path / "run", iv, {"sae": None}, {"v": 1})

    def full(tensors, path):
        Path(path).write_bytes(b"\0" * 1000)  # part written, then the disk is full
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(runs, "save_file", full)
    with pytest.raises(OSError, match=r"is full .* needs at least .* MB more.*previous run in .* is kept") as info:
        runs.save_run(tmp_path / "run", iv, {"sae": None}, {"v": 2})
    assert info.value.errno == errno.ENOSPC
    assert load_run(tmp_path / "run", sae=sae).metrics == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


# == resume picks the newest checkpoint of this run ===============================================================
def _fake_checkpoint(path: Path, step: int, fp: str, run: dict | None = None) -> None:
    ckpt = {"global_step": step, "saebasis_config": fp, "state_dict": {}}
    if run is not None:
        ckpt["saebasis_run"] = run
    torch.save(ckpt, path)


def test_resume_picks_the_newest_checkpoint_by_recorded_time_not_by_name(tmp_path):
    cfg = {"run_dir": str(tmp_path / "rB"), "ckpt_dir": str(tmp_path / "rB.ckpt"), "resume": True, "seed": 0}
    ckpt_dir = tmp_path / "rB.ckpt"
    ckpt_dir.mkdir()
    fp = runs.fingerprint(cfg)
    _fake_checkpoint(ckpt_dir / "last-v1.ckpt", 65, fp, {"id": "b", "time": 200.0})  # the newer run's, killed
    _fake_checkpoint(ckpt_dir / "last.ckpt", 15, fp, {"id": "a", "time": 100.0})  # an older run's
    assert runs.newest_checkpoint(ckpt_dir)[0].name == "last-v1.ckpt"
    assert runs.newest_checkpoint(ckpt_dir, "a")[0].name == "last.ckpt"  # only run a's
    (ckpt_dir / "run.json").write_text(json.dumps({"run_id": "b", "started": time.time()}))
    plan = runs.plan_training(cfg)
    assert plan.mode == "resume" and plan.resume_from.name == "last-v1.ckpt" and plan.run_id == "b"


def test_resume_without_records_picks_the_newest_file(tmp_path):
    """Checkpoint folders written before run records existed: the newest file, never `last.ckpt` by its name."""
    cfg = {"run_dir": str(tmp_path / "rB"), "ckpt_dir": str(tmp_path / "rB.ckpt"), "resume": True}
    (tmp_path / "rB.ckpt").mkdir()
    _fake_checkpoint(tmp_path / "rB.ckpt" / "last-v1.ckpt", 65, runs.fingerprint(cfg))
    _fake_checkpoint(tmp_path / "rB.ckpt" / "last.ckpt", 15, runs.fingerprint(cfg))
    os.utime(tmp_path / "rB.ckpt" / "last.ckpt", (100, 100))
    assert runs.plan_training(cfg).resume_from.name == "last-v1.ckpt"


def test_resume_refusal_of_another_config_never_says_to_delete_the_checkpoints(tmp_path):
    cfg = {"run_dir": str(tmp_path / "rB"), "ckpt_dir": str(tmp_path / "rB.ckpt"), "resume": True, "seed": 0}
    (tmp_path / "rB.ckpt").mkdir()
    _fake_checkpoint(tmp_path / "rB.ckpt" / "last.ckpt", 5, runs.fingerprint({**cfg, "seed": 1}))
    with pytest.raises(ValueError, match="belongs to another configuration") as info:
        runs.plan_training(cfg)
    assert "delete" not in str(info.value)


def test_a_fresh_run_beside_unfinished_checkpoints_is_refused_and_overwrite_clears_them(tmp_path):
    cfg = {"run_dir": str(tmp_path / "r"), "ckpt_dir": str(tmp_path / "r.ckpt")}
    (tmp_path / "r.ckpt").mkdir()
    _fake_checkpoint(tmp_path / "r.ckpt" / "last.ckpt", 7, runs.fingerprint(cfg))
    with pytest.raises(FileExistsError, match=r"unfinished run \(step 7\). resume=true continues it; overwrite=true"):
        runs.plan_training(cfg)
    plan = runs.plan_training({**cfg, "overwrite": True})
    (tmp_path / "r.ckpt" / "wandb").mkdir()  # not a checkpoint: kept
    runs.start_checkpoints(cfg, plan)
    assert sorted(p.name for p in (tmp_path / "r.ckpt").iterdir()) == ["run.json", "wandb"]
    assert json.loads((tmp_path / "r.ckpt" / "run.json").read_text())["run_id"] == plan.run_id


# == security ====================================================================================================
def _board_state(*args: str, state: Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "BOARD_STATE_DIR": str(state), "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "board_state.sh"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


HOSTILE = {
    "symlink-out": ([_file("full/results.json"), _link("full/concepts/y", "/etc")], "a link"),
    "dotdot": ([_file("full/ok.json"), _file("full/../../escaped.txt")], r"leaves the target \('..'\)"),
    "absolute": ([_file("/tmp/saebasis-absolute-member.txt")], "an absolute path"),
    "setuid": ([_file("full/tool", b"#!/bin/sh\n", 0o6777)], "setuid / setgid"),
    "world-writable": ([_file("full/notes.md", b"x", 0o666)], "world-writable"),
    "sibling": ([_file("full/results.json"), _file("quick/leaderboard.md", b"replaced")], "over a sibling board"),
    "hardlink": ([_file("full/a"), _link("full/b", "full/a", tarfile.LNKTYPE)], "a link"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_board_archives_are_refused_before_anything_is_written(tmp_path, case):
    members, why = HOSTILE[case]
    state, boards = tmp_path / "state", tmp_path / "outputs"
    state.mkdir()
    (boards / "quick").mkdir(parents=True)
    (boards / "quick" / "leaderboard.md").write_text("the sibling board")
    _archive(state / "full.tar.gz", members)
    done = _board_state("unpack", str(boards / "full"), state=state)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Refusing to unpack" in done.stderr and "nothing was written" in done.stderr
    assert __import__("re").search(why, done.stderr), done.stderr
    assert not (boards / "full").exists() and (boards / "quick" / "leaderboard.md").read_text() == "the sibling board"
    assert sorted(p.name for p in boards.iterdir()) == ["quick"] and not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/saebasis-absolute-member.txt").exists()


def test_a_link_already_on_disk_cannot_lead_an_archive_outside_the_board(tmp_path):
    state, boards, outside = tmp_path / "state", tmp_path / "outputs", tmp_path / "outside"
    state.mkdir()
    outside.mkdir()
    (boards / "full" / "concepts").mkdir(parents=True)
    (boards / "full" / "concepts" / "y").symlink_to(outside)  # planted by an earlier (older) unpack
    _archive(state / "full.tar.gz", [_file("full/concepts/y/results.json", b"{}")])
    done = _board_state("unpack", str(boards / "full"), state=state)
    assert done.returncode == 1 and "through a link already on disk" in done.stderr
    assert not list(outside.iterdir())


def test_board_state_packs_and_unpacks_a_board_without_checkpoints_links_or_unsafe_modes(tmp_path):
    state, board = tmp_path / "state", tmp_path / "outputs" / "full"
    run = board / "concepts" / "joy" / "runs" / "sae_bias-seed0"
    run.mkdir(parents=True)
    (run / "cfg.json").write_text("{}")
    (run / "last.ckpt").write_bytes(b"checkpoint")
    (run / "shared.txt").write_text("x")
    (run / "shared.txt").chmod(0o666)
    (board / "concepts" / "joy" / "results.json").write_text(json.dumps({"results": {}}))
    (board / "link").symlink_to("/etc")
    done = _board_state("pack", str(board), state=state)
    assert done.returncode == 0, done.stderr
    with tarfile.open(state / "full.tar.gz") as tar:
        names = tar.getnames()
        assert all(not (m.mode & stat.S_IWOTH) for m in tar.getmembers())
    assert "full/concepts/joy/results.json" in names and not any(n.endswith((".ckpt", "link")) for n in names)
    target = tmp_path / "elsewhere" / "full"
    done = _board_state("unpack", str(target), state=state)
    assert done.returncode == 0, done.stderr
    assert (target / "concepts" / "joy" / "runs" / "sae_bias-seed0" / "cfg.json").read_text() == "{}"


def test_a_model_folder_with_only_pytorch_model_bin_is_refused_with_how_to_convert(tmp_path):
    from saebasis.core.models import load_model

    folder = tmp_path / "evil-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    marker = tmp_path / "PAYLOAD_RAN"
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n(Vtouch " + str(marker).encode() + b"\ntR.")
    with pytest.raises(ValueError, match=r"only pickled weights \(pytorch_model.bin\).*safetensors.*save_pretrained"):
        load_model(str(folder))
    assert not marker.exists()


# == silently wrong, now refused up front =========================================================================
@pytest.mark.parametrize(
    "extra, field, fix",
    [
        ("objective=foo", "objective", "choose one of sft, preference, reps"),
        ("max_pairs=0", "max_pairs", "positive integer or null"),
        ("max_pairs=-90", "max_pairs", "positive integer or null"),
        ("+max_epochs=5", "max_epochs", r"did you mean trainer.max_epochs\?"),
        ("+trainer.max_epoch=5", "trainer.max_epoch", r"did you mean trainer.max_epochs\?"),
        ("weight_decay=nan", "weight_decay", "finite number >= 0"),
        ("model.dtype=int8", "model.dtype", "choose one of float32, float16, bfloat16"),
        ("beta=-1", "beta", "finite number > 0"),
        ("resume=maybe", "resume", "true or false"),
    ],
    ids=[
        "objective",
        "max_pairs-0",
        "max_pairs-negative",
        "plus-max_epochs",
        "plus-trainer-typo",
        "weight_decay-nan",
        "dtype-int8",
        "beta",
        "resume-flag",
    ],
)
def test_bad_training_fields_are_refused_before_any_work(tmp_path, no_model_load, extra, field, fix):
    with pytest.raises(ConfigError, match=fix) as info:
        train_t(tmp_path, extra)
    assert info.value.field == field and "Fix:" in str(info.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.ckpt").exists()


@pytest.mark.parametrize(
    "arg, meant", [("+max_epochs=5", "trainer.max_epochs=5"), ("+trainer.max_epoch=5", "trainer.max_epochs=5")]
)
def test_the_cli_refuses_plus_keys_that_nothing_reads(tmp_path, arg, meant):
    from saebasis.cli import added_key_problem

    problem = added_key_problem("train", [*t_overrides(tmp_path), arg])
    assert problem and f"Did you mean {meant}?" in problem and "Valid keys" in problem
    assert added_key_problem("train", [*t_overrides(tmp_path), "+trainer.limit_train_batches=2"]) is None
    assert added_key_problem("train", ["experiment=rank_vs_sparsity", "+budget=residual_4k"]) is None  # a group


def test_saebasis_train_plus_max_epochs_exits_with_the_message_and_trains_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "saebasis.cli", "train", *t_overrides(tmp_path), "+max_epochs=5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2 and "Did you mean trainer.max_epochs=5?" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_duplicate_pairs_are_reported_and_split_leakage_refused(tmp_path, no_model_load):
    import warnings

    from saebasis.data import load_concept
    from saebasis.validate import check_pair_duplicates

    folder = write_concept(tmp_path / "tripled", n_pairs=12)
    rows = (folder / "pairs.jsonl").read_text().splitlines()
    (folder / "pairs.jsonl").write_text("\n".join(rows * 3))  # every pair three times
    with pytest.raises(ConfigError, match=r"24 of 36 pairs .* are duplicates.*both the train and the validation split"):
        train_t(tmp_path, f"data={folder}", "max_pairs=null", "val_fraction=0.25")
    once = write_concept(tmp_path / "once", n_pairs=12)
    lines = (once / "pairs.jsonl").read_text().splitlines()
    (once / "pairs.jsonl").write_text("\n".join([*lines, lines[0]]))  # one repeat, both copies in training
    concept = load_concept(str(once))
    seed = next(s for s in range(50) if not {tuple(r) for r in _split(concept, s)[1]} & {_row(concept.pairs[0])})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_pair_duplicates(concept, {"val_fraction": 0.1, "seed": seed})
    assert any("1 of 13 pairs" in str(w.message) for w in caught)


def _row(pair):
    return (pair.prompt, pair.positive, pair.negative)


def _split(concept, seed):
    from saebasis.data import split_pairs

    return split_pairs(concept, 0.1, seed)


def test_train_sae_checks_every_field_before_caching_activations(monkeypatch, tmp_path):
    from saebasis.corpus import sae_train

    def heavy(*_a, **_k):
        raise AssertionError("the model was loaded (and activations would be cached) before d_sae was checked")

    monkeypatch.setattr(sae_train, "load_model", heavy)
    for extra, field in (
        ("d_sae=0", "d_sae"),
        ("architecture=topkk", "architecture"),
        ("layer=7", "layer"),
        ("training_tokens=-5", "training_tokens"),
        ("sae_kwargs.k=0", "sae_kwargs.k"),
    ):
        with pytest.raises(ConfigError, match=f"config field '{field}'"):
            sae_train.train_sae(
                compose("train_sae", ["model=tiny", "logger=none", extra, f"work_dir={tmp_path / 'w'}"])
            )
    from saebasis.validate import SAE_ARCHITECTURES

    assert set(SAE_ARCHITECTURES) == set(sae_train.ARCHITECTURES)


# == raw tracebacks, now saebasis' own messages ===================================================================
def test_demo_refuses_an_unknown_autocast_up_front(tmp_path, no_model_load):
    from saebasis.experiments.demo import demo

    cfg = compose("demo", ["autocast=float8", f"out_dir={tmp_path / 'demo'}"])
    with pytest.raises(
        ValueError, match=r"autocast must be null \(full precision\) or one of \['bfloat16', 'float16'\]"
    ):
        demo(cfg)


@pytest.mark.parametrize("name", ["my (new) concept", "a<b>c", "it's,odd=1"])
def test_concept_paths_with_grammar_characters_reach_train_and_fit_verbatim(tmp_path, name):
    from saebasis.experiments.compare import method_config

    concept = write_concept(tmp_path / name)
    out = tmp_path / "out (1)"
    cfg = {"data": str(concept), "stack_overrides": [], "autocast": None}
    for kind in ("train", "fit"):
        spec = {
            "kind": kind,
            "overrides": ["intervention=diffmean" if kind == "fit" else "intervention=residual_vector"],
        }
        made = method_config("m", spec, cfg, out, 0)
        assert made["data"] == str(concept) and made["run_dir"].startswith(str(out / "runs"))
    assert compose("train", [override("data", "/x/${oops}")])["data"] == "/x/${oops}"


def test_compare_refuses_a_read_only_out_dir_before_work(tmp_path, monkeypatch, no_model_load):
    from saebasis.experiments.compare import compare

    locked = read_only_dir(tmp_path / "ro", monkeypatch)
    cfg = compose(
        "compare",
        [
            "model=tiny",
            "sae=none",
            "hook=blocks.1.hook_resid_post",
            "logger=none",
            f"data={write_concept(tmp_path / 'c')}",
            f"out_dir={locked}",
        ],
    )
    with pytest.raises(PermissionError, match=r"Cannot write to .*ro .*pick a writable out_dir before any work"):
        compare(cfg)


def test_interpret_refuses_a_read_only_out_dir_and_n_docs_0_before_work(tmp_path, monkeypatch, sae):
    from saebasis.interpret import report
    from saebasis.interventions import build

    def heavy(*_a, **_k):
        raise AssertionError("interpret loaded the run / model before checking its config")

    monkeypatch.setattr(report, "load_for_interpret", heavy)
    runs.save_run(tmp_path / "run", build("sae_bias", {}, 32, sae), {"sae": None})
    with pytest.raises(ValueError, match=r"n_docs must be a positive integer, got 0.*n_docs=64"):
        report.interpret(compose("interpret", [f"run={tmp_path / 'run'}", "n_docs=0"]))
    locked = read_only_dir(tmp_path / "ro", monkeypatch)
    with pytest.raises(PermissionError, match="pick a writable out_dir"):
        report.interpret(compose("interpret", [f"run={tmp_path / 'run'}", f"out_dir={locked}"]))
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        report.interpret(compose("interpret", [f"run={tmp_path / 'nowhere'}"]))
    assert not (tmp_path / "nowhere").exists()


# == end to end through `saebasis train` (tiny model) =============================================================
def test_resume_of_a_finished_run_leaves_it_alone_and_says_so(tmp_path, capsys):
    first = train_t(tmp_path, "trainer.max_epochs=2", "ckpt_every_n_steps=3", run="rR")
    before = {p.name: p.read_bytes() for p in (tmp_path / "rR").iterdir()}
    again = train_t(tmp_path, "trainer.max_epochs=1", "resume=true", "ckpt_every_n_steps=3", run="rR")
    assert "already holds a finished run (8 steps): resume=true leaves it as it is" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (tmp_path / "rR").iterdir()} == before
    assert again["steps"] == first["steps"] == 8 and again["run_dir"] == first["run_dir"]
    with pytest.raises(ValueError, match="belongs to another configuration"):  # another config: refused, not returned
        train_t(tmp_path, "seed=5", "resume=true", run="rR")


def test_resume_continues_a_finished_run_only_when_the_trainer_limits_allow_more_steps():
    saved = {"trainer": {"max_epochs": 2, "max_steps": -1}}
    assert not runs.trains_further({"trainer": {"max_epochs": 1, "max_steps": -1}}, saved, 36)  # the probe: left alone
    assert not runs.trains_further({"trainer": {"max_epochs": 2, "max_steps": -1}}, saved, 36)  # the same command again
    assert runs.trains_further({"trainer": {"max_epochs": 4, "max_steps": -1}}, saved, 36)  # more epochs: continued
    assert not runs.trains_further({"trainer": {"max_epochs": 4, "max_steps": 30}}, saved, 36)  # capped below its steps
    assert runs.trains_further({"trainer": {"max_epochs": -1, "max_steps": 50}}, {"trainer": {"max_steps": 40}}, 40)


def test_an_overwrite_killed_midway_resumes_from_its_own_checkpoint(tmp_path, monkeypatch):
    from saebasis.config import resolve_run_dir, to_dict
    from saebasis.training import module

    train_t(tmp_path, "ckpt_every_n_steps=1", run="rB")  # the finished first run: 4 steps
    real_step = module.SteeringModule.step

    def killed(self, batch, stage):
        if stage == "train" and self.global_step >= 6:
            raise KeyboardInterrupt  # stands in for kill -9 at step 6 of the overwriting run
        return real_step(self, batch, stage)

    monkeypatch.setattr(module.SteeringModule, "step", killed)
    with pytest.raises((KeyboardInterrupt, SystemExit, Exception)):
        train_t(tmp_path, "overwrite=true", "trainer.max_epochs=4", "ckpt_every_n_steps=1", run="rB")
    monkeypatch.setattr(module.SteeringModule, "step", real_step)
    assert load_run(tmp_path / "rB").metrics["steps"] == 4  # the finished run survived the killed overwrite
    assert sorted(p.name for p in (tmp_path / "rB.ckpt").glob("*.ckpt")) == ["last.ckpt"]  # no last-v1 collision
    cfg = resolve_run_dir(
        to_dict(
            compose("train", t_overrides(tmp_path, "rB", "resume=true", "trainer.max_epochs=4", "ckpt_every_n_steps=1"))
        )
    )
    plan = runs.plan_training(cfg)
    assert plan.mode == "resume" and torch.load(plan.resume_from, weights_only=True)["global_step"] == 6
    resumed = train_t(tmp_path, "resume=true", "trainer.max_epochs=4", "ckpt_every_n_steps=1", run="rB")
    assert resumed["steps"] == 16 and load_run(tmp_path / "rB").metrics["steps"] == 16
    assert not (tmp_path / "rB.lock").exists()


@pytest.mark.parametrize(
    "extra",
    [["lr=1e11"], ["intervention=residual_adaptor", "intervention.init_std=1e6"]],
    ids=["lr-1e11", "init_std-1e6"],
)
def test_a_diverged_but_finite_training_is_not_saved(tmp_path, extra):
    with pytest.raises(ValueError, match=r"moves the residual stream by .*x its own norm.*diverged.*Nothing was saved"):
        train_t(tmp_path, *extra)
    assert not (tmp_path / "run").exists()


def test_a_sane_training_moves_the_residual_far_less_than_the_divergence_bar(tmp_path):
    from saebasis.core.models import tiny_model
    from saebasis.core.stack import Stack

    result = train_t(tmp_path, "lr=0.05")
    loaded = tiny_model()
    stack = Stack(loaded.model, loaded.tokenizer, None, "blocks.1.hook_resid_post", None)
    ratio = runs.residual_change_ratio(result["run"].intervention, stack, ["the day", "a film", "the weather"])
    assert 0 < ratio < runs.DIVERGED_RATIO / 10


def test_a_full_disk_while_saving_an_overwrite_keeps_the_previous_run_and_no_lock(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    train_t(tmp_path)
    before = (tmp_path / "run" / "intervention.safetensors").read_bytes()

    def full(*_a, **_k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(runs, "save_file", full)
    with pytest.raises(OSError, match="is full .*previous run in .* is kept"):
        train_t(tmp_path, "overwrite=true", "seed=4")
    assert (tmp_path / "run" / "intervention.safetensors").read_bytes() == before
    assert not (tmp_path / "run.lock").exists() and not list(tmp_path.glob(".run.*"))


def test_validated_choices_are_the_ones_the_code_accepts():
    from saebasis.core.models import DTYPES
    from saebasis.training.module import OBJECTIVES
    from saebasis.validate import MODEL_DTYPES, TRAIN_CHOICES

    assert TRAIN_CHOICES["objective"] == OBJECTIVES and MODEL_DTYPES == DTYPES
