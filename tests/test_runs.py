import json

import pytest
import torch

from saebasis.interventions import build
from saebasis.runs import load_run, save_run
from tests.conftest import D_MODEL


def _trained_bias(sae):
    iv = build("sae_bias", {"l1_coef": 0.0}, D_MODEL, sae)
    with torch.no_grad():
        iv.b.normal_()
    return iv


def test_save_load_reproduces_outputs_bit_for_bit(sae, tmp_path):
    iv = _trained_bias(sae)
    h = torch.randn(2, 4, D_MODEL)
    save_run(tmp_path / "run", iv, {"sae": None, "hook": sae.hook}, {"loss": 1.0})
    run = load_run(tmp_path / "run", sae=sae)
    assert torch.equal(run.intervention(h), iv(h))
    assert run.metrics == {"loss": 1.0}
    assert run.cfg["method"] == "sae_bias" and run.cfg["d_model"] == D_MODEL


def test_zero_strength_is_bit_identical(sae):
    iv = _trained_bias(sae)
    h = torch.randn(2, 4, D_MODEL)
    assert iv(h, 0.0) is h


def test_bad_strength_is_refused(sae):
    h = torch.randn(2, 4, D_MODEL)
    for bad in (float("nan"), float("inf"), True, "1", torch.tensor([[1.0]]), torch.tensor([1.0, float("nan")])):
        with pytest.raises(ValueError, match="strength"):
            _trained_bias(sae)(h, bad)


def test_unknown_method_and_field(sae):
    with pytest.raises(ValueError, match="Unknown intervention 'nope'"):
        build("nope", {}, D_MODEL, sae)
    with pytest.raises(ValueError, match=r"Unknown field\(s\) \['l2'\] for intervention 'sae_bias'"):
        build("sae_bias", {"l2": 1.0}, D_MODEL, sae)


def test_resave_replaces_atomically_and_failed_save_keeps_old(sae, tmp_path, monkeypatch):
    iv = _trained_bias(sae)
    save_run(tmp_path / "run", iv, {"sae": None}, {"v": 1})
    from saebasis import runs

    def crash(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(runs, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_run(tmp_path / "run", iv, {"sae": None}, {"v": 2})
    assert load_run(tmp_path / "run", sae=sae).metrics == {"v": 1}  # earlier result intact
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no half-written folder left behind


def test_planted_pickle_is_refused(sae, tmp_path):
    save_run(tmp_path / "run", _trained_bias(sae), {"sae": None})
    torch.save({"x": 1}, tmp_path / "run" / "evil.pt")
    with pytest.raises(ValueError, match="never pickles"):
        load_run(tmp_path / "run", sae=sae)


def test_corrupt_and_missing_files_are_explained(sae, tmp_path):
    save_run(tmp_path / "run", _trained_bias(sae), {"sae": None})
    (tmp_path / "run" / "intervention.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="is corrupt"):
        load_run(tmp_path / "run", sae=sae)
    (tmp_path / "run" / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_run(tmp_path / "run", sae=sae)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "missing")


def test_sae_bias_folds_to_one_vector(sae):
    iv = _trained_bias(sae)
    h = torch.randn(2, 4, D_MODEL)
    z = sae.encode(h)
    via_latents = sae.splice(h, z, z + iv.b)
    assert torch.allclose(iv(h), via_latents, atol=1e-5)
    assert torch.allclose(iv.folded(), iv.b @ sae.W_dec, atol=1e-5)
    assert json.loads(json.dumps(iv.config_dict()))["l1_coef"] == 0.0


def test_a_lock_held_on_another_host_is_never_taken_over(tmp_path):
    """On a shared filesystem (SLURM, several board workers) a pid that is dead here may be alive on its own host."""
    import socket

    from saebasis.runs import run_guard

    lock = tmp_path / "run.lock"
    lock.write_text("99999999 some-other-host")
    with pytest.raises(RuntimeError, match="on host some-other-host.*never taken over"):
        with run_guard(tmp_path / "run"):
            pass
    lock.write_text(f"99999999 {socket.gethostname()}")  # a dead pid on this host: taken over
    with run_guard(tmp_path / "run"):
        assert lock.read_text().split() == [str(__import__("os").getpid()), socket.gethostname()]
