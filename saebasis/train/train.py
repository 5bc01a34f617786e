"""`saebasis train`: train one intervention on a concept with Lightning; save it as a run folder.

`train(cfg)` is a plain function (tests call it on a composed config); the CLI only wires Hydra to it.
Checkpoints (Lightning's, intervention parameters + optimizer only, never the LM) go to `ckpt_dir`;
`resume=true` continues from `ckpt_dir/last.ckpt`. The final run folder is written atomically.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from saebasis.activations import collect
from saebasis.config import resolve_run_dir, setup_env, to_dict
from saebasis.data import load_concept
from saebasis.eval.generation import generate
from saebasis.interventions import build
from saebasis.runs import save_run
from saebasis.stack import load_stack
from saebasis.train.datamodule import ConceptDataModule
from saebasis.train.fit import run_cfg
from saebasis.train.module import SteeringModule
from saebasis.validate import ConfigError, validate


def make_logger(cfg: dict, save_dir: Path):
    log = cfg.get("logger") or {}
    if log.get("mode") == "disabled":
        return False
    from lightning.pytorch.loggers import WandbLogger

    mode = log.get("mode")
    kw = {"mode": mode} if mode else {}
    return WandbLogger(project=log.get("project", "saebasis"), entity=log.get("entity"), save_dir=str(save_dir),
                       name=Path(cfg["run_dir"]).name, config=cfg, **kw)


def build_intervention(cfg: dict, stack, concept):
    icfg = dict(cfg["intervention"])
    method = icfg.pop("method")
    iv = build(method, icfg, stack.model.config.hidden_size, stack.sae)
    if not iv.trainable and hasattr(iv, "fit"):
        raise ValueError(f"'{method}' is fitted in closed form: use `saebasis fit-baseline intervention={method}`.")
    if not iv.trainable:  # set by hand (clamp): nothing to learn, the run saves it as configured
        return iv
    if getattr(iv.cfg, "alive_only", False):
        alive = alive_latents(stack, concept, cfg["max_len"])
        print(f"[saebasis] alive_only: {int(alive.sum())} of {alive.numel()} SAE latents fire on the concept's texts; "
              f"the bias is trained on those only")
        iv.restrict_to(alive)
    if getattr(iv, "whitener", None) is not None:  # Mahalanobis: fit Sigma on activations at the hook
        acts = collect(stack.model, stack.tokenizer, stack.hook, concept.neutral + [p.prompt for p in concept.pairs],
                       positions="all", max_len=cfg["max_len"], desc="covariance")
        iv.whitener.fit(torch.cat(acts))
    return iv


@torch.no_grad()
def alive_latents(stack, concept, max_len: int) -> torch.Tensor:
    """[d_sae] bool: latents active on at least one token of the concept's pairs (prompt + either
    completion) or neutral prompts, each text's first token (the attention sink) left out."""
    prompts = [p.prompt for p in concept.pairs] * 2 + list(concept.neutral)
    completions = [p.positive for p in concept.pairs] + [p.negative for p in concept.pairs] + [""] * len(concept.neutral)
    acts = collect(stack.model, stack.tokenizer, stack.hook, prompts, completions, positions="all", max_len=max_len,
                   desc="alive latents")
    alive = torch.zeros(stack.sae.d_sae, dtype=torch.bool, device=stack.sae.W_dec.device)
    for a in acts:  # one text at a time: memory stays [T, d_sae] whatever the SAE's width
        alive |= (stack.sae.encode(a[1:].to(alive.device)) > 0).any(0)
    return alive


def trainer_for(cfg: dict, ckpt_dir: Path) -> L.Trainer:
    ckpt = ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True, save_top_k=0, every_n_train_steps=cfg["ckpt_every_n_steps"])
    # The data module's sampler shards by rank itself (and resumes mid-epoch): Lightning must not wrap it.
    return L.Trainer(**{**cfg["trainer"], "use_distributed_sampler": False}, logger=make_logger(cfg, ckpt_dir),
                     callbacks=[ckpt], default_root_dir=str(ckpt_dir))


def train(cfg) -> dict:
    setup_env()
    cfg = resolve_run_dir(to_dict(cfg))
    validate({**cfg, "method": cfg["intervention"]["method"]}, dataset_field="data")  # before any heavy work
    if not (isinstance(cfg["lr"], (int, float)) and math.isfinite(cfg["lr"]) and cfg["lr"] > 0):
        raise ConfigError("lr", f"must be a positive finite number, got {cfg['lr']!r}", "set lr=1e-2 (SAE bias) or 1e-3")
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    concept = load_concept(cfg["data"])
    stack = load_stack(cfg)
    iv = build_intervention(cfg, stack, concept)
    if not iv.trainable:
        return finish(cfg, stack, iv, concept, {"train_time_s": 0.0, "steps": 0, "n_params": 0}, logger=None)
    dm = ConceptDataModule(concept, stack.tokenizer, cfg["batch_size"], cfg["max_len"], cfg["val_fraction"], cfg["seed"], cfg.get("max_pairs"))
    module = SteeringModule(iv, stack.model, stack.hook, cfg, dm)
    ckpt_dir = Path(cfg["ckpt_dir"])
    last = ckpt_dir / "last.ckpt"
    trainer = trainer_for(cfg, ckpt_dir)
    start = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if cfg.get("resume") and last.exists() else None)
    train_time = time.time() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics.update(train_time_s=round(train_time, 2), steps=trainer.global_step, n_params=sum(p.numel() for p in iv.parameters()))
    if not trainer.is_global_zero:
        return {"run_dir": cfg["run_dir"], **metrics}
    return finish(cfg, stack, iv, concept, metrics, trainer.logger)


def finish(cfg: dict, stack, iv, concept, metrics: dict, logger) -> dict:
    """Sample generations (logged as a table), then the run folder: cfg.json + intervention.safetensors + metrics.json."""
    metrics["samples"] = samples(stack, iv, concept, cfg["n_samples"])
    _log_samples(logger, metrics["samples"])
    path = save_run(cfg["run_dir"], iv, run_cfg(cfg, stack), metrics)
    verb = f"trained {iv.method} in {metrics['train_time_s']:.1f} s ({metrics['steps']} steps)" if iv.trainable else f"saved {iv.method} (set by hand, nothing to train)"
    print(f"[saebasis] {verb} -> {path}")
    return {"run_dir": str(path), **metrics}


def samples(stack, iv, concept, n: int) -> list[dict]:
    """Steered vs unsteered responses to a few validation instructions (strength 1)."""
    prompts = concept.instructions["val"][:n]
    if not prompts:
        return []
    base, _ = generate(stack.model, stack.tokenizer, prompts, None, stack.hook, max_new_tokens=32)
    steered, _ = generate(stack.model, stack.tokenizer, prompts, iv, stack.hook, max_new_tokens=32)
    return [{"prompt": p, "unsteered": b, "steered": s} for p, b, s in zip(prompts, base, steered)]


def _log_samples(logger, rows: list[dict]) -> None:
    if logger and rows and hasattr(logger, "log_text"):
        logger.log_text(key="samples", columns=["prompt", "unsteered", "steered"], data=[[r["prompt"], r["unsteered"], r["steered"]] for r in rows])
        logger.experiment.finish()
