"""`saebasis train-sae`: train an SAE on an HF model with sae-lens' own runner.

sae-lens does the training (LanguageModelSAETrainingRunner, its trainer with the TopK auxiliary loss and
dead-latent tracking, its wandb logging and progress bar); this module only wires it to an HF model
(HookedProxyLM, hook = the block's module name, i.e. resid_post), the offline corpus (saebasis.corpus.build, as an
HF `datasets.Dataset`), and by default to the corpus' cached activations (`activations: cached`,
saebasis.corpus.acts: computed once for every cached layer, then several shuffled passes, instead of a
forward pass per batch per pass; `activations: stream` is sae-lens' own text-streaming store), and then writes
what a user needs beside the weights: the TransformerLens hook name in the SAE metadata, the run's
`training_cfg.json`, and `quality.json` measured on held-out corpus text the SAE never trained on.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from sae_lens import (
    BatchTopKTrainingSAEConfig,
    GatedTrainingSAEConfig,
    JumpReLUTrainingSAEConfig,
    LanguageModelSAERunnerConfig,
    LanguageModelSAETrainingRunner,
    LoggingConfig,
    StandardTrainingSAEConfig,
    TopKTrainingSAEConfig,
)
from sae_lens.load_model import HookedProxyLM
from safetensors.torch import load_file, save_file

from saebasis.config import setup_env, to_dict
from saebasis.core import hooks
from saebasis.core.models import load_model
from saebasis.core.sae import SAEBasis, check_compat
from saebasis.corpus.acts import CachedActivations, build_cache
from saebasis.corpus.acts import default_dir as default_acts_dir
from saebasis.corpus.build import (
    HELDOUT_EVERY,
    build_corpus,
    corpus_texts,
    default_corpus_dir,
    heldout_texts,
    read_shards,
    shard_indices,
)
from saebasis.runs import atomic_dir
from saebasis.validate import check_sae_training

ARCHITECTURES = {
    "standard": StandardTrainingSAEConfig,
    "topk": TopKTrainingSAEConfig,
    "batchtopk": BatchTopKTrainingSAEConfig,
    "jumprelu": JumpReLUTrainingSAEConfig,
    "gated": GatedTrainingSAEConfig,
}


class StopAtHookProxyLM(HookedProxyLM):
    """HookedProxyLM that stops the forward pass at the hook when sae-lens only wants activations.

    sae-lens stops TransformerLens models at the hook layer, but for an HF block name it cannot tell
    the layer, so it would run every layer after the hook for nothing (2-3x slower at mid-depth).
    """

    def forward(
        self, tokens, return_type="logits", loss_per_token=False, stop_at_layer=None, _names_filter=None, **kwargs
    ):
        if stop_at_layer is None and _names_filter and return_type == "logits":
            stop_at_layer = -1  # any value: sae-lens' StopManager raises once every named hook has fired
        return super().forward(tokens, return_type, loss_per_token, stop_at_layer, _names_filter, **kwargs)


def sae_config(arch: str, d_in: int, d_sae: int, extra: dict[str, Any]):
    """The sae-lens training config of `arch`, with only the fields that architecture has."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown SAE architecture '{arch}'. Choose one of {sorted(ARCHITECTURES)}.")
    cls = ARCHITECTURES[arch]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(d_in=d_in, d_sae=d_sae, **{k: v for k, v in extra.items() if k in fields})


def runner_config(cfg: dict, hf_hook: str, d_in: int, out: Path) -> LanguageModelSAERunnerConfig:
    log = cfg["logger"]
    if cfg["n_batches_in_buffer"] * cfg["context_size"] < cfg["train_batch_size_tokens"]:
        raise ValueError(
            f"n_batches_in_buffer * context_size = {cfg['n_batches_in_buffer'] * cfg['context_size']} "
            "tokens is smaller "
            f"than train_batch_size_tokens = {cfg['train_batch_size_tokens']}: "
            "sae-lens' buffer must hold one training batch. "
            f"Raise n_batches_in_buffer to >= {-(-cfg['train_batch_size_tokens'] // cfg['context_size'])}."
        )
    return LanguageModelSAERunnerConfig(
        sae=sae_config(cfg["architecture"], d_in, cfg["d_sae"], cfg.get("sae_kwargs") or {}),
        model_name=cfg["model"]["name"],
        model_class_name="AutoModelForCausalLM",
        hook_name=hf_hook,
        dataset_path="saebasis-corpus",
        is_dataset_tokenized=False,
        streaming=False,
        context_size=cfg["context_size"],
        prepend_bos=False,
        training_tokens=cfg["training_tokens"],
        train_batch_size_tokens=cfg["train_batch_size_tokens"],
        store_batch_size_prompts=cfg["store_batch_size_prompts"],
        n_batches_in_buffer=cfg["n_batches_in_buffer"],
        lr=cfg["lr"],
        lr_warm_up_steps=cfg.get("lr_warm_up_steps", 0),
        lr_end=cfg["lr"],  # sae-lens' decay phase starts at lr_end: with the constant schedule, from lr down to 0
        lr_decay_steps=int(cfg.get("lr_decay_fraction", 0) * cfg["training_tokens"] // cfg["train_batch_size_tokens"]),
        device=cfg["model"].get("device", "cpu"),
        seed=cfg["seed"],
        seqpos_slice=(cfg.get("skip_first", 1), None),
        exclude_special_tokens=cfg.get("exclude_special_tokens", True),
        n_eval_batches=2,
        eval_batch_size_prompts=4,
        n_batches_for_norm_estimate=10,
        checkpoint_path=str(out / "checkpoints"),
        output_path=str(out / "sae-lens-output"),
        dead_feature_window=cfg.get("dead_feature_window", 50),
        feature_sampling_window=cfg.get("dead_feature_window", 50),
        logger=LoggingConfig(
            log_to_wandb=log.get("mode") != "disabled",
            wandb_project=log.get("project", "saebasis"),
            wandb_entity=log.get("entity"),
            run_name=out.name,
            wandb_log_frequency=10,
            eval_every_n_wandb_logs=20,
            log_weights_to_wandb=False,
        ),
    )


def train_sae(cfg) -> dict:
    """Train an SAE at blocks.{layer}.hook_resid_post and save it (sae-lens format + quality.json)."""
    setup_env()
    cfg = to_dict(cfg)
    check_sae_training(cfg)  # every field (d_sae=0, ...) before the model loads or any activation is cached
    torch.manual_seed(cfg["seed"])
    loaded = load_model(cfg["model"]["name"], cfg["model"].get("device", "cpu"))
    model, tok = loaded.model, loaded.tokenizer
    hook = hooks.HookPoint(cfg["layer"], "post").name
    hooks.resolve(model, hook)  # checks the layer exists before any work
    hf_hook = hooks.block_module_name(model, cfg["layer"])
    train_texts, heldout = corpus_split(cfg, model, tok)
    out = Path(cfg["work_dir"])
    runner_cfg = runner_config(cfg, hf_hook, model.config.hidden_size, out)
    start = time.time()
    cached = None
    if cfg.get("activations", "cached") == "cached":
        cached = cached_activations(cfg, model, tok, hook)
    cache_time = time.time() - start
    proxy = StopAtHookProxyLM(model, tok, hook_names=[hf_hook])
    runner = LanguageModelSAETrainingRunner(
        runner_cfg, override_dataset=Dataset.from_dict({"text": train_texts}), override_model=proxy
    )
    if cached is not None:
        # sae-lens trains from the cache; its own text-streaming store still serves the in-training evals (CE loss)
        runner.activations_store = cached
    trained = runner.run()
    train_time = time.time() - start - cache_time
    hooks.blocks(model)[cfg["layer"]]._forward_hooks.clear()  # HookedProxyLM leaves its forward hook on the block
    trained.cfg.metadata.hook_name = hook
    basis = SAEBasis.load(str(out / "sae-lens-output"), hook=hook)
    quality = check_compat(basis, model, tok, heldout, max_len=cfg.get("eval_max_len", 512), progress=True)._asdict()
    quality.update(
        train_time_s=round(train_time, 1),
        cache_time_s=round(cache_time, 1),
        training_tokens=cfg["training_tokens"],
        cached_tokens=len(cached) if cached is not None else None,
        passes=round(cfg["training_tokens"] / len(cached), 2) if cached is not None else None,
        heldout_docs=len(heldout),
        corpus_docs=len(train_texts),
        eval_source="held-out corpus shards (never trained on)",
    )
    target = _save_shipped(out / "sae-lens-output", Path(cfg["out_dir"]), hook, cfg, quality)
    print(json.dumps(quality, indent=2))
    print(f"[saebasis] SAE saved to {target}")
    return {"sae_dir": str(target), **quality}


def cached_activations(cfg: dict, model, tok, hook: str) -> CachedActivations:
    """The training shards' residuals at `hook` from the activation cache (saebasis.corpus.acts), computing the
    shards not cached yet (every layer in corpus.cache_layers at once, so the other layers' SAEs reuse them)."""
    c = cfg["corpus"]
    directory = _corpus_dir(c)
    layers = sorted(set(c.get("cache_layers") or []) | {cfg["layer"]})
    acts_dir = Path(c["acts_dir"]) if c.get("acts_dir") else default_acts_dir(directory, cfg["model"]["name"])
    files = build_cache(model, tok, directory, acts_dir, layers, n_shards=c["n_shards"])
    return CachedActivations(
        files, hook, cfg["train_batch_size_tokens"], seed=cfg["seed"], device=cfg["model"].get("device", "cpu")
    )


def _corpus_dir(c: dict) -> Path:
    """corpus.dir, or the shipped corpus (else the user's cache) when null."""
    return Path(c["dir"]) if c.get("dir") else default_corpus_dir()


def corpus_split(cfg: dict, model, tok) -> tuple[list[str], list[str]]:
    """Training texts (every shard but the held-out ones) and held-out texts for quality.json, building (or
    resuming) the corpus first when it has fewer than corpus.n_shards complete shards."""
    c = cfg["corpus"]
    directory = _corpus_dir(c)
    if len([i for i in shard_indices(directory) if i < c["n_shards"]]) < c["n_shards"]:
        build_corpus(model, tok, directory, c["n_shards"], c["shard_size"], c["max_new_tokens"], c["batch_size"])
    if not any(i % HELDOUT_EVERY == HELDOUT_EVERY - 1 for i in shard_indices(directory)):
        raise ValueError(
            f"{directory} has no held-out shard (index {HELDOUT_EVERY - 1}, {2 * HELDOUT_EVERY - 1}, ...): "
            f"set corpus.n_shards >= {HELDOUT_EVERY} so quality is measured on text the SAE never saw."
        )
    return corpus_texts(read_shards(directory, "train")), heldout_texts(directory, tok, c.get("eval_tokens"))


def _save_shipped(src: Path, target: Path, hook: str, cfg: dict, quality: dict) -> Path:
    """cfg.json (hook = TransformerLens name) + weights (fp16 if asked) + training_cfg.json + quality.json."""
    sae_cfg = json.loads((src / "cfg.json").read_text())
    sae_cfg.setdefault("metadata", {})["hook_name"] = hook
    state = load_file(src / "sae_weights.safetensors")
    if cfg.get("save_fp16"):
        state = {k: v.half() for k, v in state.items()}

    def write(tmp: Path) -> None:
        save_file(state, tmp / "sae_weights.safetensors")
        (tmp / "cfg.json").write_text(json.dumps(sae_cfg, indent=2))
        (tmp / "training_cfg.json").write_text(json.dumps(cfg, indent=2, default=str))
        (tmp / "quality.json").write_text(json.dumps(quality, indent=2))

    return atomic_dir(target, write)
