"""Per-latent effect scores (interventions/latent_effect.py): a planted latent that writes one token's unembedding
has the highest output score; the batched scores equal a one-latent-at-a-time reference written the way Arad et
al.'s code computes them; input scores on hand-made contexts."""

import pytest
import torch

from saebasis.core import hooks
from saebasis.interventions.latent_effect import EffectSettings, effect_scores, input_scores, through_norm
from saebasis.interventions.sae_rows import SupportCache, write_rows

PLANTED = 7


def plant(model, tokenizer, sae, word: str = "movie", latent: int = PLANTED) -> int:
    """Point W_dec[latent] at `word`'s unembedding (through the final norm's weight), at the mean row norm."""
    target = tokenizer.convert_tokens_to_ids(word)
    W_U = model.get_output_embeddings().weight.detach()
    weight = model.model.norm.weight.detach()
    with torch.no_grad():
        row = W_U[target] / weight
        sae.sae.W_dec[latent] = row / row.norm() * sae.W_dec.norm(dim=-1).mean()
    return target


def reference(model, tokenizer, sae, latent: int, s: EffectSettings) -> tuple[float, float]:
    """(output score, delta_conf) of one latent: full forward with the SAE's decoded change added at the last
    position, every token ranked by argsort (as in technion-cs-nlp/saes-are-good-for-steering)."""
    ids = tokenizer(s.prompt, return_tensors="pt")["input_ids"]
    h = hooks.run_to_hook(model, sae.hook, input_ids=ids)
    amount = s.factor * float(sae.encode(h[0, -1]).max())
    row = write_rows(sae, torch.tensor([latent]), SupportCache())[0]
    W_U = model.get_output_embeddings().weight.detach()
    lens = (W_U @ through_norm(model, row)).topk(s.k).indices.tolist()
    with torch.no_grad():
        p0 = torch.softmax(model(input_ids=ids).logits[0, -1], -1)
        with hooks.attach(model, sae.hook, lambda x: x + amount * row, positions="last"):
            p = torch.softmax(model(input_ids=ids).logits[0, -1], -1)
    order = p.argsort(descending=True)
    best = min(int((order == t).nonzero()[0, 0]) for t in lens)
    return (1 - best / p.numel()) * float(p[lens].max()), float(p.max() - p0.max())


def test_planted_latent_has_the_highest_output_score(model, tokenizer, sae):
    target = plant(model, tokenizer, sae)
    out = effect_scores(model, tokenizer, sae, s=EffectSettings(k=5, batch_size=16))
    assert int(out["output_score"].argmax()) == PLANTED
    assert int(out["lens_ids"][PLANTED, 0]) == target
    assert out["output_score"].shape == out["delta_conf"].shape == (sae.d_sae,)
    assert bool(((out["output_score"] >= 0) & (out["output_score"] <= 1)).all())


def test_batched_scores_equal_the_one_latent_reference(model, tokenizer, sae):
    plant(model, tokenizer, sae)
    s = EffectSettings(k=5, batch_size=3)
    latents = torch.tensor([0, PLANTED, 11, 40, 63])
    out = effect_scores(model, tokenizer, sae, latents, s)
    for j, i in enumerate(latents.tolist()):
        ref_out, ref_conf = reference(model, tokenizer, sae, i, s)
        assert float(out["output_score"][j]) == pytest.approx(ref_out, rel=1e-4, abs=1e-6), i
        assert float(out["delta_conf"][j]) == pytest.approx(ref_conf, abs=1e-5), i


def test_no_active_latent_at_the_prompt_is_a_clear_error(model, tokenizer, sae):
    with torch.no_grad():
        sae.sae.b_enc.fill_(-1e4)
    with pytest.raises(ValueError, match="No SAE latent is active"):
        effect_scores(model, tokenizer, sae, torch.arange(4))
    with pytest.raises(ValueError, match="factor > 0"):
        EffectSettings(factor=0)


def test_input_score_is_the_share_of_contexts_peaking_on_a_lens_token():
    ctx_ptr = torch.tensor([0, 4, 4, 6])  # latent 0: 4 contexts, latent 1: none, latent 2: 2
    peaks = torch.tensor([5, 9, 5, 1, 8, 8])
    lens = torch.tensor([[5, 1], [5, 9], [2, 3]])
    got = input_scores(ctx_ptr, peaks, lens)
    assert got[0] == pytest.approx(0.75) and torch.isnan(got[1]) and got[2] == 0


def test_the_output_support_rule_ranks_candidates_by_output_score(stack, concept_dir, monkeypatch):
    """sae_adaptor's read_rule / write_rule = output: the planted latent leads, the scores are effect_scores' own, and
    only the EFFECT_CANDIDATES latents of largest contrast are candidates."""
    from saebasis.data import load_concept
    from saebasis.interventions import sae_support

    plant(stack.model, stack.tokenizer, stack.sae)
    concept = load_concept(concept_dir)
    got = sae_support.RULES["output"](stack, concept, 24)  # tiny SAE: every latent is a candidate
    want = effect_scores(stack.model, stack.tokenizer, stack.sae)["output_score"]
    assert int(got.argmax()) == PLANTED and torch.allclose(got, want, atol=1e-6)
    monkeypatch.setattr(sae_support, "EFFECT_CANDIDATES", 8)
    few = sae_support.RULES["delta_conf"](stack, concept, 24)
    contrast = sae_support.contrast_scores(stack, concept, 24)
    finite = torch.isfinite(few)
    assert int(finite.sum()) == 8 and set(finite.nonzero().flatten().tolist()) == set(contrast.topk(8).indices.tolist())


def test_an_effect_rule_cannot_pick_more_latents_than_its_candidates():
    from saebasis.interventions.sae_adaptor import SAEAdaptorConfig

    with pytest.raises(ValueError, match="write_rule=output chooses among the 256 latents"):
        SAEAdaptorConfig(k_out=300, write_rule="output")
    assert SAEAdaptorConfig(k_in=64, k_out=32, read_rule="output", write_rule="delta_conf").k_in == 64
