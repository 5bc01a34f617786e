"""SAE-basis adaptor: a sparse and/or low-rank map on SAE latents, with a skip connection.

Sparse on both sides when k_in / k_out are set: it reads the latents of a read set R (|R| = k_in) and writes
those of a write set W (|W| = k_out), with parameters stored on the supports only (A [k_in, r], B [r, k_out],
b [k_out] plus index buffers), so `describe()`'s parameters and latents read / written are what it uses.
At inference it encodes only z_R (saebasis.interventions.sae_support: exact; a TopK SAE still needs its full
pre-activation) and decodes only W: h' = h + (s dz_W) W_eff[W].
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saebasis.core.sae import SAEBasis
from saebasis.interventions.base import Intervention, register
from saebasis.interventions.mahalanobis import AdditiveConfig, Mahalanobis
from saebasis.interventions.sae_rows import SupportCache, affine, read_latents, write_rows
from saebasis.interventions.sae_support import EFFECT_CANDIDATES, EFFECT_RULES, RULES

ACTIVATIONS = {"identity": nn.Identity, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclasses.dataclass
class SAEAdaptorConfig(AdditiveConfig):
    rank: int = 4
    """r: width of the bottleneck A [d_sae, r], B [r, d_sae] (low rank)."""
    act: Literal["identity", "relu", "gelu", "tanh"] = "identity"
    """Nonlinearity between A and B."""
    l1_coef: float = 0.0
    """L1 penalty on the entries of A and B (sparse adaptor)."""
    topk_entries: int = 0
    """Keep only the k largest-|.| entries of A and of B in the forward pass (0 = all)."""
    out_bias: bool = True
    """Learn the latent bias b (z' = z + f(z) + b)."""
    init_std: float = 0.01
    """Std of A's random init (B and b start at zero, so the adaptor is the identity at init)."""
    k_in: int | None = None
    """Latents read: None = every latent (A [d_sae, r]); k = the k latents chosen by `read_rule` before training
    (A [k, r]); 0 = none (f is a constant: a bias on the written latents, no SAE encode at inference)."""
    read_rule: Literal["contrast", "active", "gradient", "output", "delta_conf"] = "contrast"
    """How `prepare` picks the read set: contrast = largest |mean z(positive) - mean z(negative)| over the pairs'
    completions (latents that tell the concept apart, i.e. what a conditional edit should look at); active =
    largest mean activation on the texts steered; gradient = as write_rule gradient; output / delta_conf = among the
    256 latents of largest contrast, those of highest output score / delta_conf (sae_support.py)."""
    k_out: int | None = None
    """Latents written, at most: None = every latent (B [r, d_sae], b [d_sae]); k = B [r, k], b [k] on the k
    latents chosen by `write_rule` before training (a fixed support: exact zeros elsewhere by construction)."""
    write_rule: Literal["gradient", "contrast", "active", "output", "delta_conf"] = "contrast"
    """How `prepare` picks the write set: contrast (default) = the read rule's contrast, computed once for both sides
    (a forward pass up to the hook); gradient = largest |d/db (CE(positive) - CE(negative))| for a latent bias
    b at 0 (the latents whose write most helps the objective, concept-specific; a direction that helps any
    completion cancels; costs a full forward + backward over every pair); active, output and delta_conf as for
    read_rule (output: the latents written are those whose decoder row most makes the model say its own tokens)."""
    group_l1: float = 0.0
    """Group lasso on each written latent (column B[:, j] with b_j), applied as a proximal step in Adam's metric
    after every optimizer step: a latent whose group gradient stays small is exactly 0, so latents written can
    fall below k_out (0 = off)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}.")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got '{self.act}'.")
        if self.l1_coef < 0 or self.topk_entries < 0 or self.init_std < 0 or self.group_l1 < 0:
            raise ValueError("l1_coef, topk_entries, init_std and group_l1 must be >= 0.")
        if (self.k_in is not None and self.k_in < 0) or (self.k_out is not None and self.k_out < 1):
            raise ValueError(
                f"k_in must be >= 0 and k_out >= 1 (or null: every latent); got k_in={self.k_in}, k_out={self.k_out}."
            )
        for name, k in (("read_rule", self.k_in), ("write_rule", self.k_out)):
            if getattr(self, name) not in RULES:
                raise ValueError(f"{name} must be one of {sorted(RULES)}, got {getattr(self, name)!r}.")
            if getattr(self, name) in EFFECT_RULES and k is not None and k > EFFECT_CANDIDATES:
                raise ValueError(
                    f"{name}={getattr(self, name)} chooses among the {EFFECT_CANDIDATES} latents of largest contrast, "
                    f"so it can pick at most {EFFECT_CANDIDATES}; got {k}. Use a smaller k or the contrast rule."
                )


def topk_mask(w: Tensor, k: int) -> Tensor:
    """w with all but its k largest-|.| entries zeroed (gradients flow to the kept entries)."""
    if k <= 0 or k >= w.numel():
        return w
    threshold = w.detach().abs().flatten().topk(k).values[-1]
    return w * (w.detach().abs() >= threshold)


@register("sae_adaptor")
class SAEAdaptor(Mahalanobis, Intervention):
    """z' = z + s (act(z_R A + a) B + b) on W,  h' = dec(z') + err(h) = h + s dz_W W_eff[W].

    A [k_in, r] on the read set R, B [r, k_out] and b [k_out] on the write set W (R, W = every latent when
    k_in / k_out are null: the dense adaptor, A [d_sae, r], B [r, d_sae]); B = 0 and b = 0 at init, so the
    adaptor is the identity until trained. R and W are fixed before training by data-driven rules (`prepare`).
    Why a fixed write support rather than a learned one: the adaptor starts at B = 0, and Adam's first step
    moves every column with a gradient by the same ~lr, so a top-k cap on column norms would pick its support
    by ties; scoring the latents once by their contrast between positive and negative completions (or the
    objective's gradient of a latent bias) is
    deterministic, needs no dense B while training, and stores only what is used. `group_l1` then prunes
    inside W with exact zeros (a proximal step, as sae_bias does for its L1).
    Penalties: L1 on the entries of A and B, the rank r, optional top-k entry masks; Mahalanobis option on the
    residual change delta = dec(z') - dec(z) (penalty or per-token bound).
    """

    Config = SAEAdaptorConfig
    uses_sae = True

    def __init__(self, cfg: SAEAdaptorConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        d_sae = sae.d_sae
        n_in, n_out = (d_sae if k is None else k for k in (cfg.k_in, cfg.k_out))
        if n_in > d_sae or n_out > d_sae:
            raise ValueError(
                f"k_in={cfg.k_in} / k_out={cfg.k_out} exceed the SAE's d_sae={d_sae}; use null for every latent."
            )
        self.A = nn.Parameter(torch.randn(n_in, cfg.rank) * cfg.init_std)  # [k_in, r]
        self.a = nn.Parameter(torch.zeros(cfg.rank))  # [r]
        self.B = nn.Parameter(torch.zeros(cfg.rank, n_out))  # [r, k_out]
        self.b = nn.Parameter(torch.zeros(n_out), requires_grad=cfg.out_bias)  # [k_out]
        # Index buffers exist only on a sparse side (None is left out of state_dict: dense runs load as before).
        self.register_buffer("read_idx", None if cfg.k_in is None else torch.arange(n_in))  # [k_in]
        self.register_buffer("write_idx", None if cfg.k_out is None else torch.arange(n_out))  # [k_out]
        self.act = ACTIVATIONS[cfg.act]()
        self._support = SupportCache()
        self._init_whitener(d_model, cfg)

    @property
    def sparse(self) -> bool:
        return self.read_idx is not None or self.write_idx is not None

    def weights(self) -> tuple[Tensor, Tensor]:
        return topk_mask(self.A, self.cfg.topk_entries), topk_mask(self.B, self.cfg.topk_entries)

    def compact_delta(self, z_read: Float[Tensor, "*batch k_in"]) -> Float[Tensor, "*batch k_out"]:
        """dz on the write set from z on the read set."""
        A, B = self.weights()
        return self.act(z_read @ A + self.a) @ B + self.b

    def scatter(self, dz: Float[Tensor, "*batch k_out"]) -> Float[Tensor, "*batch d_sae"]:
        if self.write_idx is None:
            return dz
        return dz.new_zeros(*dz.shape[:-1], self.sae.d_sae).index_copy(-1, self.write_idx, dz)

    def latent_delta(self, z: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_sae"]:
        """f(z) on every latent (zero off the write set), from the full encoding z."""
        return self.scatter(self.compact_delta(z if self.read_idx is None else z[..., self.read_idx]))

    def read(self, h: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch k_in"]:
        """z on the read set, encoding only what the SAE's architecture allows (sae_support)."""
        if self.read_idx is None:
            return self.sae.encode(h)
        if self.read_idx.numel() == 0:
            return h.new_zeros(*h.shape[:-1], 0, dtype=self.A.dtype)
        return read_latents(self.sae, h, self.read_idx, self._support)

    def steer(self, h: Float[Tensor, "batch pos d_model"], s: float | Tensor) -> Float[Tensor, "batch pos d_model"]:
        if not self.sparse:
            return self.dense_steer(h, s)
        dz = s * self.compact_delta(self.read(h))  # [batch, pos, k_out]
        if affine(self.sae):  # splice identity: dec(z + dz) - dec(z) = dz W_eff, only the written rows
            delta = dz @ write_rows(self.sae, self.write_idx, self._support)  # [batch, pos, d_model]
        else:
            z = self.sae.encode(h)
            delta = self.sae.decode(z + self.scatter(dz)) - self.sae.decode(z)
        return h + self._whiten(delta).to(h.dtype)

    def dense_steer(
        self, h: Float[Tensor, "batch pos d_model"], s: float | Tensor
    ) -> Float[Tensor, "batch pos d_model"]:
        """The reference path: full encode, h' = dec(z + s f(z)) + err(h) (the dense adaptor's own path)."""
        z = self.sae.encode(h)  # [batch, pos, d_sae]
        if self.whitener is None:
            return self.sae.splice(h, z, z + s * self.latent_delta(z))
        delta = self.sae.decode(z + s * self.latent_delta(z)) - self.sae.decode(z)  # [batch, pos, d_model]
        return h + self._whiten(delta).to(h.dtype)

    def latent_change(self, h: Tensor, sae: SAEBasis, strength: float = 1.0) -> tuple[Tensor, str]:
        """z' - z = s f(z) (exact, in the method's own basis)."""
        if sae is not self.sae:
            return super().latent_change(h, sae, strength)
        return strength * self.latent_delta(sae.encode(h)).detach(), "intervention"

    def describe(self) -> dict:
        """n_params (trainable entries: on the supports only), latents_read (read latents with a non-zero row
        of A), latents_written (write latents with a non-zero column of B or b)."""
        A, B = self.weights()
        read = int((A.detach().abs().sum(1) > 0).sum())
        written = int(((B.detach().abs().sum(0) + self.b.detach().abs()) > 0).sum())
        return {**super().describe(), "latents_read": read, "latents_written": written}

    def penalty(self) -> Tensor:
        l1 = self.cfg.l1_coef * (self.A.abs().sum() + self.B.abs().sum())
        maha = self.mahalanobis_penalty()
        return l1 if maha is None else l1 + maha

    def latent_score_scale(self, sae: SAEBasis) -> Tensor:
        """latent_scores() are in latent units: x ||W_dec[i]|| gives the residual change along each row."""
        return sae.W_dec.detach().norm(dim=-1)

    def latent_scores(self) -> Float[Tensor, " d_sae"]:
        """Write-side weight of each latent: ||B[:, i]|| + |b_i| (how much the adaptor can move latent i)."""
        _, B = self.weights()
        return self.scatter(B.detach().norm(dim=0) + self.b.detach().abs())

    def prepare(self, stack, concept, max_len: int) -> None:
        """Choose the read and write sets (k_in / k_out set), then the Mahalanobis fit."""
        scores: dict[str, Tensor] = {}  # one pass per rule when both sides use the same one
        for idx, k, rule, side in (
            (self.read_idx, self.cfg.k_in, self.cfg.read_rule, "reads"),
            (self.write_idx, self.cfg.k_out, self.cfg.write_rule, "writes"),
        ):
            if idx is not None and k:
                if rule not in scores:
                    scores[rule] = RULES[rule](stack, concept, max_len)  # [d_sae]
                chosen = scores[rule].topk(k).indices.sort().values
                with torch.no_grad():
                    idx.copy_(chosen.to(idx.device))
                print(
                    f"[saebasis] sae_adaptor {side} {k} latents ({rule}): {idx[:12].tolist()}{' ...' if k > 12 else ''}"
                )
        super().prepare(stack, concept, max_len)

    @torch.no_grad()
    def proximal_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Group soft threshold of each written latent's group g_j = (B[:, j], b_j) in Adam's metric:
        g_j <- g_j max(0, 1 - lr group_l1 / (d_j ||g_j||)), d_j the mean over the group of D = sqrt(v_hat) + eps
        (Adam / AdamW; 1 otherwise). Exact for a metric constant within the group; a group that had no gradient
        (D = eps) or whose weight stays below the threshold is exactly 0."""
        if self.cfg.group_l1 <= 0:
            return
        params = [self.B, self.b] if self.b.requires_grad else [self.B]
        metrics = [adam_metric(optimizer, p) for p in params]
        if any(m is None for m in metrics):
            return  # before the first step
        lr = metrics[0][1]
        d = metrics[0][0].sum(0) + (metrics[1][0] if len(metrics) > 1 else 0)  # [k_out]
        d = d / (self.B.shape[0] + (len(metrics) > 1))
        norm = (self.B.pow(2).sum(0) + self.b.pow(2)).sqrt()  # [k_out]
        scale = (1 - lr * self.cfg.group_l1 / (d * norm).clamp_min(1e-30)).clamp_min(0)
        self.B.mul_(scale)
        self.b.mul_(scale)


def adam_metric(optimizer, p: Tensor) -> tuple[Tensor, float] | None:
    """(D, lr) of the optimizer's step for p: D = sqrt(v_hat) + eps for Adam / AdamW, ones otherwise; None before
    the first step."""
    opt = getattr(optimizer, "optimizer", optimizer)  # Lightning wraps the torch optimizer
    group = next((g for g in opt.param_groups if any(q is p for q in g["params"])), None)
    state = opt.state.get(p, {})
    if group is None or not state:
        return None
    if "exp_avg_sq" not in state:
        return torch.ones_like(p), group["lr"]
    v_hat = state["exp_avg_sq"] / (1 - group["betas"][1] ** float(state["step"]))
    return v_hat.sqrt() + group["eps"], group["lr"]
