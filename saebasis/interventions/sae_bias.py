"""SAE-basis steering bias."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from saebasis.core.activations import collect
from saebasis.core.sae import SAEBasis
from saebasis.interventions.base import Intervention, register
from saebasis.interventions.mahalanobis import AdditiveConfig, Mahalanobis


@dataclasses.dataclass
class SAEBiasConfig(AdditiveConfig):
    l1_coef: float = 3e-3
    """L1 penalty on the latent bias b (sparsity: few latents change)."""
    nonneg: bool = False
    """Only add to latents (b >= 0), never subtract: easier to read, as in feature steering."""
    l1_mode: Literal["proximal", "penalty"] = "proximal"
    """proximal: after each optimizer step b is soft-thresholded by lr * l1_coef in the optimizer's own
    metric (Adam: divided by sqrt(v_hat) + eps), so a latent stays exactly 0 while Adam's bias-corrected
    first moment of its gradient, relative to sqrt(v_hat), stays below l1_coef (roughly: while its gradient
    is persistently smaller than l1_coef in Adam's units) -- a sparse bias that reads as a short list of latents.
    penalty: l1_coef * |b|_1 is added
    to the loss; Adam's normalised steps then move every latent by ~lr per step and b ends dense."""
    alive_only: bool = True
    """Restrict b to latents that fire on the concept's own texts (pairs and neutral prompts, attention-sink
    token excluded), found before training. A bias may otherwise lean on dead latents: decoder directions
    that never activate, so no context can say what they mean. On by default: with the shipped SAE the
    restricted bias scored inside the free bias's 95% CI on sentiment, ocean and cooking
    (`saebasis compare experiment=alive_only data=<concept>`, README); false = every latent may move."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.l1_coef < 0:
            raise ValueError(f"l1_coef must be >= 0, got {self.l1_coef}.")
        if self.l1_mode not in ("proximal", "penalty"):
            raise ValueError(f"l1_mode must be 'proximal' or 'penalty', got {self.l1_mode!r}.")


@register("sae_bias")
class SAEBias(Mahalanobis, Intervention):
    """z' = z + s b  =>  h' = h + s (dec(b) - dec(0)) = h + s b W_dec.

    b in R^d_sae, L1-penalised (by default as a proximal step: unused latents are exactly 0), optionally >= 0.
    Because the SAE decoder is affine, the change folds into one residual vector v = b W_dec: applying it
    needs no SAE at inference.
    Mahalanobis option: penalise ||Sigma^{-1/2} s v||^2 or bound ||Sigma^{-1/2} s v|| <= max.
    """

    Config = SAEBiasConfig
    uses_sae = True  # needs the SAE to define b (it applies as the folded vector, no SAE work per token)

    def __init__(self, cfg: SAEBiasConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        self.b = nn.Parameter(torch.zeros(sae.d_sae))  # [d_sae]
        self.register_buffer("allowed", None, persistent=False)  # [d_sae] bool, set by restrict_to (alive_only)
        self._init_whitener(d_model, cfg)

    def restrict_to(self, allowed: Bool[Tensor, " d_sae"]) -> None:
        """Train b only on these latents: the others are held at exactly 0 after every optimizer step."""
        if allowed.shape != self.b.shape or allowed.dtype != torch.bool:
            raise ValueError(
                f"restrict_to needs a bool mask of shape {tuple(self.b.shape)}, "
                f"got {allowed.dtype} {tuple(allowed.shape)}."
            )
        self.allowed = allowed.to(self.b.device)
        with torch.no_grad():
            self.b.masked_fill_(~self.allowed, 0.0)

    @property
    def bias(self) -> Float[Tensor, " d_sae"]:
        return self.b.clamp_min(0) if self.cfg.nonneg else self.b

    def folded(self) -> Float[Tensor, " d_model"]:
        """v = b W_dec = dec(b) - dec(0): the shift at strength 1 (before any Mahalanobis bound)."""
        sae = self.sae
        return sae.decode(self.bias) - sae.decode(torch.zeros_like(self.bias))  # [d_model]

    def steer(self, h: Float[Tensor, "batch pos d_model"], s: float | Tensor) -> Float[Tensor, "batch pos d_model"]:
        shift = s * self.folded_for_inference().to(h.dtype)  # [d_model] or [batch, 1, d_model]
        if self.whitener is not None and self.whitener.max_norm > 0:
            shift = self.whitener.constrain(shift).to(h.dtype)
        return h + shift

    def penalty(self) -> Tensor:
        l1 = self.cfg.l1_coef * self.bias.abs().sum()
        if self.cfg.l1_mode == "proximal":
            l1 = l1.detach()  # reported in the loss, applied by proximal_step (no gradient)
        if self.whitener is None or self.whitener.coef <= 0:
            return l1
        return l1 + self.whitener.penalty(self.whitener.constrain(self.folded()))  # training runs at strength 1

    def latent_score_scale(self, sae: SAEBasis) -> Tensor:
        """latent_scores() are in latent units: x ||W_dec[i]|| gives the residual change along each row."""
        return sae.W_dec.detach().norm(dim=-1)

    def latent_scores(self) -> Float[Tensor, " d_sae"]:
        return self.bias.detach().abs()

    def latent_change(self, h: Tensor, sae: SAEBasis, strength: float = 1.0) -> tuple[Tensor, str]:
        """z' - z = s b at every token (exact, in the method's own basis)."""
        if sae is not self.sae:
            return super().latent_change(h, sae, strength)
        return (strength * self.bias.detach())[None].expand(h.shape[0], -1), "intervention"

    def describe(self) -> dict:
        nz = int((self.bias.detach() != 0).sum())
        return {**super().describe(), "latents_written": nz, "latents_read": 0}

    def prepare(self, stack, concept, max_len: int) -> None:
        """alive_only: restrict b to the latents that fire on the concept's texts; then the Mahalanobis fit."""
        if self.cfg.alive_only:
            alive = alive_latents(stack, concept, max_len)
            print(
                f"[saebasis] alive_only: {int(alive.sum())} of {alive.numel()} SAE latents "
                "fire on the concept's texts; "
                f"the bias is trained on those only"
            )
            self.restrict_to(alive)
        super().prepare(stack, concept, max_len)

    @torch.no_grad()
    def proximal_step(self, optimizer: torch.optim.Optimizer) -> None:
        """b <- sign(b) max(|b| - tau, 0) (with nonneg: max(b - tau, 0)), tau = lr * l1_coef / D,
        D = sqrt(v_hat) + eps for Adam / AdamW (the metric of its step), 1 otherwise (ISTA); then the
        latents outside `allowed` (alive_only) are set back to 0 (the projection onto that subspace)."""
        self._soft_threshold(optimizer)
        if self.allowed is not None:
            self.b.masked_fill_(~self.allowed, 0.0)

    def _soft_threshold(self, optimizer: torch.optim.Optimizer) -> None:
        if self.cfg.l1_mode != "proximal" or self.cfg.l1_coef == 0:
            return
        opt = getattr(optimizer, "optimizer", optimizer)  # Lightning wraps the torch optimizer
        group = next((g for g in opt.param_groups if any(p is self.b for p in g["params"])), None)
        state = opt.state.get(self.b, {})
        if group is None or not state:
            return
        tau = group["lr"] * self.cfg.l1_coef
        if "exp_avg_sq" in state:
            v_hat = state["exp_avg_sq"] / (1 - group["betas"][1] ** float(state["step"]))
            tau = tau / (v_hat.sqrt() + group["eps"])  # [d_sae]
        shrunk = self.b - tau if self.cfg.nonneg else self.b.abs() - tau
        self.b.copy_(shrunk.clamp_min(0) if self.cfg.nonneg else self.b.sign() * shrunk.clamp_min(0))


@torch.no_grad()
def alive_latents(stack, concept, max_len: int) -> Tensor:
    """[d_sae] bool: latents active on at least one token of the concept's pairs (prompt + either
    completion) or neutral prompts, each text's first token (the attention sink) left out."""
    prompts = [p.prompt for p in concept.pairs] * 2 + list(concept.neutral)
    completions = (
        [p.positive for p in concept.pairs] + [p.negative for p in concept.pairs] + [""] * len(concept.neutral)
    )
    acts = collect(
        stack.model,
        stack.tokenizer,
        stack.hook,
        prompts,
        completions,
        positions="all",
        max_len=max_len,
        desc="alive latents",
    )
    alive = torch.zeros(stack.sae.d_sae, dtype=torch.bool, device=stack.sae.W_dec.device)
    for a in acts:  # one text at a time: memory stays [T, d_sae] whatever the SAE's width
        alive |= (stack.sae.encode(a[1:].to(alive.device)) > 0).any(0)
    return alive
