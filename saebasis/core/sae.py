"""The SAE as a frozen basis: encode, decode, error term, splice, and a fit check at load.

Notation (sae-lens shapes): h [batch, pos, d_model]; W_enc [d_model, d_sae]; W_dec [d_sae, d_model].
    enc(h) = z,   dec(z) = z W_dec + b_dec,   err(h) = h - dec(enc(h)).
Splicing keeps the error term: h' = h + (dec(z') - dec(z)), which equals dec(z') + err(h) and returns
h bit for bit when z' == z.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor, nn

from saebasis.core import hooks

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def resolve_builtin(source: str) -> Path:
    """`builtin:NAME` -> the SAE shipped in saebasis/assets/sae/NAME; anything else -> Path(source)."""
    if source.startswith("builtin:"):
        path = ASSETS / "sae" / source.removeprefix("builtin:")
        if not path.exists():
            raise FileNotFoundError(
                f"No built-in SAE '{source}'. Shipped: {sorted(p.name for p in (ASSETS / 'sae').glob('*'))}."
            )
        return path
    return Path(source)


# Public releases whose latents have Neuronpedia pages (release -> neuronpedia model id).
NEURONPEDIA_MODELS = {"gpt2-small-res-jb": "gpt2-small", "gemma-scope-2b-pt-res-canonical": "gemma-2-2b"}


class SparseLatents(NamedTuple):
    """The k largest latents of each token: memory O(tokens * k) instead of O(tokens * d_sae).

    `exact` is True when no token had more than k active (non-zero) latents, i.e. `to_dense()`
    equals the dense encoding (up to float rounding from the chunked matmul).
    """

    indices: Int[Tensor, "*batch k"]
    values: Float[Tensor, "*batch k"]
    d_sae: int
    exact: bool

    def to_dense(self) -> Float[Tensor, "*batch d_sae"]:
        dense = self.values.new_zeros(*self.values.shape[:-1], self.d_sae)
        return dense.scatter_(-1, self.indices, self.values)


class SAEBasis(nn.Module):
    """Frozen sae-lens SAE used as a coordinate system at one hook: z = enc(h), h = dec(z) + err(h)."""

    def __init__(self, sae: SAE, hook: str, source: str = "") -> None:
        super().__init__()
        self.sae = sae.eval().requires_grad_(False)
        self.hook = hooks.parse_hook(hook).name
        self.source = source

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, source: str, sae_id: str | None = None, hook: str | None = None, device: str = "cpu") -> SAEBasis:
        """A local sae-lens folder (cfg.json + sae_weights.safetensors) or a pretrained release + id.

        `hook` overrides the hook recorded in the SAE's metadata (needed when that is missing).
        """
        path = resolve_builtin(source)
        if path.exists():
            if not (path / "cfg.json").exists() or not (path / "sae_weights.safetensors").exists():
                raise FileNotFoundError(
                    f"{path} is not an sae-lens SAE folder: it needs cfg.json and sae_weights.safetensors "
                    f"(write one with `saebasis train-sae` or SAE.save_model)."
                )
            sae = SAE.load_from_disk(path, device=device, dtype="float32")
        elif sae_id is not None:
            sae = SAE.from_pretrained(source, sae_id, device=device)
        else:
            raise FileNotFoundError(
                f"SAE '{source}' is neither a local folder nor a release with an sae_id. Pass a folder, "
                f"or sae.release=<release> sae.sae_id=<id> (e.g. gpt2-small-res-jb blocks.8.hook_resid_pre)."
            )
        hook = hook or sae.cfg.metadata.get("hook_name")
        if hook is None:
            raise ValueError(f"The SAE at {source} records no hook; pass hook=blocks.L.hook_resid_post.")
        return cls(sae, hook, source=f"{source}" + (f"/{sae_id}" if sae_id else ""))

    # -- the basis -----------------------------------------------------------------------------
    @property
    def d_sae(self) -> int:
        return self.sae.cfg.d_sae

    @property
    def d_model(self) -> int:
        return self.sae.cfg.d_in

    @property
    def W_dec(self) -> Float[Tensor, "d_sae d_model"]:
        return self.sae.W_dec

    @property
    def W_enc(self) -> Float[Tensor, "d_model d_sae"]:
        return self.sae.W_enc

    @property
    def b_dec(self) -> Float[Tensor, " d_model"]:
        return self.sae.b_dec

    def encode(self, h: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_sae"]:
        return self.sae.encode(h.to(self.sae.dtype))

    def encode_chunked(self, h: Float[Tensor, "*batch d_model"], chunk: int = 1024) -> Float[Tensor, "*batch d_sae"]:
        """`encode(h)` computed `chunk` tokens at a time into one preallocated output.

        The dense path holds the pre-activations and the activations of every token at once (about
        2x the output); this holds the output plus one chunk's intermediates. Equal to `encode(h)` up
        to float rounding (a matmul over fewer rows may sum in another order).
        """
        flat = h.reshape(-1, h.shape[-1])  # [tokens, d_model]
        out = flat.new_empty(flat.shape[0], self.d_sae, dtype=self.sae.dtype)  # [tokens, d_sae]
        for start in range(0, flat.shape[0], chunk):
            out[start : start + chunk] = self.encode(flat[start : start + chunk])
        return out.reshape(*h.shape[:-1], self.d_sae)

    def encode_topk_sparse(self, h: Float[Tensor, "*batch d_model"], k: int = 64, chunk: int = 1024) -> SparseLatents:
        """The k largest latents of each token, encoded `chunk` tokens at a time.

        Peak memory is flat in d_sae beyond one chunk: O(chunk * d_sae + tokens * k). With k at least
        the largest per-token L0 the result is exact (`.exact`, `.to_dense()` == `encode(h)`).
        """
        if not 0 < k <= self.d_sae:
            raise ValueError(
                f"k must be in 1..d_sae={self.d_sae}, got {k}. Pick k >= the SAE's L0 for an exact result."
            )
        flat = h.reshape(-1, h.shape[-1])  # [tokens, d_model]
        values = flat.new_empty(flat.shape[0], k, dtype=self.sae.dtype)  # [tokens, k]
        indices = torch.empty(flat.shape[0], k, dtype=torch.long, device=flat.device)  # [tokens, k]
        exact = True
        for start in range(0, flat.shape[0], chunk):
            z = self.encode(flat[start : start + chunk])  # [chunk, d_sae]
            exact = exact and int((z != 0).sum(-1).max()) <= k
            top = z.topk(k, dim=-1)
            values[start : start + chunk], indices[start : start + chunk] = top.values, top.indices
        shape = (*h.shape[:-1], k)
        return SparseLatents(indices.reshape(shape), values.reshape(shape), self.d_sae, exact)

    def decode(self, z: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_model"]:
        return self.sae.decode(z)

    def error(self, h: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        return h - self.decode(self.encode(h))

    def splice(
        self, h: Float[Tensor, "*batch d_model"], z: Float[Tensor, "*batch d_sae"], z_new: Float[Tensor, "*batch d_sae"]
    ) -> Float[Tensor, "*batch d_model"]:
        """h' = dec(z_new) + err(h), computed as h + (dec(z_new) - dec(z)) so z_new == z gives h exactly."""
        return h + (self.decode(z_new) - self.decode(z)).to(h.dtype)

    def check_width(self, d_model: int) -> None:
        if d_model != self.d_model:
            raise ValueError(
                f"SAE/model width mismatch: the SAE at {self.source or 'this source'} reads d_in={self.d_model} "
                f"but the model's residual stream has d_model={d_model}. Use an SAE trained on this model "
                f"(saebasis train-sae) or the model the SAE was trained on."
            )

    def neuronpedia_url(self, latent: int) -> str | None:
        release = self.source.split("/")[0]
        if release not in NEURONPEDIA_MODELS:
            return None
        point = hooks.parse_hook(self.hook)
        layer_id = f"{point.layer}-res-jb" if release == "gpt2-small-res-jb" else f"{point.layer}-gemmascope-res-16k"
        return f"https://neuronpedia.org/{NEURONPEDIA_MODELS[release]}/{layer_id}/{latent}"


class CompatReport(NamedTuple):
    explained_variance: float
    l0: float
    dead_fraction: float
    ce_loss_clean: float
    ce_loss_spliced: float
    ce_loss_zero: float
    ce_loss_recovered: float
    n_tokens: int

    def to_json(self) -> str:
        return json.dumps(self._asdict(), indent=2)


def _ce_sum(model: nn.Module, batch: dict) -> tuple[float, int]:
    """Summed next-token cross-entropy over the real tokens of a right-padded batch, and their count."""
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    logits = model(**batch).logits[:, :-1].float()  # [batch, pos-1, vocab]
    loss = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum"
    )
    return float(loss), int((labels[:, 1:] != -100).sum())


@torch.no_grad()
def check_compat(
    basis: SAEBasis,
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    max_len: int = 128,
    warn_ev: float = 0.5,
    warn_ce: float = 0.6,
    skip_first: int = 1,
    batch_size: int = 16,
    progress: bool = False,
) -> CompatReport:
    """Explained variance, mean L0, dead fraction and CE-loss recovered of the SAE on `texts`.

    The first `skip_first` tokens of each text are left out (and never spliced): in Llama-family models
    they carry the attention-sink activation, orders of magnitude larger than the rest, which SAEs are
    not trained on (sae-lens' `seqpos_slice`) and which would dominate every figure.
    Texts run in batches of `batch_size` (memory stays flat for 50k+ tokens); every figure is pooled over all
    tokens (EV = 1 - sum ||h - h_hat||^2 / sum ||h - mean h||^2, CE per token; dead = never fires on any token).
    Raises on a width mismatch; warns (naming the likely cause) when the SAE does not fit the model's
    activations at this hook -- a wrong hook, or an SAE trained on a TransformerLens-processed model.
    """
    from tqdm.auto import tqdm

    basis.check_width(model.config.hidden_size)
    device = next(model.parameters()).device
    texts = list(texts)
    sse, n, l0 = 0.0, 0, 0.0
    h_sum = h_sq = None
    fired = torch.zeros(basis.d_sae, dtype=torch.bool, device=device)
    ce = {"clean": [0.0, 0], "spliced": [0.0, 0], "zero": [0.0, 0]}
    for start in tqdm(range(0, len(texts), batch_size), desc="SAE quality", disable=not progress, leave=False):
        tokenizer.padding_side = "right"  # position index == token index, so the first tokens are easy to skip
        try:
            batch = tokenizer(
                texts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_len,
            )
        finally:
            tokenizer.padding_side = "left"
        batch = {k: v.to(device) for k, v in batch.items()}
        mask = batch["attention_mask"].bool().clone()  # [batch, pos]
        mask[:, :skip_first] = False
        with hooks.record(model, basis.hook) as grabbed:  # the clean pass also yields the residual at the hook
            total, count = _ce_sum(model, batch)
        ce["clean"][0] += total
        ce["clean"][1] += count
        h_full = grabbed[0]  # [batch, pos, d_model]
        h = h_full[mask].double()  # [tokens, d_model]
        z = basis.encode(h.float())  # [tokens, d_sae]
        sse += float((h - basis.decode(z).double()).pow(2).sum())
        h_sum = h.sum(0) if h_sum is None else h_sum + h.sum(0)
        h_sq = h.pow(2).sum(0) if h_sq is None else h_sq + h.pow(2).sum(0)
        n += h.shape[0]
        l0 += float((z > 0).sum())
        fired |= (z > 0).any(0).to(device)
        # spliced / zero-ablated: only the blocks after the hook run again, from the replaced residual
        for name, fn in (("spliced", lambda x: basis.decode(basis.encode(x)).to(x.dtype)), ("zero", torch.zeros_like)):
            replaced = h_full.clone()
            replaced[:, skip_first:] = fn(h_full[:, skip_first:])
            with hooks.skip_to_hook(model, basis.hook, replaced):
                total, count = _ce_sum(model, batch)
            ce[name][0] += total
            ce[name][1] += count
    ev = 1 - sse / float((h_sq - h_sum.pow(2) / max(n, 1)).sum()) if n else float("nan")
    ce_clean, ce_spliced, ce_zero = (ce[k][0] / max(ce[k][1], 1) for k in ("clean", "spliced", "zero"))
    recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean) if ce_zero != ce_clean else float("nan")
    report = CompatReport(
        explained_variance=ev,
        l0=l0 / max(n, 1),
        dead_fraction=float((~fired).float().mean()),
        ce_loss_clean=ce_clean,
        ce_loss_spliced=ce_spliced,
        ce_loss_zero=ce_zero,
        ce_loss_recovered=recovered,
        n_tokens=n,
    )
    if ev < warn_ev or not math.isfinite(recovered) or recovered < warn_ce:
        warnings.warn(
            f"The SAE does not fit this model's activations at {basis.hook}: explained variance {ev:.2f}, "
            f"CE loss recovered {recovered:.2f}. Likely causes: the wrong hook (resid_pre vs resid_post, "
            f"off-by-one layer), or an SAE trained on a TransformerLens-processed model (fold_ln / centred "
            f"weights) applied to raw HF activations. Check the SAE's hook_name and training model.",
            stacklevel=2,
        )
    return report
