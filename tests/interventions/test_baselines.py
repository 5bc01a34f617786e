import pytest
import torch

from saebasis.config import compose
from saebasis.core import hooks
from saebasis.core.activations import collect
from saebasis.interventions import build
from saebasis.interventions.sara import reduced, sara_delta
from saebasis.runs import load_run, save_run
from saebasis.training.fit import fit_baseline

D = 32


def test_reduced_history_shapes_and_full_rank_reconstruction():
    x = torch.randn(5, D)  # T=5 tokens
    r = reduced(x, 3)
    assert r.shape == (D, 3)
    u, s, vh = torch.linalg.svd(x.T, full_matrices=False)
    full = reduced(x, 5)  # full rank: R V^T == X
    assert torch.allclose(full @ vh, x.T, atol=1e-5)
    assert torch.allclose(full, u * s, atol=1e-6)


def test_sara_hand_computed_three_token_example():
    # d_model = 2, histories are already diagonal so the SVD is readable by hand.
    x_o = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # T=3: X_o = [[3,0,0],[0,1,0]]
    x_a = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # U = I, S = (2, 1)
    x_r = torch.tensor([[0.0, 2.0], [1.0, 0.0]])  # neuron 1 dominates: U = [[0,1],[1,0]] up to sign, S = (2, 1)
    r_o, r_a, r_r = reduced(x_o, 2, True), reduced(x_a, 2, True), reduced(x_r, 2, True)
    # R_o = [[3,0],[0,1]], R_a = [[2,0],[0,1]], R_r = [[0,1],[2,0]]
    assert torch.allclose(r_o, torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(r_r, torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    # neuron 0: cos((3,0),(2,0)) = 1, cos((3,0),(0,1)) = 0 -> Delta 1;
    # neuron 1: cos((0,1),(0,1)) = 1, cos((0,1),(2,0)) = 0 -> 1
    assert torch.allclose(sara_delta(r_o, r_a, r_r), torch.tensor([1.0, 1.0]))
    # swapping attract and repel flips the sign
    assert torch.allclose(sara_delta(r_o, r_r, r_a), torch.tensor([-1.0, -1.0]))


def test_sara_hand_computed_steer_with_rotated_repel():
    # X_o (d_model=2, T=3) = [[3,0,0],[0,1,0]]: U = I, S = (3, 1) -> R_o = [[3,0],[0,1]].
    # X_a = [[2,0],[0,1]] -> R_a = [[2,0],[0,1]].
    # X_r = U diag(2, 1) with U = [[0.6, 0.8],[0.8, -0.6]] (signs: largest |entry| of each column positive)
    #     = [[1.2, 0.8],[1.6, -0.6]] -> R_r = X_r.  k = min(3, 2, 2) = 2.
    # neuron 0: cos((3,0),(2,0)) = 1;  cos((3,0),(1.2,0.8)) = 1.2/sqrt(2.08) = 0.832050 -> Delta_0 = 0.167950
    # neuron 1: cos((0,1),(0,1)) = 1;  cos((0,1),(1.6,-0.6)) = -0.6/sqrt(2.92) = -0.351123 -> Delta_1 = 1.351123
    # c = 0.5: scales 1.083975 and 1.675562, so X'_o = [[3.251925, 0, 0], [0, 1.675562, 0]].
    x_o = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # history [T, d_model]
    x_a = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    x_r = torch.tensor([[1.2, 1.6], [0.8, -0.6]])
    sara = build("sara", {"mode": "stable", "sink": "include"}, 2).fit_histories([x_a], [x_r])
    assert torch.allclose(sara.r_repel, torch.tensor([[1.2, 0.8], [1.6, -0.6]]), atol=1e-6)
    out = sara(x_o[None], 0.5)
    assert sara.k_seen == [2]
    assert torch.allclose(sara._delta[0], torch.tensor([0.167950, 1.351123]), atol=1e-5)
    assert torch.allclose(out[0], torch.tensor([[3.251925, 0.0], [0.0, 1.675562], [0.0, 0.0]]), atol=1e-5)


@pytest.mark.parametrize("mode", ["faithful", "stable"])
def test_sara_attract_equals_repel_is_identity(mode):
    hist = [torch.randn(4, D), torch.randn(6, D)]
    sara = build("sara", {"mode": mode}, D).fit_histories(hist, hist)
    h = torch.randn(1, 5, D)
    assert torch.equal(sara(h, 2.0), h)


def test_sara_faithful_decodes_with_k1_and_rejects_batches(model, tokenizer):
    sara = build("sara", {"mode": "faithful", "sink": "include"}, D).fit_histories(
        [torch.randn(6, D)], [torch.randn(6, D)]
    )
    ids = torch.tensor([[4, 5, 6, 7]])
    with hooks.attach(model, "blocks.1.hook_resid_pre", sara):
        model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert sara.k_seen == [4, 1, 1]  # prefill k = T_o = 4, then one token per cached step
    with pytest.raises(ValueError, match="faithful is batch size 1"):
        sara(torch.randn(2, 3, D))


def test_sara_stable_is_fixed_after_prompt():
    sara = build("sara", {"mode": "stable"}, D).fit_histories([torch.randn(8, D)], [torch.randn(8, D)])
    h = torch.randn(2, 6, D)
    sara(h)
    delta = sara._delta.clone()
    step = torch.randn(2, 1, D)
    out = sara(step)  # decode step: Delta unchanged
    assert torch.equal(sara._delta, delta)
    assert torch.allclose(out, step * (1 + delta[:, None, :]))


def test_sara_stable_masks_left_padding():
    sara = build("sara", {"mode": "stable"}, D).fit_histories([torch.randn(8, D)], [torch.randn(8, D)])
    short, long = torch.randn(1, 3, D), torch.randn(1, 5, D)
    alone = sara(short)
    sara.begin_generation(None)
    padded = torch.cat([torch.cat([torch.randn(1, 2, D), short], 1), long])  # row 0 left-padded by 2
    sara.begin_generation(torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))
    both = sara(padded)
    assert torch.allclose(both[0, 2:], alone[0], atol=1e-6)


def test_sara_n_components_caps_k():
    sara = build("sara", {"mode": "faithful", "n_components": 2}, D).fit_histories(
        [torch.randn(6, D)], [torch.randn(6, D)]
    )
    sara(torch.randn(1, 5, D))
    assert sara.k_seen == [2] and sara.r_attract.shape == (D, 2)
    with pytest.raises(ValueError, match="n_components must be >= 1"):
        build("sara", {"n_components": 0}, D)


def test_diffmean_recovers_planted_vector():
    neg = torch.randn(20, D)
    v = torch.randn(D)
    iv = build("diffmean", {}, D).fit_means(neg + v, neg)
    assert torch.allclose(iv.v, v, atol=1e-5)
    h = torch.randn(1, 3, D)
    assert torch.allclose(iv(h), h + v, atol=1e-5)


def test_pca_recovers_planted_direction_with_sign():
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(D), dim=0)
    neg = torch.randn(50, D)
    pos = neg + (2.0 + 0.1 * torch.randn(50, 1)) * u + 0.01 * torch.randn(50, D)
    iv = build("pca", {}, D).fit_means(pos, neg)
    direction = torch.nn.functional.normalize(iv.v, dim=0)
    assert direction @ u > 0.99 and abs(iv.v.norm() - 2.0) < 0.1
    iv_flipped = build("pca", {}, D).fit_means(neg, pos)
    assert torch.nn.functional.normalize(iv_flipped.v, dim=0) @ u < -0.99


def fitted(method: str):
    torch.manual_seed(1)
    if method == "sara":
        return build("sara", {}, D).fit_histories([torch.randn(7, D)], [torch.randn(9, D)], [torch.randn(5, D)])
    return build(method, {}, D).fit_means(torch.randn(10, D) + 1, torch.randn(10, D))


@pytest.mark.parametrize("method", ["diffmean", "pca", "sara"])
def test_baseline_identity_at_zero_and_bit_identical_round_trip(method, model, tmp_path):
    iv = fitted(method)
    h = torch.randn(1, 4, D)
    assert iv(h, 0.0) is h
    strength = 0.7 if method == "sara" else 3.0
    before = iv(h, strength)
    assert not torch.equal(before, h)
    ids = torch.tensor([[4, 5, 6, 7, 8]])
    with hooks.steering(model, "blocks.1.hook_resid_pre", iv, strength):  # generate with KV cache
        tokens = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    save_run(tmp_path / "run", iv, {"model": {"name": "tiny"}, "hook": "blocks.1.hook_resid_pre", "sae": None})
    loaded = load_run(tmp_path / "run").intervention
    assert type(loaded) is type(iv)
    for name, tensor in iv.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert torch.equal(loaded(h, strength), before)
    with hooks.steering(model, "blocks.1.hook_resid_pre", loaded, strength):
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0), tokens)


def test_collect_positions(model, tokenizer):
    prompts, completions = ["the movie", "a day is very good"], ["great film", "bad"]
    kw = dict(
        model=model, tokenizer=tokenizer, hook="blocks.1.hook_resid_post", prompts=prompts, completions=completions
    )
    comp = collect(positions="completion", **kw)
    assert [a.shape for a in comp] == [(2, D), (1, D)]
    last = collect(positions="last", **kw)
    assert all(a.shape == (1, D) for a in last) and torch.allclose(last[1], comp[1])
    alone = collect(positions="all", batch_size=1, **kw)  # no padding
    batched = collect(positions="all", batch_size=2, **kw)  # row 1 is longer, row 0 left-padded
    assert [a.shape[0] for a in alone] == [a.shape[0] for a in batched]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(alone, batched))


def test_collect_left_padded_rows_under_learned_absolute_positions(tokenizer):
    """GPT-2 adds a learned embedding per position id: a left-padded row must count its positions from its first
    real token (as generate does), or its activations differ from the same text alone."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=D, n_layer=2, n_head=2)).eval()
    kw = dict(
        model=gpt2,
        tokenizer=tokenizer,
        hook="blocks.1.hook_resid_post",
        prompts=["the movie", "a day is very good"],
        completions=["great film", "bad"],
        positions="all",
    )
    alone, batched = collect(batch_size=1, **kw), collect(batch_size=2, **kw)  # row 0 left-padded in the batch
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(alone, batched))


@pytest.mark.parametrize("method", ["diffmean", "pca", "sara"])
def test_fit_baseline_end_to_end_round_trip(method, concept_dir, tmp_path, tiny_stack):
    hook = "blocks.2.hook_resid_pre" if method == "sara" else "blocks.1.hook_resid_post"
    cfg = compose(
        "fit_baseline",
        [*tiny_stack, f"intervention={method}", f"data={concept_dir}", f"hook={hook}", f"run_dir={tmp_path / 'run'}"],
    )
    result = fit_baseline(cfg)
    run = load_run(result["run_dir"])
    assert run.cfg["method"] == method and run.metrics["n_pairs"] == 6
    h = torch.randn(1, 4, D)
    assert run.intervention(h, 0.0) is h  # strength 0: identity
    scores = run.intervention.latent_scores()
    assert scores is not None and scores.shape == (64,)


def test_fit_baseline_validates_before_heavy_work(concept_dir, tmp_path):
    from saebasis.validate import ConfigError

    base = ["model=tiny", "sae=none", f"data={concept_dir}", f"run_dir={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match="layer 7 is out of range"):
        fit_baseline(compose("fit_baseline", base + ["hook=blocks.7.hook_resid_post"]))
    with pytest.raises(ConfigError, match="positions must be completion"):
        fit_baseline(compose("fit_baseline", base + ["hook=blocks.1.hook_resid_post", "intervention.positions=middle"]))
    assert not (tmp_path / "run").exists()


def test_sara_leaves_the_attention_sink_out_of_x_o():
    """A planted first token 1000x the others' norm: with sink=exclude Delta is the one computed without that
    token (the sink never decides it); with sink=include the first singular direction is the sink's."""
    torch.manual_seed(0)
    sara = build("sara", {"mode": "stable"}, D).fit_histories([torch.randn(8, D)], [torch.randn(8, D)])
    rest = torch.randn(5, D)
    sink = torch.zeros(1, D)
    sink[0, 3] = 1000.0
    with_sink = torch.cat([sink, rest])[None]  # [1, 6, D]
    sara(with_sink, 1.0)
    delta_excluded = sara._delta.clone()
    sara.begin_generation(None)
    sara(rest[None], 1.0)
    assert torch.allclose(delta_excluded, sara._delta_of(rest, align=True)[None], atol=1e-6)
    literal = build("sara", {"mode": "stable", "sink": "include"}, D)
    literal.load_state_dict(sara.state_dict())
    literal(with_sink, 1.0)
    assert not torch.allclose(literal._delta, delta_excluded, atol=1e-3)


def test_diffmean_last_experiment_reads_the_last_token(concept_dir, tmp_path):
    """experiment=diffmean_last (CAA's read position) fits v from the pairs' last tokens only."""
    from saebasis.core.stack import load_stack
    from saebasis.data import load_concept

    cfg = compose(
        "fit_baseline",
        [
            "experiment=diffmean_last",
            "model=tiny",
            "sae=none",
            f"data={concept_dir}",
            "hook=blocks.1.hook_resid_post",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    run = load_run(fit_baseline(cfg)["run_dir"])
    assert run.cfg["config"]["intervention"]["positions"] == "last"
    pairs, stack = load_concept(str(concept_dir)).pairs, load_stack(cfg)
    kw = dict(
        model=stack.model,
        tokenizer=stack.tokenizer,
        hook="blocks.1.hook_resid_post",
        prompts=[p.prompt for p in pairs],
        positions="last",
        max_len=96,
    )
    pos = torch.cat(collect(completions=[p.positive for p in pairs], **kw))  # [n, d_model]
    neg = torch.cat(collect(completions=[p.negative for p in pairs], **kw))
    assert torch.allclose(run.intervention.v, pos.mean(0) - neg.mean(0), atol=1e-5)


# -- sae_latent: the latent(s) the concept turns on, decoder direction added (AxBench's SAE row) ----------------
def test_sae_latent_picks_the_planted_latent_and_adds_its_decoder_row(sae):
    """Positives = negatives pushed along latent j's encoder column: j rises most, v = D_j W_dec[j] exactly, and the
    change it reports in its own basis is s D_j on latent j alone."""
    from saebasis.interventions.base import FitData

    torch.manual_seed(0)
    j = 7
    push = 3.0 * torch.nn.functional.normalize(sae.W_enc[:, j], dim=0)  # [d_model]
    neg = [torch.randn(5, D) * 0.1 for _ in range(6)]
    pos = [x + push for x in neg]
    iv = build("sae_latent", {"k": 1}, D, sae).fit(FitData(pos, neg, []))
    codes = lambda xs: sae.encode(torch.cat(xs)).mean(0)
    diff = codes(pos) - codes(neg)
    assert iv.latents.tolist() == [j] == [int(diff.argmax())]
    assert torch.allclose(iv.gains, diff[[j]], atol=1e-5)
    assert torch.allclose(iv.v, diff[j] * sae.W_dec[j], atol=1e-5)
    h = torch.randn(2, 3, D)
    assert iv(h, 0.0) is h and torch.allclose(iv(h, 2.0), h + 2.0 * iv.v, atol=1e-6)
    change, how = iv.latent_change(h[0], sae, 2.0)
    assert how == "intervention" and change.shape == (3, sae.d_sae)
    assert torch.equal(change[:, j], torch.full((3,), 2.0 * float(iv.gains[0]))) and int((change != 0).sum()) == 3
    top3 = build("sae_latent", {"k": 3}, D, sae).fit(FitData(pos, neg, []))
    assert top3.latents.tolist() == diff.topk(3).indices.tolist() and top3.describe()["latents_written"] == 3


def test_sae_latent_refuses_what_it_cannot_fit(sae):
    from saebasis.interventions.base import FitData

    with pytest.raises(ValueError, match="k and chunk must be >= 1"):
        build("sae_latent", {"k": 0}, D, sae)
    with pytest.raises(ValueError, match="needs an SAE|uses an SAE|SAE"):
        build("sae_latent", {}, D, None)
    same = [torch.randn(4, D)]
    with pytest.raises(ValueError, match="more active on the positive completions"):
        build("sae_latent", {"k": 2}, D, sae).fit(FitData(same, same, []))  # nothing rises: no latent to pick


def test_sae_latent_fit_baseline_end_to_end_round_trip(concept_dir, tmp_path, tiny_stack):
    cfg = compose(
        "fit_baseline", [*tiny_stack, "experiment=sae_latent", f"data={concept_dir}", f"run_dir={tmp_path / 'run'}"]
    )
    result = fit_baseline(cfg)
    run = load_run(result["run_dir"])
    assert run.cfg["method"] == "sae_latent" and result["latents_written"] == 1
    iv = run.intervention
    assert torch.allclose(iv.v, iv.gains[0] * iv.sae.W_dec[iv.latents[0]], atol=1e-6)
    assert int((iv.latent_scores() > 0).sum()) == 1
