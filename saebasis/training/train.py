"""`saebasis train`: train one intervention on a concept with Lightning; save it as a run folder.

`train_core(cfg, stack, concept)` is the in-memory core: objects in, trained intervention out, nothing written
(the Python API calls it). `train(cfg, stack=None, concept=None)` is the CLI's layer around it: the CLI calls it
with a Hydra config; `compare`, `demo` and the leaderboard call it in-process with a model/SAE stack and a concept
they loaded once, and get the trained run back in memory (`result["run"]`) as well as saved on disk.
Checkpoints (Lightning's: intervention parameters + optimizer only, never the LM) go to `ckpt_dir`, each
recording the config and the run it belongs to; `resume=true` continues from the newest checkpoint of the run
in progress only when that config matches, and loads it weights-only, and leaves a finished run alone. The final
run folder is written atomically, under a lock (what may be replaced and when: docs/run-folders.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from saebasis.config import resolve_run_dir, setup_env, to_dict
from saebasis.core.generation import generate
from saebasis.core.stack import load_stack, stack_for
from saebasis.data import load_concept
from saebasis.interventions import build
from saebasis.interventions.base import Intervention, get
from saebasis.runs import (
    MIN_FREE_BYTES,
    Run,
    check_finite,
    check_scale,
    checkpoint_record,
    disk_full_explained,
    load_run,
    plan_training,
    read_record,
    run_guard,
    save_run,
    start_checkpoints,
)
from saebasis.training.datamodule import ConceptDataModule
from saebasis.training.fit import run_cfg
from saebasis.training.module import SteeringModule
from saebasis.validate import ConfigError, check_train_numbers, validate


def make_logger(cfg: dict, save_dir: Path):
    log = cfg.get("logger") or {}
    if log.get("mode") == "disabled":
        return False
    from lightning.pytorch.loggers import WandbLogger

    mode = log.get("mode")
    kw = {"mode": mode} if mode else {}
    logger = WandbLogger(
        project=log.get("project", "saebasis"),
        entity=log.get("entity"),
        save_dir=str(save_dir),
        name=Path(cfg["run_dir"]).name,
        config=cfg,
        **kw,
    )
    # Lightning always hands wandb.init `anonymous` (None when unset); wandb >= 0.19 warns that the setting has no
    # effect on every first run. Not passing it changes nothing else.
    if getattr(logger, "_wandb_init", {}).get("anonymous", "set") is None:
        logger._wandb_init.pop("anonymous")
    return logger


def build_intervention(cfg: dict, stack, concept):
    icfg = dict(cfg["intervention"])
    method = icfg.pop("method")
    iv = build(method, icfg, stack.model.config.hidden_size, stack.sae)
    if iv.kind == "fitted":
        raise ValueError(f"'{method}' is fitted in closed form: use `saebasis fit-baseline intervention={method}`.")
    if iv.kind == "trained":
        iv.prepare(stack, concept, cfg["max_len"])
    return iv


class RecordConfig(Callback):
    """Every checkpoint records the config fingerprint (method, data, seed, model, SAE, hook, optimisation), the
    id of its run and the time (resume picks the newest checkpoint of the run in progress by them)."""

    def __init__(self, cfg: dict, run_id: str | None = None) -> None:
        self.cfg, self.run_id = cfg, run_id

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint.update(checkpoint_record(self.cfg, self.run_id))  # fingerprint, run id, time (resume picks by them)


class _LightningNoise:
    """A logging filter dropping Lightning's advice to Lightning users (logger / litlogger tips, which accelerators
    exist, the model summary's hints); what a run does (e.g. DDP's `distributed_backend=gloo`) still prints."""

    NOISE = (
        "Tip:",
        "litlogger",
        "tensorboard",
        "GPU available",
        "TPU available",
        "HPU available",
        "IPU available",
        "You are using a CUDA device",
        "LOCAL_RANK:",
        "Seed set to",
        "`Trainer.fit` stopped",
        "treespec",
    )

    def filter(self, record) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.NOISE)


def quiet_lightning() -> None:
    """Lightning's one-time tips are advice for Lightning users, not for saebasis' users: filtered once per process."""
    import logging
    import warnings

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
    ):
        log = logging.getLogger(name)
        if not any(isinstance(f, _LightningNoise) for f in log.filters):
            log.addFilter(_LightningNoise())
    warnings.filterwarnings("ignore", message=r".*(litlogger|tensorboardX|does not have many workers|treespec).*")


def trainer_for(cfg: dict, ckpt_dir: Path | None, logger=False) -> L.Trainer:
    """The Lightning Trainer of `cfg.trainer`. With a checkpoint folder (the CLI), checkpoints every
    ckpt_every_n_steps there, each recording the config; without one (the Python API), nothing is written."""
    quiet_lightning()
    # The data module's sampler shards by rank itself (and resumes mid-epoch): Lightning must not wrap it.
    kw = {**cfg["trainer"], "use_distributed_sampler": False, "logger": logger}
    if ckpt_dir is None:
        return L.Trainer(**kw, enable_checkpointing=False, callbacks=[])
    ckpt = ModelCheckpoint(
        dirpath=str(ckpt_dir), save_last=True, save_top_k=0, every_n_train_steps=cfg["ckpt_every_n_steps"]
    )
    record = RecordConfig(cfg, read_record(ckpt_dir).get("run_id"))
    return L.Trainer(**kw, callbacks=[ckpt, record], default_root_dir=str(ckpt_dir))


class Trained(NamedTuple):
    """What the in-memory core returns: the intervention, its metrics, and the logger it was logged to (or None)."""

    intervention: Intervention
    metrics: dict
    logger: object | None


def train_core(
    cfg: dict, stack, concept, ckpt_dir: Path | None = None, resume_from: Path | None = None, logger=False
) -> Trained:
    """Train (or set, for manual methods) `cfg`'s intervention on objects in memory: the stack and the concept.

    The one training code path: the CLI's `train` wraps it with validation, a run folder, checkpoints and
    resume; the Python API (`saebasis.training`) calls it directly and writes nothing. The same cfg and seed give
    the same weights either way. `cfg` is a resolved train config (configs/train.yaml) as a plain dict."""
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    iv = build_intervention(cfg, stack, concept)
    if iv.kind == "manual":
        return Trained(iv, {"train_time_s": 0.0, "steps": 0, **iv.describe()}, None)
    own = iv.train_own(stack, concept, cfg)  # a peer trained by its own library (None: Lightning trains it)
    if own is not None:
        check_finite(iv)
        return Trained(iv, {**own, **iv.describe()}, None)
    dm = ConceptDataModule(
        concept,
        stack.tokenizer,
        cfg["batch_size"],
        cfg["max_len"],
        cfg["val_fraction"],
        cfg["seed"],
        cfg.get("max_pairs"),
    )
    module = SteeringModule(iv, stack.model, stack.hook, cfg, dm)
    trainer = trainer_for(cfg, ckpt_dir, logger)
    start = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics.update(train_time_s=round(time.time() - start, 2), steps=trainer.global_step, **iv.describe())
    if trainer.global_step == 0:
        raise ConfigError(
            "trainer",
            "training ran 0 optimizer steps (no training batches: check val_fraction, max_pairs "
            "and trainer.max_steps / max_epochs)",
            "leave at least one batch of pairs for training; nothing was saved",
        )
    check_scale(iv, stack, concept.neutral, cfg["max_len"])  # finite, and not far beyond the residual's own norm
    metrics["global_zero"] = trainer.is_global_zero
    return Trained(iv, metrics, trainer.logger)


def train(cfg, stack=None, concept=None) -> dict:
    """`saebasis train`: validate, then train_core inside a run folder's lock with checkpoints; save the run.
    Returns metrics, run_dir and the Run."""
    setup_env()
    cfg = resolve_run_dir(to_dict(cfg))
    validate({**cfg, "method": cfg["intervention"]["method"]}, dataset_field=None if concept is not None else "data")
    check_train_numbers(cfg)
    get(cfg["intervention"]["method"]).check_can_train(cfg)  # e.g. a peer's own venv, before any heavy work
    ckpt_dir = Path(cfg["ckpt_dir"])
    plan = plan_training(cfg)  # before any heavy work: what run_dir may be replaced, which checkpoint resumes
    if plan.mode == "finished":  # resume=true on a finished run: left alone (docs/run-folders.md)
        print(plan.message)
        run = load_run(cfg["run_dir"], sae=stack.sae if stack is not None else None)
        return {"run_dir": str(run.path), **run.metrics, "run": run}
    with run_guard(cfg["run_dir"], overwrite=bool(cfg.get("overwrite")), resume=bool(cfg.get("resume"))):
        start_checkpoints(cfg, plan)  # a fresh run clears the replaced run's checkpoints; records its id
        concept = concept if concept is not None else load_concept(cfg["data"])
        stack = stack_for(stack, cfg) if stack is not None else load_stack(cfg)
        logger = make_logger(cfg, ckpt_dir)
        with disk_full_explained(Path(cfg["run_dir"]), needed=MIN_FREE_BYTES):
            iv, metrics, used_logger = train_core(cfg, stack, concept, ckpt_dir, plan.resume_from, logger)
        if not metrics.pop("global_zero", True):
            return {"run_dir": cfg["run_dir"], **metrics}
        return finish(cfg, stack, iv, concept, metrics, used_logger)


def finish(cfg: dict, stack, iv, concept, metrics: dict, logger) -> dict:
    """Sample generations (logged as a table), then the run folder: cfg.json + intervention.safetensors +
    metrics.json."""
    metrics["samples"] = samples(stack, iv, concept, cfg["n_samples"])
    _log_samples(logger, metrics["samples"])
    path = save_run(cfg["run_dir"], iv, run_cfg(cfg, stack), metrics)
    verb = (
        f"trained {iv.method} in {metrics['train_time_s']:.1f} s ({metrics['steps']} steps)"
        if iv.kind == "trained"
        else f"saved {iv.method} (set by hand, nothing to train)"
    )
    print(f"[saebasis] {verb} -> {path}")
    run = Run(iv, {**run_cfg(cfg, stack), "method": iv.method}, metrics, Path(path))
    return {"run_dir": str(path), **metrics, "run": run}


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
        logger.log_text(
            key="samples",
            columns=["prompt", "unsteered", "steered"],
            data=[[r["prompt"], r["unsteered"], r["steered"]] for r in rows],
        )
        logger.experiment.finish()
