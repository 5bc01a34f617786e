"""A thin LightningModule: frozen LM (and SAE), only the intervention trains; one shared `step`.

Objectives (cfg.objective):
- sft: next-token loss on the positive completion given the prompt, with the intervention applied;
- preference: BiPO / DPO-style, -log sigmoid(beta [(log p_s(pos) - log p_0(pos)) - (log p_s(neg) - log p_0(neg))]),
  p_s steered and p_0 the unsteered (reference) model;
plus kl_coef * KL(steered || base) on neutral prompts, plus the intervention's own penalty (L1, Mahalanobis).
Upstream of the hook nothing needs gradients: the frozen LM records no graph there, and with
`cache_activations` (saebasis.train.cache) it runs once per example under no_grad, after which only the
blocks after the hook run (the unsteered reference log-probs of the preference objective are kept too).
"""

from __future__ import annotations

import math

import lightning as L
import torch

from saebasis.core import hooks
from saebasis.train.cache import ActivationCache, model_inputs
from saebasis.train.datamodule import completion_labels


class NonFiniteLoss(RuntimeError):
    pass


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


def sft_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over completion tokens; logits may cover only the last positions."""
    labels = completion_labels(batch)[:, -logits.shape[1]:]  # [batch, k]
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


class SteeringModule(L.LightningModule):
    def __init__(self, intervention, model, hook: str, cfg: dict, datamodule=None) -> None:
        super().__init__()
        self.intervention = intervention
        object.__setattr__(self, "lm", model)  # frozen: not a submodule, never in checkpoints
        object.__setattr__(self, "dm", datamodule)
        self.hook, self.cfg = hook, cfg
        self.cache = ActivationCache(model, hook) if cfg.get("cache_activations") else None

    def _forward(self, batch: dict[str, torch.Tensor], steer: bool = True, keep: int = 0) -> torch.Tensor:
        """Logits (of the last `keep` positions; 0 = all) with the intervention at the hook (steer) or of
        the unsteered model (no graph)."""
        iv = self.intervention if steer else None
        with torch.set_grad_enabled(steer and torch.is_grad_enabled()):
            if self.cache is not None:
                return self.cache.logits(batch, iv, keep)
            with hooks.steering(self.lm, self.hook, iv):
                return self.lm(**model_inputs(batch), use_cache=False, logits_to_keep=keep).logits

    def _logp(self, batch: dict[str, torch.Tensor], steer: bool = True) -> torch.Tensor:
        return sequence_logp(self._forward(batch, steer, completion_window(batch)), batch)

    def _reference_logp(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p_0(completion) under the unsteered model: fixed, so memoised when activations are cached."""
        compute = lambda b: self._logp(b, steer=False)  # noqa: E731
        return compute(batch) if self.cache is None else self.cache.per_example("ref_logp", batch, compute)

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        self.intervention.clear_penalty_state()  # e.g. Mahalanobis: only this step's deltas
        pos = batch["pos"]
        if self.cfg["objective"] == "sft":
            main = sft_loss(self._forward(pos, keep=completion_window(pos)), pos)
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
                f"Training loss became {float(loss.detach())} at step {self.global_step}. Stopped; the last good checkpoint "
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
        h = self.cache.hook_acts(batch) if self.cache is not None else hooks.run_to_hook(self.lm, self.hook, **model_inputs(batch))
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
