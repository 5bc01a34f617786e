"""sae_latent's selection by effect (select=contrast|output|delta_conf): a planted output latent that rises less
than another latent is skipped by contrast and chosen by output score; stored table scores are used when the
SAE's folder has them for this model; weights stay the contrasts; bad configs are refused."""

import gzip
import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save as save_bytes

from saebasis.config import compose
from saebasis.core.sae import SAEBasis
from saebasis.interventions import build
from saebasis.interventions.base import FitData
from saebasis.interventions.latent_effect import EffectSettings, effect_scores, fingerprint
from saebasis.runs import load_run
from saebasis.training.fit import fit_baseline
from tests.conftest import D_MODEL
from tests.interventions.test_latent_effect import PLANTED, plant

OTHER = 20


def contrast_data(sae, seed: int = 0) -> FitData:
    """Negatives at random; positives raise latent OTHER by 4 and PLANTED by 2 (through their encoder columns)."""
    g = torch.Generator().manual_seed(seed)
    neg = torch.randn(64, D_MODEL, generator=g)
    W_enc = sae.W_enc.detach()
    push = sum(c * W_enc[:, i] / W_enc[:, i].pow(2).sum() for i, c in ((OTHER, 4.0), (PLANTED, 2.0)))
    return FitData([neg + push], [neg], [])


def fitted(sae, model, tokenizer, **cfg):
    iv = build("sae_latent", cfg, D_MODEL, sae)
    iv.prepare(SimpleNamespace(model=model, tokenizer=tokenizer), None, 16)
    return iv.fit(contrast_data(sae))


def diff_of(sae, data: FitData) -> torch.Tensor:
    return sae.encode(data.positive[0]).mean(0) - sae.encode(data.negative[0]).mean(0)


def test_output_selection_picks_the_planted_latent_contrast_does_not(model, tokenizer, sae):
    plant(model, tokenizer, sae)
    diff = diff_of(sae, contrast_data(sae))
    contrast = fitted(sae, model, tokenizer)
    assert int(contrast.latents[0]) == int(diff.argmax()) != PLANTED
    assert bool(diff[PLANTED] > 0)
    by_output = fitted(sae, model, tokenizer, select="output", candidates=64)
    assert int(by_output.latents[0]) == PLANTED
    assert by_output.selection["score_source"] == "computed"
    assert float(by_output.gains[0]) == pytest.approx(float(diff[PLANTED]), rel=1e-5)  # the weight is the contrast
    assert torch.allclose(by_output.v, by_output.gains[0] * sae.W_dec[PLANTED], atol=1e-6)


def test_multi_latent_selection_is_top_k_by_score_among_positive_rises(model, tokenizer, sae):
    diff = diff_of(sae, contrast_data(sae))
    for select, name in (("output", "output_score"), ("delta_conf", "delta_conf")):
        iv = fitted(sae, model, tokenizer, select=select, k=3, candidates=10)
        cand = diff.topk(10).indices
        cand = cand[diff[cand] > 0]
        scores = effect_scores(model, tokenizer, sae, cand)[name]
        want = cand[scores.argsort(descending=True, stable=True)[:3]]
        assert iv.latents.tolist() == want.tolist()
        assert torch.allclose(iv.gains, diff[want], atol=1e-6)
        assert torch.allclose(iv.v, diff[want] @ sae.W_dec[want], atol=1e-5)


def test_contrast_output_weighs_each_rise_by_its_output_score(model, tokenizer, sae, tmp_path):
    """A table where the largest riser (OTHER) writes nothing, a small riser writes most, and PLANTED, rising less
    than OTHER, writes a little: rise x output picks PLANTED, output alone the small riser, contrast OTHER."""
    sae.sae.save_model(tmp_path / "sae")
    on_disk = SAEBasis.load(str(tmp_path / "sae"))
    diff = diff_of(on_disk, contrast_data(on_disk))
    cand = diff.topk(64).indices
    cand = cand[diff[cand] > 0]
    small = int(cand[-1])  # the smallest positive riser among the candidates
    assert diff[small] * 1.0 < diff[PLANTED] * 0.5 and small not in (OTHER, PLANTED)
    scores = torch.zeros(on_disk.d_sae)
    scores[OTHER], scores[PLANTED], scores[small] = 0.0, 0.5, 1.0
    folder = tmp_path / "sae" / "latents"
    folder.mkdir()
    (folder / "table.safetensors.gz").write_bytes(gzip.compress(save_bytes({"output_score": scores})))
    info = {"effect": {"fingerprint": fingerprint(model, on_disk, EffectSettings())}}
    (folder / "table.json").write_text(json.dumps(info))
    assert int(fitted(on_disk, model, tokenizer).latents[0]) == OTHER
    assert int(fitted(on_disk, model, tokenizer, select="output", candidates=64).latents[0]) == small
    both = fitted(on_disk, model, tokenizer, select="contrast_output", candidates=64, k=2)
    assert both.latents.tolist() == [PLANTED, small]
    want = [float(diff[PLANTED]) * 0.5, float(diff[small]) * 1.0]
    assert both.selection["scores"] == pytest.approx(want, rel=1e-4) and both.selection["score_source"] == "table"
    assert torch.allclose(both.gains, diff[[PLANTED, small]], atol=1e-6)  # weights stay the contrasts


def test_stored_table_scores_are_used_for_the_matching_model_and_sae(model, tokenizer, sae, tmp_path):
    sae.sae.save_model(tmp_path / "sae")
    on_disk = SAEBasis.load(str(tmp_path / "sae"))
    scores = torch.zeros(sae.d_sae)
    scores[OTHER] = 1.0  # the table says OTHER is the best output latent
    folder = tmp_path / "sae" / "latents"
    folder.mkdir()
    tensors = save_bytes({"output_score": scores, "delta_conf": scores.clone()})
    (folder / "table.safetensors.gz").write_bytes(gzip.compress(tensors))
    info = {"effect": {"fingerprint": fingerprint(model, on_disk, EffectSettings())}}
    (folder / "table.json").write_text(json.dumps(info))
    iv = fitted(on_disk, model, tokenizer, select="output", candidates=64)
    assert int(iv.latents[0]) == OTHER and iv.selection["score_source"] == "table"
    (folder / "table.json").write_text(json.dumps({"effect": {"fingerprint": "another model"}}))
    assert fitted(on_disk, model, tokenizer, select="output", candidates=64).selection["score_source"] == "computed"


def test_bad_selection_configs_are_refused(sae):
    with pytest.raises(ValueError, match="contrast \\| output \\| delta_conf \\| contrast_output"):
        build("sae_latent", {"select": "outptu"}, D_MODEL, sae)
    with pytest.raises(ValueError, match="candidates >= k"):
        build("sae_latent", {"select": "output", "k": 5, "candidates": 3}, D_MODEL, sae)
    with pytest.raises(ValueError, match="fit-baseline"):
        build("sae_latent", {"select": "output"}, D_MODEL, sae).fit(contrast_data(sae))  # no model: never prepared


def test_select_output_from_the_cli_config(concept_dir, tmp_path, tiny_stack):
    cfg = compose(
        "fit_baseline",
        [
            *tiny_stack,
            "experiment=sae_latent",
            "intervention.select=output",
            "intervention.k=2",
            f"data={concept_dir}",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    result = fit_baseline(cfg)
    assert result["select"] == "output" and result["selection"]["score_source"] == "computed"
    scores = result["selection"]["scores"]
    assert len(scores) == 2 and scores[0] >= scores[1]
    run = load_run(result["run_dir"])
    assert run.intervention.latents.tolist() == result["latents"]
