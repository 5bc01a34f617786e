"""Per-latent effect scores: what amplifying one SAE latent does to the model's next-token distribution.

Every latent i is amplified once, at the last position of a neutral prompt ("From my experience,"), by adding
a x (dec(e_i) - dec(0)) to the residual at the SAE's hook -- the SAE's own reconstruction with z_i raised by a
and the error term kept, i.e. h + a W_eff[i] (sae_rows.write_rows). a = `factor` x the largest latent
activation at that position (Arad et al.'s AmplifySAEHook: one amount for every latent). Then, with p the
next-token distribution after amplification, p0 the one before, and L_i the `k` tokens the logit lens of
W_eff[i] promotes most (logits W_U N(W_eff[i]), N the linear part of the final norm):

  output score  (Arad, Mueller & Belinkov 2025, "SAEs Are Good for Steering -- If You Select the Right
                Features"; technion-cs-nlp/saes-are-good-for-steering, src/output_score.py)
                  (1 - min_{t in L_i} rank_p(t) / vocab) x max_{t in L_i} p(t)       rank 0 = the most likely token
  delta_conf    (Wang et al. 2025, "Does higher interpretability imply better utility?": "how much amplifying a
                feature changes the next-token distribution"): the change of the next-token confidence,
                  max_t p(t) - max_t p0(t)
                (read here as the top probability's change; the paper's code was not available to check against)
  input score   (Arad et al., src/input_score.py): share of the latent's max-activating corpus contexts whose
                peak token is in L_i (needs a corpus: computed with the per-latent table, interpret/table.py, from
                its up to 20 distinct contexts per latent; Arad et al. read up to 100 and skip latents with < 10)

Latents are scored `batch_size` at a time: the residual at the hook and the KV cache of the prompt's first P - 1
tokens are computed once; per latent only the last position runs, and only through the blocks after the hook
(hooks.skip_to_hook). The scores depend on the model, the SAE and these
settings only; `fingerprint` names them so a stored table is used only for the SAE and model it was built on.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import json
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors.torch import load as load_bytes
from torch import Tensor, nn

from saebasis.core import hooks
from saebasis.core.sae import SAEBasis, resolve_builtin
from saebasis.interventions.sae_rows import SupportCache, write_rows

NEUTRAL_PROMPT = "From my experience,"
SCORES = ("output_score", "input_score", "delta_conf")
FINAL_NORMS = (
    "model.norm",
    "transformer.ln_f",
    "gpt_neox.final_layer_norm",
    "model.final_layernorm",
    "model.decoder.final_layer_norm",
)


@dataclasses.dataclass
class EffectSettings:
    prompt: str = NEUTRAL_PROMPT
    """The neutral prompt whose last position is amplified (Arad et al.'s)."""
    factor: float = 10.0
    """Amount added = factor x the largest latent activation at the prompt's last position."""
    k: int = 20
    """Logit-lens tokens per latent (L_i)."""
    batch_size: int = 128
    """Latents scored per forward pass (memory only)."""

    def __post_init__(self) -> None:
        if not self.prompt or self.factor <= 0 or self.k < 1 or self.batch_size < 1:
            raise ValueError(
                f"effect settings out of range: {self}. Need a prompt, factor > 0, k >= 1, batch_size >= 1."
            )


# -- logit lens ------------------------------------------------------------------------------------
def final_norm(model: nn.Module) -> tuple[nn.Module | None, str]:
    """The final norm module and its dotted path (None, "" when the model has none)."""
    for path in FINAL_NORMS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.Module):
            return obj, path
    return None, ""


def through_norm(model: nn.Module, d: Float[Tensor, "*n d_model"]) -> Float[Tensor, "*n d_model"]:
    """The linear part of the final norm applied to direction(s) d (interpret/lens.py explains the choice)."""
    norm, _ = final_norm(model)
    if norm is None:
        return d
    if isinstance(norm, nn.LayerNorm):
        d = d - d.mean(-1, keepdim=True)
    weight = getattr(norm, "weight", None)
    if weight is None:
        return d
    weight = weight.detach().float().to(d.device)
    if getattr(model.config, "model_type", "").startswith("gemma"):
        weight = 1 + weight  # Gemma stores the RMSNorm scale as an offset from 1
    return d * weight


@torch.no_grad()
def lens_top(model: nn.Module, rows: Float[Tensor, "n d_model"], k: int) -> Int[Tensor, "n k"]:
    """Ids of the k tokens each row's logit lens promotes most."""
    W_U = model.get_output_embeddings().weight.detach().float()  # [vocab, d_model]
    logits = through_norm(model, rows.detach().float().to(W_U.device)) @ W_U.T  # [n, vocab]
    return logits.topk(min(k, W_U.shape[0]), dim=-1).indices


# -- output score and delta token confidence --------------------------------------------------------
def _last_logits(model: nn.Module, ids: Tensor, past=None) -> Float[Tensor, "batch vocab"]:
    """Next-token logits at the last position (the unembedding applied there only where the model allows)."""
    kw = {"past_key_values": past, "use_cache": True} if past is not None else {"use_cache": False}
    try:
        out = model(input_ids=ids, logits_to_keep=1, **kw)
    except TypeError:  # a model class without logits_to_keep
        out = model(input_ids=ids, **kw)
    return out.logits[:, -1].float()


def _prefix_cache(model: nn.Module, ids: Tensor):
    """The KV cache of every prompt token but the last (they are the same for every latent), or None."""
    if ids.shape[1] < 2:
        return None
    past = model(input_ids=ids[:, :-1], use_cache=True).past_key_values
    return past if hasattr(past, "batch_repeat_interleave") else None


def _amplified_logits(model, hook: str, ids: Tensor, h0: Tensor, shift: Tensor, past) -> Float[Tensor, "b vocab"]:
    """Next-token logits with shift [b, d_model] added to the residual at the last position (blocks upstream of
    the hook skipped; with a prefix cache only the last position runs, 1 token per latent instead of P)."""
    b = shift.shape[0]
    if past is None:
        h = h0.expand(b, -1, -1).clone()  # [b, P, d_model]
        h[:, -1] += shift.to(h.dtype)
        with hooks.skip_to_hook(model, hook, h):
            return _last_logits(model, ids.expand(b, -1))
    cache = copy.deepcopy(past)
    cache.batch_repeat_interleave(b)
    h = h0[:, -1:].expand(b, -1, -1) + shift[:, None].to(h0.dtype)  # [b, 1, d_model]
    with hooks.skip_to_hook(model, hook, h):
        return _last_logits(model, ids[:, -1:].expand(b, -1), cache)


@torch.no_grad()
def effect_scores(
    model: nn.Module,
    tokenizer,
    sae: SAEBasis,
    latents: Int[Tensor, " n"] | None = None,
    s: EffectSettings = EffectSettings(),
    progress: bool = False,
) -> dict[str, Tensor]:
    """{output_score, delta_conf, lens_ids} of `latents` (default: every latent); see the module docstring."""
    device = next(model.parameters()).device
    idx = torch.arange(sae.d_sae) if latents is None else torch.as_tensor(latents, dtype=torch.long).cpu()
    ids = tokenizer(s.prompt, return_tensors="pt")["input_ids"].to(device)  # [1, P]
    if ids.shape[1] < 1:
        raise ValueError(f"The neutral prompt {s.prompt!r} tokenizes to nothing; give a non-empty prompt.")
    h0 = hooks.run_to_hook(model, sae.hook, input_ids=ids)  # [1, P, d_model]
    amount = s.factor * float(sae.encode(h0[0, -1:].to(sae.W_dec.device)).max())
    if amount <= 0:
        raise ValueError(
            f"No SAE latent is active at the last position of the neutral prompt {s.prompt!r}, so the "
            "amount added (factor x the largest activation there) would be 0. Give another prompt "
            "(EffectSettings.prompt)."
        )
    p0 = torch.softmax(_last_logits(model, ids)[0], -1)  # [vocab]
    rows_all = write_rows(sae, idx.to(sae.W_dec.device), SupportCache()).float()  # [n, d_model]
    lens = lens_top(model, rows_all, s.k).cpu()  # [n, k]
    out = {"output_score": torch.zeros(idx.numel()), "delta_conf": torch.zeros(idx.numel()), "lens_ids": lens.int()}
    starts = range(0, idx.numel(), s.batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="latent effect scores", unit="batch", mininterval=2)
    past = _prefix_cache(model, ids)
    for start in starts:
        rows = rows_all[start : start + s.batch_size].to(device)  # [b, d_model]
        p = torch.softmax(_amplified_logits(model, sae.hook, ids, h0, amount * rows, past), -1)  # [b, vocab]
        top_lens = p.gather(1, lens[start : start + rows.shape[0]].to(device)).max(1).values  # [b]
        best_rank = (p > top_lens[:, None]).sum(1).float()  # rank of the likeliest lens token = the best rank
        out["output_score"][start : start + rows.shape[0]] = ((1 - best_rank / p.shape[1]) * top_lens).cpu()
        out["delta_conf"][start : start + rows.shape[0]] = (p.max(1).values - p0.max()).cpu()
    return out


def input_scores(ctx_ptr: Tensor, peak_ids: Tensor, lens_ids: Int[Tensor, "d_sae k"]) -> Float[Tensor, " d_sae"]:
    """Share of each latent's contexts (rows ctx_ptr[i]:ctx_ptr[i+1]) whose peak token is among its lens tokens;
    NaN for a latent with no context."""
    counts = (ctx_ptr[1:] - ctx_ptr[:-1]).long()  # [d_sae]
    owner = torch.repeat_interleave(torch.arange(counts.numel()), counts)  # [n_ctx] latent of each context
    hit = (lens_ids.long()[owner] == peak_ids.long()[:, None]).any(1).float()  # [n_ctx]
    total = torch.zeros(counts.numel()).index_add_(0, owner, hit)
    return torch.where(counts > 0, total / counts.clamp_min(1), torch.tensor(float("nan")))


# -- where stored scores come from ------------------------------------------------------------------
def _sample(t: Tensor, n: int = 4096) -> bytes:
    flat = t.detach().flatten()
    return flat[:: max(1, flat.numel() // n)].float().cpu().numpy().tobytes()


def fingerprint(model: nn.Module, sae: SAEBasis, s: EffectSettings) -> str:
    """sha256 of what the scores depend on: the unembedding, the SAE decoder and hook, the settings."""
    settings = {**dataclasses.asdict(s), "batch_size": 0, "hook": sae.hook}  # batch size changes nothing
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for t in (model.get_output_embeddings().weight, sae.W_dec, sae.b_dec):
        digest.update(f"{tuple(t.shape)}".encode() + _sample(t))
    return digest.hexdigest()[:20]


def stored_scores(sae: SAEBasis, model: nn.Module, s: EffectSettings = EffectSettings()) -> dict[str, Tensor] | None:
    """The scores in the per-latent table shipped in the SAE's folder (`<folder>/latents/`), when that table
    holds them and was scored on this model and SAE with these settings; else None."""
    try:
        folder = resolve_builtin(sae.source) / "latents" if sae.source else None
    except (ValueError, FileNotFoundError):
        return None
    if folder is None or not (folder / "table.json").exists() or not (folder / "table.safetensors.gz").exists():
        return None
    info = json.loads((folder / "table.json").read_text()).get("effect") or {}
    if info.get("fingerprint") != fingerprint(model, sae, s):
        return None
    t = load_bytes(gzip.decompress(Path(folder / "table.safetensors.gz").read_bytes()))
    return {name: t[name] for name in SCORES if name in t} or None
