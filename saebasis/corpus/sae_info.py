"""`saebasis sae-info`: an SAE's quality on the model, measured now, beside the figures stored at training."""

from __future__ import annotations

import json

from saebasis.config import to_dict
from saebasis.core.models import load_model
from saebasis.core.sae import SAEBasis, check_compat, resolve_builtin
from saebasis.core.stack import CHECK_TEXTS, load_sae
from saebasis.corpus.build import default_corpus_dir, heldout_texts

FIELDS = [
    ("explained_variance", "explained variance"),
    ("l0", "mean L0 (active latents / token)"),
    ("dead_fraction", "dead-latent fraction"),
    ("ce_loss_clean", "CE loss, clean"),
    ("ce_loss_spliced", "CE loss, SAE spliced in"),
    ("ce_loss_zero", "CE loss, resid zero-ablated"),
    ("ce_loss_recovered", "CE loss recovered"),
    ("n_tokens", "tokens measured"),
]


def eval_texts(sae_cfg: dict, n_tokens: int, tokenizer) -> tuple[list[str], str]:
    """Held-out corpus documents up to `n_tokens` tokens, or fixed texts when no corpus is here."""
    texts = heldout_texts(default_corpus_dir(), tokenizer, n_tokens)
    if not texts:
        return CHECK_TEXTS, "saebasis.core.stack.CHECK_TEXTS (no corpus here)"
    return texts, f"held-out corpus shards of {default_corpus_dir()}"


def sae_info(cfg) -> dict:
    cfg = to_dict(cfg)
    basis: SAEBasis = load_sae(cfg["sae"])
    loaded = load_model(cfg["model"]["name"], cfg["model"].get("device", "cpu"))
    texts, source = eval_texts(cfg["sae"], cfg["n_tokens"], loaded.tokenizer)
    now = check_compat(basis, loaded.model, loaded.tokenizer, texts, max_len=cfg["max_len"], progress=True)._asdict()
    stored_path = resolve_builtin(cfg["sae"]["path"]) / "quality.json"
    stored = json.loads(stored_path.read_text()) if stored_path.exists() else {}
    print(
        f"SAE {basis.source} at {basis.hook}: d_model {basis.d_model}, d_sae {basis.d_sae}, "
        f"architecture {basis.sae.cfg.architecture()}"
    )
    print(
        f"measured now on {len(texts)} texts, {now['n_tokens']:,} tokens ({source}) | "
        f"stored at training ({stored_path.name}, "
        f"{stored.get('n_tokens', 0):,} held-out tokens)"
    )
    for key, label in FIELDS:
        fmt = (lambda v: f"{v:>10,.0f}") if key == "n_tokens" else (lambda v: f"{v:>10.4g}")
        print(f"  {label:<34} {fmt(now[key])}   {fmt(stored.get(key, float('nan')))}")
    return {"now": now, "stored": stored}
