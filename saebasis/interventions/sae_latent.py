"""SAE latent steering (AxBench's "SAE" row): add the decoder direction of the latent(s) the concept turns on.

AxBench steers with one SAE feature picked by its label and scaled by hand; here the latent is picked from the
concept's own pairs, so the row runs on any concept with no human in the loop, and the strength search scales it
like every other method. Which of the concept's latents steer is `select`:

  contrast    the k latents whose mean activation rises most from negative to positive completions
  output      among the `candidates` latents that rise most, the k with the highest output score (Arad, Mueller &
              Belinkov 2025: how strongly amplifying the latent makes the model say its logit-lens tokens)
  delta_conf  the same, by delta_conf (Wang et al. 2025: how much amplifying it changes the next-token confidence)
  contrast_output  among the same candidates, the k with the largest rise x output score (negative scores count as
              0): Arad et al.'s filter of low-output latents without a threshold -- a latent must both rise with
              the concept and have an output effect. Output selection alone can pick a latent that promotes
              function words (" or", " of") over one that reads the concept but writes nothing (docs/methods.md).

Both effect scores are defined in latent_effect.py. They come from the per-latent table shipped in the SAE's folder
when it holds them for this model and SAE (saebasis/assets/sae/*/latents; scripts/build_latent_tables.py), else they
are computed for the candidate latents only (one forward pass of `candidates` copies of a short prompt). The weights
of the chosen latents are their contrasts in every mode.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from saebasis.core.sae import SAEBasis
from saebasis.interventions.base import FitData, register
from saebasis.interventions.diffmean import FittedVector, VectorConfig
from saebasis.interventions.latent_effect import effect_scores, stored_scores

SELECT = ("contrast", "output", "delta_conf", "contrast_output")
SCORE_OF = {"output": "output_score", "delta_conf": "delta_conf", "contrast_output": "output_score"}


@dataclasses.dataclass
class SAELatentConfig(VectorConfig):
    k: int = 1
    """How many latents steer (chosen by `select`), each weighted by its mean activation difference."""
    select: Literal["contrast", "output", "delta_conf", "contrast_output"] = "contrast"
    """How the latents are chosen: contrast (largest rise), output (output score), delta_conf (next-token
    confidence change) or contrast_output (rise x output score) among the `candidates` largest rises. The default
    stays contrast until the leaderboard resolves which rule steers best (the pre-registered reading (a),
    docs/results/sae-basis-preregistration.md); the choice of default follows the board."""
    candidates: int = 32
    """Latents with the largest positive rises that select=output|delta_conf|contrast_output chooses among."""
    chunk: int = 4096
    """Tokens encoded at a time while fitting (memory only)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1 or self.chunk < 1 or self.candidates < 1:
            raise ValueError(
                f"k and chunk must be >= 1, and candidates too; got k={self.k}, chunk={self.chunk}, "
                f"candidates={self.candidates}."
            )
        if self.select not in SELECT:
            raise ValueError(f"select must be one of {' | '.join(SELECT)}, got '{self.select}'.")
        if self.select != "contrast" and self.candidates < self.k:
            raise ValueError(
                f"select={self.select} chooses k={self.k} latents among candidates={self.candidates}; "
                "set candidates >= k."
            )


@register("sae_latent")
class SAELatent(FittedVector):
    """h' = h + s v,  v = sum_{i in S} D_i W_dec[i],  D = mean_t enc(h_pos,t) - mean_t enc(h_neg,t)

    S = the k latents chosen by `select` (module docstring): top-k of D (contrast), or top-k of the output score /
    delta_conf / D_i x max(output score, 0) among the `candidates` largest positive D_i. Per-token SAE codes are
    pooled over every pair's positions; D_i is in latent units, so s = 1 adds each chosen latent at its average rise.
    The change lives on k decoder rows: read it by the latents' contexts alone.
    """

    Config = SAELatentConfig
    uses_sae = True

    def __init__(self, cfg: SAELatentConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        self.register_buffer("latents", torch.full((cfg.k,), -1, dtype=torch.long))  # [k] chosen latent ids
        self.register_buffer("gains", torch.zeros(cfg.k))  # [k] their mean activation differences D_i
        object.__setattr__(self, "_lm", None)  # (model, tokenizer) for effect scores: not a submodule, not saved
        self.selection: dict = {}

    def prepare(self, stack, concept, max_len: int) -> None:
        """Keep the model and tokenizer: select=output|delta_conf scores candidates on them (SAE without a table)."""
        super().prepare(stack, concept, max_len)
        object.__setattr__(self, "_lm", (stack.model, stack.tokenizer))

    def fit(self, data: FitData) -> SAELatent:
        diff = self._mean_code(data.positive) - self._mean_code(data.negative)  # [d_sae]
        k, select = self.cfg.k, self.cfg.select
        rises, cand = diff.topk(k if select == "contrast" else min(self.cfg.candidates, diff.numel()))
        rises, cand = rises[rises > 0], cand[rises > 0]
        if cand.numel() < k:
            raise ValueError(
                f"sae_latent: only {int((diff > 0).sum())} SAE latents are more active on the positive "
                f"completions than on the negative ones, k={k}. Use a smaller k, or check the pairs "
                "(positive and negative swapped?) and that the SAE reads this hook."
            )
        idx = cand
        if select != "contrast":
            scores, source = self._effect(cand, select)  # [n_cand]
            if select == "contrast_output":
                scores = rises * scores.clamp_min(0)
            order = scores.argsort(descending=True, stable=True)[:k]
            idx = cand[order]
            self.selection = {
                "select": select,
                "score_source": source,
                "candidates": int(cand.numel()),
                "scores": [round(float(x), 6) for x in scores[order]],
            }
        gains = diff[idx]
        self.latents.copy_(idx)
        self.gains.copy_(gains)
        self.v.copy_(gains.to(self.sae.W_dec.dtype) @ self.sae.W_dec.detach()[idx])  # [k] @ [k, d_model]
        return self

    def _effect(self, cand: Tensor, select: str) -> tuple[Float[Tensor, " n"], str]:
        """(the candidates' scores, where they came from: "table" or "computed")."""
        if self._lm is None:
            raise ValueError(
                f"sae_latent select={select} scores latents on the model: fit it through "
                "`saebasis fit-baseline` / saebasis.fit, or call prepare(stack, concept, max_len) first."
            )
        model, tokenizer = self._lm
        stored = stored_scores(self.sae, model)
        if stored is not None and SCORE_OF[select] in stored:
            return stored[SCORE_OF[select]][cand].float(), "table"
        return effect_scores(model, tokenizer, self.sae, cand)[SCORE_OF[select]], "computed"

    @torch.no_grad()
    def _mean_code(self, acts: list[Tensor]) -> Float[Tensor, " d_sae"]:
        tokens = torch.cat(acts).to(self.sae.W_dec.device)  # [T, d_model]
        return self.sae.encode_chunked(tokens, self.cfg.chunk).mean(0).cpu()  # [d_sae]

    def latent_scores(self) -> Float[Tensor, " d_sae"]:
        """|D_i| at the chosen latents, 0 elsewhere (latent units)."""
        scores = torch.zeros(self.sae.d_sae, device=self.gains.device)
        chosen = self.latents >= 0
        scores[self.latents[chosen]] = self.gains[chosen].abs()
        return scores

    def latent_score_scale(self, sae: SAEBasis) -> Tensor:
        return sae.W_dec.detach().norm(dim=-1)

    def latent_change(self, h: Tensor, sae: SAEBasis, strength: float = 1.0) -> tuple[Tensor, str]:
        """z' - z = s D on the k chosen latents at every token (exact, in the method's own basis)."""
        if sae is not self.sae:
            return super().latent_change(h, sae, strength)
        change = torch.zeros(h.shape[0], sae.d_sae, device=h.device)
        chosen = self.latents >= 0
        change[:, self.latents[chosen]] = strength * self.gains[chosen].to(h.device)
        return change, "intervention"

    def describe(self) -> dict:
        return {
            **super().describe(),
            "latents_written": int((self.latents >= 0).sum()),
            "latents_read": 0,
            "latents": self.latents.tolist(),
            "gains": [round(float(g), 4) for g in self.gains],
            "select": self.cfg.select,
            **({"selection": self.selection} if self.selection else {}),
        }
