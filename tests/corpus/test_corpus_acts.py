"""The activation cache SAEs train from: captured during generation == a fresh forward pass, resumable, shuffled
passes."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from saebasis.core import hooks
from saebasis.core.models import tiny_model
from saebasis.corpus.acts import (
    PREFIX_EVERY,
    CachedActivations,
    GenerationCapture,
    acts_path,
    build_cache,
    cached_ok,
    hook_name,
    keep_mask,
    shard_activations,
    template_prefix,
)
from saebasis.corpus.build import build_corpus, read_shards

KW = dict(shard_size=4, max_new_tokens=12, batch_size=4)


def test_keep_mask_drops_special_tokens_and_the_shared_opening_unless_asked():
    special = torch.tensor([0, 1, 2])
    ids = torch.tensor([1, 7, 8, 2, 9, 10, 0])
    assert keep_mask(ids, [1, 7, 8], special, keep_prefix=False).tolist() == [
        False,
        False,
        False,
        False,
        True,
        True,
        False,
    ]
    assert keep_mask(ids, [1, 7, 8], special, keep_prefix=True).tolist() == [
        False,
        True,
        True,
        False,
        True,
        True,
        False,
    ]
    assert keep_mask(ids, [1, 5], special, keep_prefix=False).tolist() == [False, True, True, False, True, True, False]


def test_activations_captured_while_generating_equal_a_forward_pass_over_the_generated_tokens(tmp_path):
    lm = tiny_model()
    layers = [0, 2]
    tok = lm.tokenizer
    capture = GenerationCapture(tok, layers, tmp_path / "acts")
    chats = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in ("hello there", "a much longer prompt here")
    ]
    batch = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False)  # left-padded
    torch.manual_seed(0)
    with capture.recording(lm.model):
        out = lm.model.generate(**batch, max_new_tokens=10, do_sample=True, pad_token_id=tok.pad_token_id)
    capture.take(out, [0, 1], batch["attention_mask"])
    capture.write(0, [{"id": 0, "text": "a"}, {"id": 1, "text": "b"}])
    saved = load_file(acts_path(tmp_path / "acts", 0))
    assert set(saved) == {hook_name(0), hook_name(2), "token_ids"}
    n = saved["token_ids"].shape[0]
    assert n > 0 and all(saved[hook_name(L)].shape == (n, 32) for L in layers)
    # a plain forward pass over the generated tokens gives the same residuals at the kept positions
    fed = out[:, :-1]  # the last sampled token is never fed back
    mask = torch.cat([batch["attention_mask"], (fed[:, batch["input_ids"].shape[1] :] != -1).long()], 1)
    pads = (batch["attention_mask"] == 0).sum(1)
    special = torch.tensor(tok.all_special_ids)
    for L in layers:
        full = hooks.run_to_hook(lm.model, hook_name(L), input_ids=fed, attention_mask=mask)
        want, want_tokens = [], []
        for row in range(2):
            ids = fed[row, int(pads[row]) :]
            keep = keep_mask(ids, template_prefix(tok), special, keep_prefix=row % PREFIX_EVERY == 0)
            want.append(full[row, int(pads[row]) :][keep])
            want_tokens.append(ids[keep])
        torch.testing.assert_close(saved[hook_name(L)].float(), torch.cat(want), atol=2e-3, rtol=2e-3)
        assert torch.equal(saved["token_ids"].long(), torch.cat(want_tokens))
    assert not torch.isin(saved["token_ids"].long(), special).any()


def test_build_corpus_with_capture_writes_training_caches_only(tmp_path):
    lm = tiny_model()
    capture = GenerationCapture(lm.tokenizer, [1], tmp_path / "acts")
    rows = build_corpus(lm.model, lm.tokenizer, tmp_path / "corpus", 10, capture=capture, **KW)
    assert acts_path(tmp_path / "acts", 0).exists() and not acts_path(tmp_path / "acts", 9).exists()
    shard0 = [r for r in rows if r["id"] < KW["shard_size"]]
    assert cached_ok(tmp_path / "acts", 0, shard0, [hook_name(1)])
    assert not cached_ok(tmp_path / "acts", 0, shard0, [hook_name(2)])  # a layer it does not hold


def test_build_cache_fills_missing_training_shards_skips_held_out_and_rebuilds_stale_ones(tmp_path):
    lm = tiny_model()
    build_corpus(lm.model, lm.tokenizer, tmp_path / "corpus", 11, **KW)
    files = build_cache(lm.model, lm.tokenizer, tmp_path / "corpus", tmp_path / "acts", [1])
    assert [f.name for f in files] == [f"shard-{i:05d}.safetensors" for i in range(11) if i != 9]
    assert not acts_path(tmp_path / "acts", 9).exists()
    before = acts_path(tmp_path / "acts", 3).stat().st_mtime_ns
    build_cache(lm.model, lm.tokenizer, tmp_path / "corpus", tmp_path / "acts", [1])
    assert acts_path(tmp_path / "acts", 3).stat().st_mtime_ns == before  # resumed: nothing recomputed
    acts_path(tmp_path / "acts", 3).write_bytes(b"corrupt")
    build_cache(lm.model, lm.tokenizer, tmp_path / "corpus", tmp_path / "acts", [1])
    assert cached_ok(
        tmp_path / "acts", 3, [r for r in read_shards(tmp_path / "corpus") if 12 <= r["id"] < 16], [hook_name(1)]
    )


def test_the_shared_opening_is_kept_in_one_document_of_prefix_every():
    lm = tiny_model()
    prefix = template_prefix(lm.tokenizer)
    assert len(prefix) > 0
    chat = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    doc = {"text": chat + "ok"}
    _, with_prefix = shard_activations(lm.model, lm.tokenizer, [{**doc, "id": 0}], [0])
    _, without = shard_activations(lm.model, lm.tokenizer, [{**doc, "id": 1}], [0])
    _, again = shard_activations(lm.model, lm.tokenizer, [{**doc, "id": PREFIX_EVERY}], [0])
    kept_prefix = [t for t in prefix if t not in lm.tokenizer.all_special_ids]
    assert with_prefix.tolist() == kept_prefix + without.tolist() and torch.equal(again, with_prefix)


def test_cached_activations_yield_every_token_once_per_pass_in_a_new_order(tmp_path):
    from safetensors.torch import save_file

    acts = torch.arange(40, dtype=torch.float16)[:, None].repeat(1, 3)
    save_file({"h": acts, "token_ids": torch.zeros(40, dtype=torch.int32)}, str(tmp_path / "a.safetensors"))
    data = CachedActivations([tmp_path / "a.safetensors"], "h", batch_tokens=8, seed=0)
    first = torch.cat([next(data) for _ in range(5)])[:, 0]
    second = torch.cat([next(data) for _ in range(5)])[:, 0]
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(40))
    assert first.tolist() != second.tolist() and data.passes == 2
    try:
        CachedActivations([tmp_path / "a.safetensors"], "blocks.9.hook_resid_post", 8)
    except ValueError as e:
        assert "blocks.9.hook_resid_post" in str(e) and "rebuild" in str(e)
    else:
        raise AssertionError("a missing hook must be an error")
