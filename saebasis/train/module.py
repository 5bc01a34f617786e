"""A thin LightningModule: frozen LM (and SAE), only the intervention trains; one shared `step`.

Objectives (cfg.objective):
- sft: next-token loss on the positive completion given the prompt, with the intervention applied;
- preference: BiPO / DPO-style, -log sigmoid(beta [(log p_s(pos) - log p_0(pos)) - (log p_s(neg) - log p_0(neg))]),
  p_s steered and p_0 the unsteered (reference) model;
plus kl_coef * KL(steered || base) on neutral prompts, plus the intervention's own penalty (L1, Mahalanobis).
Upstream of the hook never needs gradients (the frozen LM gives none to compute).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import lightning as L
import torch

from saebasis import hooks
from saebasis.train.datamodule import completion_labels


class NonFiniteLoss(RuntimeError):
    pass


def sequence_logp(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log p(completion token) per example, [batch]."""
    logp = logits[:, :-1].float().log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]  # [batch, pos-1]
    return (logp * batch["completion_mask"][:, 1:]).sum(1)


CACHEABLE = ("llama", "mistral", "qwen2", "qwen3")  # decoders that start from inputs_embeds unscaled


@contextmanager
def blocks_after(model, hook: str):
    """Temporarily keep only the blocks after `hook`, so `model(inputs_embeds=h)` runs the rest of the model."""
    point = hooks.parse_hook(hook)
    layers = hooks.blocks(model)
    inner = model.get_decoder()
    start = point.layer + (1 if point.kind == "post" else 0)
    inner.layers = torch.nn.ModuleList(list(layers)[start:])
    try:
        yield
    finally:
        inner.layers = layers


class SteeringModule(L.LightningModule):
    def __init__(self, intervention, model, hook: str, cfg: dict, datamodule=None) -> None:
        super().__init__()
        self.intervention = intervention
        object.__setattr__(self, "lm", model)  # frozen: not a submodule, never in checkpoints
        object.__setattr__(self, "dm", datamodule)
        self.hook, self.cfg = hook, cfg
        self.cache: dict | None = {} if cfg.get("cache_activations") else None
        if self.cache is not None and model.config.model_type not in CACHEABLE:
            raise ValueError(f"cache_activations supports {CACHEABLE} models (their decoder takes inputs_embeds unscaled); "
                             f"got '{model.config.model_type}'. Set cache_activations=false.")

    def _cached_forward(self, batch: dict[str, torch.Tensor], key) -> torch.Tensor:
        """Steered logits from the cached hook activations: upstream layers run once per batch, ever."""
        if key not in self.cache:
            self.cache[key] = hooks.run_to_hook(self.lm, self.hook, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        with blocks_after(self.lm, self.hook):
            return self.lm(inputs_embeds=self.intervention(self.cache[key]), attention_mask=batch["attention_mask"], use_cache=False).logits

    def _forward(self, batch: dict[str, torch.Tensor], steer: bool = True, key=None) -> torch.Tensor:
        if steer and key is not None and self.cache is not None:
            return self._cached_forward(batch, key)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if not steer:
            with torch.no_grad():
                return self.lm(**inputs, use_cache=False).logits
        with hooks.attach(self.lm, self.hook, self.intervention):
            return self.lm(**inputs, use_cache=False).logits

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        pos = batch["pos"]
        pos_key, neg_key = (("pos", batch["ids"]), ("neg", batch["ids"])) if stage == "train" else (None, None)
        if self.cfg["objective"] == "sft":
            logits = self._forward(pos, key=pos_key)
            labels = completion_labels(pos)
            main = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        else:
            neg = batch["neg"]
            margin = (sequence_logp(self._forward(pos, key=pos_key), pos) - sequence_logp(self._forward(pos, False), pos)) - (
                sequence_logp(self._forward(neg, key=neg_key), neg) - sequence_logp(self._forward(neg, False), neg))
            main = -torch.nn.functional.logsigmoid(self.cfg["beta"] * margin).mean()
        loss = main + self.intervention.penalty()
        if self.cfg["kl_coef"] > 0 and self.dm is not None:
            loss = loss + self.cfg["kl_coef"] * self._kl(self.global_step, len(pos["input_ids"]))
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(pos["input_ids"]))
        self.log(f"{stage}/objective", main, batch_size=len(pos["input_ids"]))
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
                f"Training loss became {float(loss)} at step {self.global_step}. Stopped; the last good checkpoint is kept "
                f"in the run's checkpoints/ folder. Lower optim.lr, raise regularisation, or check the data."
            )
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.step(batch, "val")
        self._log_change(batch["pos"])
        return loss

    @torch.no_grad()
    def _log_change(self, batch: dict[str, torch.Tensor]) -> None:
        """Norm of the residual change and L0 of the SAE latent change it causes, at the hook."""
        h = hooks.run_to_hook(self.lm, self.hook, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        mask = batch["attention_mask"].bool()
        delta = (self.intervention(h) - h)[mask]  # [tokens, d_model]
        self.log("val/resid_change_norm", delta.norm(dim=-1).mean(), batch_size=int(mask.sum()))
        sae = getattr(self.intervention, "sae", None)
        if sae is not None and hooks.same_residual(sae.hook, self.hook):
            dz = sae.encode(h[mask] + delta) - sae.encode(h[mask])
            self.log("val/latent_change_l0", (dz.abs() > 1e-4).sum(-1).float().mean(), batch_size=int(mask.sum()))

    def configure_optimizers(self):
        params = [p for p in self.intervention.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.cfg["lr"], weight_decay=self.cfg.get("weight_decay", 0.0))
