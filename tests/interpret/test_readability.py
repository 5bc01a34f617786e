"""Which runs of a comparison the readability table reads: every seed-0 SAE-basis run, trained or fitted."""

import json
import os

from saebasis.interpret.readability import read_runs


def make_run(runs, name: str, method: str) -> None:
    run = runs / name
    (run / "interpret").mkdir(parents=True)
    (run / "cfg.json").write_text(json.dumps({"method": method, "config": {}}))
    (run / "intervention.safetensors").write_bytes(b"")
    report = {
        "coverage": {"covered": 10, "of": 10, "min_contexts": 5},
        "alignment": {"diff": 0.1, "ci95": [0.02, 0.2], "judge": "minilm", "positive_share": {}},
    }
    (run / "interpret" / "report.json").write_text(json.dumps(report))
    weights = (run / "intervention.safetensors").stat().st_mtime
    os.utime(run / "interpret" / "report.json", (weights + 10, weights + 10))  # newer than the weights: reused


def test_read_runs_reads_trained_seed0_and_fitted_sae_runs_only(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "bias-seed0", "sae_bias")  # trained, SAE basis: read
    make_run(runs, "bias-seed1", "sae_bias")  # another seed: not read
    make_run(runs, "one_latent", "sae_latent")  # fitted (one run, no seed suffix), SAE basis: read
    make_run(runs, "dm", "diffmean")  # fitted, residual stream: not read
    make_run(runs, "dm-seed0", "diffmean")  # trained-style name, residual stream: not read
    (runs / "bias-seed0.ckpt").mkdir()  # a Lightning checkpoint folder: not a run
    found = read_runs(runs, tmp_path)
    assert sorted(found) == ["bias", "one_latent"]
    assert found["one_latent"]["coverage"] == "10/10" and found["one_latent"]["ci95"] == [0.02, 0.2]
    assert found["bias"]["report"] == os.path.join("runs", "bias-seed0", "interpret", "report.html")
