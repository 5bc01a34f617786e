from pathlib import Path

from saebasis.config import compose
from saebasis.experiments.demo import demo


def test_demo_end_to_end_on_tiny_model(tmp_path, tiny_stack, concept_dir, monkeypatch):
    monkeypatch.setenv("SAEBASIS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "sae" / "quality.json").write_text('{"explained_variance": 0.5}')
    tiny = tiny_stack
    stack = (
        "['model=tiny','sae.path=" + str(tmp_path / "sae") + "','sae.hook=blocks.1.hook_resid_post','sae.check=false',"
        "'batch_size=2','max_len=24']"
    )
    monkeypatch.setattr(
        "saebasis.experiments.demo._overrides", lambda cfg: [f"data={cfg['data']}", "logger=none", *tiny]
    )
    import saebasis.experiments.demo as d

    orig_compose = d.compose

    def shrink(name, overrides):
        extra = {
            "train": [
                "batch_size=2",
                "max_len=24",
                "trainer.max_epochs=1",
                "n_samples=1",
                "trainer.enable_progress_bar=false",
            ],
            "compare": [
                f"stack_overrides={stack}",
                "batch_size=2",
                "max_new_tokens=4",
                "n_val=2",
                "n_test=2",
                "n_neutral=2",
            ],
            "interpret": ["n_docs=20", "top_k=3"],
        }[name]
        overrides = [o for o in overrides if not o.startswith(("n_val", "n_test", "n_neutral", "max_new_tokens"))]
        return orig_compose(name, overrides + extra)

    monkeypatch.setattr(d, "compose", shrink)
    loads = []
    import saebasis.core.stack

    real_load_model = saebasis.core.stack.load_model
    monkeypatch.setattr(saebasis.core.stack, "load_model", lambda *a, **k: loads.append(a) or real_load_model(*a, **k))
    result = demo(compose("demo", [*tiny, f"data={concept_dir}", f"out_dir={tmp_path / 'demo'}", "logger=none"]))
    assert len(loads) == 1, f"train + compare loaded the model {len(loads)} times; the demo shares one stack"
    report = Path(result["report"]).read_text()
    assert "## 2. Comparison" in report and "sae_bias" in report
    quick = {"unsteered", "prompting", "sae_bias", "sae_adaptor_sparse", "residual_adaptor", "diffmean"}
    assert {r["method"] for r in result["compare"]["rows"]} == quick and all(
        r["n_seeds"] == 1 for r in result["compare"]["rows"]
    )
    latents = report.split("## 3.")[1].split("## 4.")[0]
    assert latents.count("\n| ") >= 2 and "| latent | change" in latents  # the bias's top latents, one row each
    readable = report.split("## 4.")[1]
    assert (
        "| sae_bias (demo step 2) | " in readable
        and "/" in readable.split("| sae_bias (demo step 2) | ")[1].split("|")[0]
    )
    timing = report.split("## 5. Where the time went")[1]
    assert "| train the SAE bias | " in timing and "| compare: diffmean | " in timing
    assert (tmp_path / "demo" / "interpret" / "report.html").exists()
    assert (tmp_path / "demo" / "compare" / "score_vs_strength.png").exists()


def test_demo_autocast_reaches_compare_and_the_bias_training():
    from saebasis.config import to_dict
    from saebasis.experiments.demo import _precision

    assert _precision({"autocast": None}, "compare") == [] and _precision({}, "train") == []
    on = {"autocast": "bfloat16"}
    assert _precision(on, "compare") == ["autocast=bfloat16"] and _precision(on, "train") == [
        "trainer.precision=bf16-mixed"
    ]
    assert to_dict(compose("compare", _precision(on, "compare")))["autocast"] == "bfloat16"
    assert to_dict(compose("train", _precision(on, "train")))["trainer"]["precision"] == "bf16-mixed"
    assert to_dict(compose("demo", []))["autocast"] is None  # fp32 unless asked


def test_full_demo_compares_the_published_method_set(tmp_path):
    """full=true: the comparison its published table was measured with (the ten methods, two seeds, DiffMean and
    PCA from [2, 4, 8]); the default: the quick demo's six methods, one seed."""
    from saebasis.config import to_dict
    from saebasis.experiments.demo import demo_compare_cfg

    full = demo_compare_cfg(to_dict(compose("demo", ["full=true", "logger=none"])), tmp_path)
    assert set(full["methods"]) == {
        "unsteered",
        "prompting",
        "sae_bias",
        "sae_bias_dense",
        "sae_adaptor_sparse",
        "sae_adaptor_lowrank",
        "residual_adaptor",
        "diffmean",
        "pca",
        "sara",
    }
    assert (
        full["seeds"] == [0, 1]
        and full["methods"]["diffmean"]["strengths"] == [2, 4, 8] == full["methods"]["pca"]["strengths"]
    )
    assert full["methods"]["sae_bias"] == {"kind": "run", "strengths": [0.5, 1, 2, 4]}  # the demo's own bias, in memory
    quick = demo_compare_cfg(to_dict(compose("demo", ["logger=none"])), tmp_path)
    assert list(quick["methods"]) == [
        "unsteered",
        "prompting",
        "sae_bias",
        "sae_adaptor_sparse",
        "residual_adaptor",
        "diffmean",
    ]
    assert quick["seeds"] == [0]
