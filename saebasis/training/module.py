"""A thin LightningModule: frozen LM (and SAE), only the intervention trains; one shared `step`.

Objectives (cfg.objective):
- sft: next-token loss on the positive completion given the prompt, with the intervention applied;
- preference: BiPO / DPO-style, -log sigmoid(beta [(log p_s(pos) - log p_0(pos)) - (log p_s(neg) - log p_0(neg))]),
  p_s steered and p_0 the unsteered (reference) model;
- reps: RePS (Wu et al. 2025, "Improved Representation Steering for Language Models"), reference-free and
  bidirectional. With y_c the positive completion, y the negative one, l(.) a length-normalised log-prob
  (mean over completion tokens) under the intervention at a sampled factor a (cfg.reps_strengths, one per row):
      D+ = b+ l_{+a}(y_c) - l_{+a}(y),   b+ = max(log p_0(y) - log p_0(y_c), 1)
      D- = b- l_{-a}(y)   - l_{-a}(y_c), b- = max(log p_0(y_c) - log p_0(y), 1)
      loss = -log sigmoid(D+) - log sigmoid(D-)
  (b+- from the unsteered model's summed log-probs, no gradient: the less likely the target completion, the more
  its likelihood weighs). Suppression steers at the negative factor -a for every method (the paper does so for
  LoRA / LoReFT and uses a projection-out intervention for its steering vector);
plus kl_coef * KL(steered || base) on neutral prompts, plus the intervention's own penalty (L1, Mahalanobis).
Upstream of the hook nothing needs gradients: the frozen LM records no graph there, and with
`cache_activations` (saebasis.training.cache) it runs once per example under no_grad, after which only the
blocks after the hook run (the unsteered reference log-probs of the preference objective are kept too).
"""

from __future__ import annotations

import math

import lightning as L
import torch

from saebasis.core import hooks
from saebasis.training.cache import ActivationCache, model_inputs
from saebasis.training.datamodule import completion_labels
from saebasis.validate import TRAIN_CHOICES

OBJECTIVES = TRAIN_CHOICES["objective"]
"""The training objectives `cfg.objective` may name (one tuple, in saebasis.validate, which checks configs first)."""
REPS_STRENGTHS = (0.5, 1.0, 2.0)
"""RePS' factors a (each row draws one; its mirror term steers at -a) when cfg has no `reps_strengths`."""


class NonFiniteLoss(RuntimeError):
    pass


def check_objective(cfg: dict) -> None:
    """The objective is one of OBJECTIVES; RePS' factors are positive finite numbers."""
    if cfg.get("objective", "sft") not in OBJECTIVES:
        raise ValueError(
            f"objective={cfg.get('objective')!r} is not a training objective. Use one of {list(OBJECTIVES)}."
        )
    factors = cfg.get("reps_strengths") or REPS_STRENGTHS
    if cfg.get("objective") == "reps" and not all(isinstance(a, (int, float)) and 0 < a < math.inf for a in factors):
        raise ValueError(
            f"reps_strengths must be positive finite numbers, got {list(factors)}. Use e.g. [0.5, 1.0, 2.0]."
        )


def completion_window(batch: dict[str, torch.Tensor]) -> int:
    """How many final positions need logits: the longest completion plus the position before it
    (left padding puts every completion at the end of its row). The LM head then runs on those only."""
    return int(batch["completion_mask"].sum(1).max()) + 1


def sequence_logp(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log p(completion token) per example, [batch]; logits may cover only the last positions."""
    k = logits.shape[1]
    ids, completion = batch["input_ids"][:, -k:], batch["completion_mask"][:, -k:]  # [batch, k]
    logp = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]  # [batch, k-1]
    return (logp * completion[:, 1:]).sum(1)


def mean_logp(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean log p(completion token) per example, [batch] (the length-normalised log-likelihood of RePS / SimPO)."""
    count = batch["completion_mask"][:, -logits.shape[1] :][:, 1:].sum(1).clamp_min(1)
    return sequence_logp(logits, batch) / count


def reps_loss(
    plus_pos: torch.Tensor,
    plus_neg: torch.Tensor,
    minus_pos: torch.Tensor,
    minus_neg: torch.Tensor,
    ref_pos: torch.Tensor,
    ref_neg: torch.Tensor,
) -> torch.Tensor:
    """RePS on [batch] values: plus_* / minus_* the mean log-probs of the positive (y_c) / negative (y) completion
    under the positive / negative factor, ref_* the unsteered summed log-probs (weights only: no gradient)."""
    beta_plus = (ref_neg - ref_pos).detach().clamp_min(1.0)
    beta_minus = (ref_pos - ref_neg).detach().clamp_min(1.0)
    steer = beta_plus * plus_pos - plus_neg  # D+
    suppress = beta_minus * minus_neg - minus_pos  # D-
    return (-torch.nn.functional.logsigmoid(steer) - torch.nn.functional.logsigmoid(suppress)).mean()


def sft_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over completion tokens; logits may cover only the last positions."""
    labels = completion_labels(batch)[:, -logits.shape[1] :]  # [batch, k]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
    )


class SteeringModule(L.LightningModule):
    def __init__(self, intervention, model, hook: str, cfg: dict, datamodule=None) -> None:
        super().__init__()
        check_objective(cfg)
        self.intervention = intervention
        object.__setattr__(self, "lm", model)  # frozen: not a submodule, never in checkpoints
        object.__setattr__(self, "dm", datamodule)
        self.hook, self.cfg = hook, cfg
        self.cache = ActivationCache(model, hook) if cfg.get("cache_activations") else None

    def _forward(self, batch: dict[str, torch.Tensor], steer: bool = True, keep: int = 0, strength=1.0) -> torch.Tensor:
        """Logits (of the last `keep` positions; 0 = all) with the intervention at the hook (steer; at `strength`, a
        number or one per row) or of the unsteered model (no graph)."""
        iv = self.intervention if steer else None
        with torch.set_grad_enabled(steer and torch.is_grad_enabled()):
            if self.cache is not None:
                return self.cache.logits(batch, iv, keep, strength)
            with hooks.steering(self.lm, self.hook, iv, strength):
                return self.lm(**model_inputs(batch), use_cache=False, logits_to_keep=keep).logits

    def _logp(self, batch: dict[str, torch.Tensor], steer: bool = True) -> torch.Tensor:
        return sequence_logp(self._forward(batch, steer, completion_window(batch)), batch)

    def _factors(self, n: int, stage: str) -> torch.Tensor:
        """RePS' factor a per row, drawn from cfg.reps_strengths with a generator seeded by (seed, step, stage):
        the same draws after a resume, and none of the global random state used."""
        factors = torch.tensor([float(a) for a in (self.cfg.get("reps_strengths") or REPS_STRENGTHS)])
        seed = int(self.cfg.get("seed", 0)) * 1_000_003 + self.global_step * 2 + (stage != "train")
        return factors[torch.randint(len(factors), (n,), generator=torch.Generator().manual_seed(seed))]

    def _reps(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """RePS: each completion once under [+a; -a] (the batch twice, one forward per completion)."""
        a = self._factors(len(pos["input_ids"]), stage).to(self.device)
        strength = torch.cat([a, -a])  # [2 batch]
        twice = lambda b: {k: torch.cat([v, v]) for k, v in b.items()}
        lp_pos = mean_logp(self._forward(twice(pos), keep=completion_window(pos), strength=strength), twice(pos))
        lp_neg = mean_logp(self._forward(twice(neg), keep=completion_window(neg), strength=strength), twice(neg))
        n = len(a)
        return reps_loss(
            lp_pos[:n], lp_neg[:n], lp_pos[n:], lp_neg[n:], self._reference_logp(pos), self._reference_logp(neg)
        )

    def _reference_logp(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p_0(completion) under the unsteered model: fixed, so memoised when activations are cached."""
        compute = lambda b: self._logp(b, steer=False)
        return compute(batch) if self.cache is None else self.cache.per_example("ref_logp", batch, compute)

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        self.intervention.clear_penalty_state()  # e.g. Mahalanobis: only this step's deltas
        pos = batch["pos"]
        if self.cfg["objective"] == "sft":
            main = sft_loss(self._forward(pos, keep=completion_window(pos)), pos)
        elif self.cfg["objective"] == "reps":
            main = self._reps(pos, batch["neg"], stage)
        else:
            neg = batch["neg"]
            margin = (self._logp(pos) - self._reference_logp(pos)) - (self._logp(neg) - self._reference_logp(neg))
            main = -torch.nn.functional.logsigmoid(self.cfg["beta"] * margin).mean()
        loss = main
        if self.cfg["kl_coef"] > 0 and self.dm is not None:
            loss = loss + self.cfg["kl_coef"] * self._kl(self.global_step, len(pos["input_ids"]))
        penalty = self.intervention.penalty()  # last: it may read the deltas of every forward above
        loss = loss + penalty
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(pos["input_ids"]))
        self.log(f"{stage}/objective", main, batch_size=len(pos["input_ids"]))
        self.log(f"{stage}/penalty", penalty.detach(), batch_size=len(pos["input_ids"]))
        return loss

    def _kl(self, step: int, size: int) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in self.dm.neutral_batch(step, size).items()}
        base = self._forward(batch, steer=False).float().log_softmax(-1)
        steered = self._forward(batch).float().log_softmax(-1)
        kl = (steered.exp() * (steered - base)).sum(-1)  # [batch, pos]
        mask = batch["attention_mask"].bool()
        self.log("train/kl_neutral", kl[mask].mean().detach(), batch_size=size)
        return kl[mask].mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.step(batch, "train")
        if not math.isfinite(float(loss.detach())):
            raise NonFiniteLoss(
                f"Training loss became {float(loss.detach())} at step {self.global_step}. "
                "Stopped; the last good checkpoint "
                f"is kept in {self.cfg.get('ckpt_dir') or 'the checkpoint folder'} (resume=true continues from it). "
                f"Lower lr, raise regularisation, or check the data."
            )
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.step(batch, "val")
        self._log_change(batch["pos"])
        return loss

    @torch.no_grad()
    def _log_change(self, batch: dict[str, torch.Tensor]) -> None:
        """Norm of the residual change and L0 of the SAE latent change it causes, at the hook."""
        h = (
            self.cache.hook_acts(batch)
            if self.cache is not None
            else hooks.run_to_hook(self.lm, self.hook, **model_inputs(batch))
        )
        mask = batch["attention_mask"].bool()
        delta = (self.intervention(h) - h)[mask]  # [tokens, d_model]
        self.log("val/resid_change_norm", delta.norm(dim=-1).mean(), batch_size=int(mask.sum()))
        for name, value in self.intervention.extra_metrics(h[mask], delta).items():
            self.log(f"val/{name}", value, batch_size=int(mask.sum()))
        sae = self.intervention.sae
        if sae is not None and hooks.same_residual(sae.hook, self.hook):
            dz = sae.encode(h[mask] + delta) - sae.encode(h[mask])
            self.log("val/latent_change_l0", (dz.abs() > 1e-4).sum(-1).float().mean(), batch_size=int(mask.sum()))

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.intervention.proximal_step(optimizer)  # e.g. the SAE bias's L1 as a soft threshold

    def configure_optimizers(self):
        params = [p for p in self.intervention.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.cfg["lr"], weight_decay=self.cfg.get("weight_decay", 0.0))
