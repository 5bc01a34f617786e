"""LoReFT (Wu et al. 2024, "ReFT: Representation Finetuning") as a peer: trained by pyreft, applied by saebasis.

pyreft 0.1.0 pins transformers==4.45.1 and saebasis runs on 5.x, so the two never share a process. `train_own`
tokenizes the concept's SFT pairs exactly as saebasis' trainer does (same split, same batches in the same order),
writes a transformers-4 copy of the model folder (`saebasis.core.models.transformers4_folder`) and runs
`loreft_worker.py` under .venv-pyreft: pyreft's own `LoreftIntervention` at the hook's block output in pyreft's own
`ReftModel`, AdamW on the completion tokens' next-token loss. R, W and b come back as safetensors and are this
intervention's parameters; inference is saebasis' own (the class equation), checked against pyreft's forward to
1e-4 on the logits (tests/interventions/test_loreft.py).

Optional: `bash scripts/setup_pyreft.sh` builds .venv-pyreft (or set SAEBASIS_PYREFT_PYTHON to a python that has
pyreft). Only training needs it; a trained run loads and steers without it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saebasis.core.sae import SAEBasis
from saebasis.interventions.base import Intervention, InterventionConfig, Strength, check_strength, is_zero, register

SETUP = "bash scripts/setup_pyreft.sh"
WORKER = Path(__file__).with_name("loreft_worker.py")
_POSITIONS = re.compile(r"^(?:f(\d+))?\+?(?:l(\d+))?$")


def pyreft_python() -> Path:
    """The python of pyreft's own venv: $SAEBASIS_PYREFT_PYTHON, else <repo>/.venv-pyreft/bin/python."""
    repo = Path(__file__).resolve().parents[2]  # a clone's root (saebasis is installed editable from it)
    return Path(os.environ.get("SAEBASIS_PYREFT_PYTHON") or repo / ".venv-pyreft" / "bin" / "python")


def require_pyreft() -> Path:
    """pyreft's python, or an ImportError naming the set-up command (compare / leaderboard skip an optional peer on
    it)."""
    python = pyreft_python()
    if not python.exists():
        raise ImportError(
            f"intervention=loreft trains through pyreft in its own venv (pyreft pins transformers 4.45), "
            f"and {python} does not exist. Build it once with: {SETUP} (or set SAEBASIS_PYREFT_PYTHON "
            f"to a python with pyreft). A trained loreft run loads and steers without it."
        )
    return python


def parse_positions(spec: str) -> tuple[int, int] | None:
    """pyreft's notation: "all" -> None; "f<a>+l<b>" (either part optional) -> (a, b)."""
    if spec == "all":
        return None
    m = _POSITIONS.match(spec)
    if not spec or m is None or not (m.group(1) or m.group(2)):
        raise ValueError(f"positions must be 'all' or pyreft's 'f<a>+l<b>' (e.g. f5+l5, l1, f3), got {spec!r}.")
    first, last = int(m.group(1) or 0), int(m.group(2) or 0)
    if first + last < 1:
        raise ValueError(f"positions {spec!r} selects no token: use at least one first or last position, or 'all'.")
    return first, last


@dataclasses.dataclass
class LoReFTConfig(InterventionConfig):
    rank: int = 4
    """r: rows of R and W (pyreft's low_rank_dimension)."""
    positions: str = "all"
    """Tokens it edits: "all" (every token of prompt and completion while training, every prompt and generated token
    while steering), or pyreft's "f<a>+l<b>": the first a and last b tokens of the prompt only (generated tokens are
    then not edited: they read the edited prompt through attention). Why "all" is the default: the class docstring."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}.")
        parse_positions(self.positions)


@register("loreft")
class LoReFT(Intervention):
    # The docstring, its first line split for line length: the model card quotes that line whole as the equation.
    (
        "h' = h + s R^T (W h + b - R h)   at the hook, at the tokens `positions` names "
        """(LoReFT, pyreft's LoreftIntervention).

    R [rank, d_model] has orthonormal rows (pyreft keeps them so with torch's orthogonal parametrisation), W [rank,
    d_model], b [rank]: the part of h in R's row space is replaced by W h + b. s = 1 is pyreft's trained intervention
    exactly, s = 0 the identity, a [batch] s one strength per row. At init W = R, b = 0: the identity (R^T(Rh - Rh) = 0)
    until `train_own` loads what pyreft learned.

    Positions. "all" by default: the same tokens every other method here edits, so a comparison differs only in the
    parametrisation, and the strength scales the edit of every response token. pyreft's usual prompt-only
    "f<a>+l<b>" (chosen for task fine-tuning, where the prompt decides the answer) reaches generated tokens only
    through attention to a few edited prompt tokens; it is there for that reading: trained on the prompt's first a /
    last b tokens, and while generating applied once, on the prompt (the prefill; `begin_generation` gives the
    padding), never on generated tokens. Measured on SmolLM2 (sentiment, blocks.12.hook_resid_post, rank 4, 36
    steps of lr 4e-3, seed 0): both steer the three 32-token validation samples to clearly positive text; "all"
    reaches the lower validation loss, 2.01 against 2.10 for "f5+l5" (first step: 3.51 for both).
    """
    )

    Config = LoReFTConfig
    kind = "trained"

    def __init__(self, cfg: LoReFTConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        if cfg.rank > d_model:
            raise ValueError(
                f"LoReFT rank {cfg.rank} exceeds d_model {d_model}: R cannot have that many orthonormal rows."
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            R = nn.init.orthogonal_(torch.empty(cfg.rank, d_model))  # [rank, d_model], orthonormal rows
        self.R, self.W = nn.Parameter(R), nn.Parameter(R.clone())
        self.b = nn.Parameter(torch.zeros(cfg.rank))
        self.span = parse_positions(cfg.positions)
        self.__dict__["_prompt"] = None  # [batch, pos] attention mask of the prompt being generated from (f/l)

    @classmethod
    def check_can_train(cls, cfg: dict) -> None:
        require_pyreft()
        if cfg.get("objective", "sft") != "sft" or (cfg.get("kl_coef") or 0) != 0:
            raise ValueError(
                f"loreft trains in pyreft on the SFT objective only (prompt -> positive), got objective="
                f"{cfg.get('objective')} kl_coef={cfg.get('kl_coef')}: use objective=sft kl_coef=0."
            )

    # -- applying -----------------------------------------------------------------------------------
    def edit(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        """R^T (W h + b - R h), in pyreft's order of operations."""
        R = self.R.to(h.dtype)
        low = nn.functional.linear(h, self.W.to(h.dtype), self.b.to(h.dtype)) - h @ R.T  # [batch, pos, rank]
        return low @ R

    def steer(self, h: Float[Tensor, "batch pos d_model"], s: float | Tensor) -> Float[Tensor, "batch pos d_model"]:
        where = self.where(h)
        if where is None:
            return h + s * self.edit(h)
        if not bool(where.any()):
            return h  # a decode step of a prompt-only LoReFT
        return torch.where(where[..., None], h + s * self.edit(h), h)

    def where(self, h: Tensor) -> Tensor | None:
        """[batch or 1, pos] bool: the tokens edited in this forward call (None: every token)."""
        if self.span is None:
            return None
        first, last = self.span
        mask = self._prompt
        if mask is not None and mask.shape[1] != h.shape[1] and h.shape[1] == 1:  # a decode step after the prefill
            return torch.zeros(1, 1, dtype=torch.bool, device=h.device)
        if mask is None or mask.shape[1] != h.shape[1]:  # a bare residual: one unpadded prompt per row
            mask = torch.ones(1, h.shape[1], dtype=torch.long, device=h.device)
        mask = mask.to(h.device).long()
        count = mask.cumsum(-1)  # [batch, pos]: 1-based index among real tokens
        from_end = mask.sum(-1, keepdim=True) - count  # 0 at the last real token
        return mask.bool() & ((count <= first) | (from_end < last))

    def begin_generation(self, attention_mask: Tensor | None) -> None:
        self.__dict__["_prompt"] = None if attention_mask is None else attention_mask.detach()

    @contextmanager
    def attach_to(self, model: nn.Module, hook: str, strength: Strength = 1.0, positions=None) -> Iterator[None]:
        """The residual hook (every token for "all"); prompt-only spans forget the prompt when the context exits."""
        strength = check_strength(strength)
        if self.span is not None and positions is not None:
            raise ValueError(
                f"loreft with positions={self.cfg.positions} picks its own tokens; positions= is not supported."
            )
        try:
            if is_zero(strength):
                yield
            else:
                with super().attach_to(model, hook, strength, positions):
                    yield
        finally:
            self.begin_generation(None)

    def describe(self) -> dict:
        gram = self.R.detach() @ self.R.detach().T  # [rank, rank]
        eye = torch.eye(self.cfg.rank, device=gram.device)
        return {
            **super().describe(),
            "rank": self.cfg.rank,
            "positions": self.cfg.positions,
            "orthonormality_error": float((gram - eye).abs().max()),
        }

    # -- training in pyreft -------------------------------------------------------------------------
    def train_own(self, stack, concept, cfg: dict) -> dict:
        """Train in .venv-pyreft on the concept's SFT pairs; load the exported R, W, b; return the metrics."""
        python = require_pyreft()
        with tempfile.TemporaryDirectory(prefix="saebasis-loreft-") as tmp:
            work = Path(tmp)
            spec = {
                **worker_spec(stack, work, self.cfg.rank, cfg),
                "data": str(work / "data.safetensors"),
                "out": str(work / "out"),
                "all_positions": self.span is None,
            }
            n_steps = write_training_data(work / "data.safetensors", stack, concept, cfg, self.span)
            print(f"[saebasis] training loreft in pyreft ({python}): {n_steps} steps")
            start = time.time()
            report = run_worker(python, "train", spec, work)
            seconds = time.time() - start
            self.load_exported(work / "out" / "loreft.safetensors")
        losses = report["losses"]
        return {
            "train/loss": losses[-1],
            "train/loss_first": losses[0],
            **({"val/loss": report["val_loss"]} if report.get("val_loss") is not None else {}),
            "loss_curve": [round(x, 5) for x in losses],
            "train_time_s": round(seconds, 2),
            "pyreft_train_time_s": round(report["seconds"], 2),
            "steps": report["steps"],
            "trained_by": report["versions"],
        }

    def load_exported(self, path: Path) -> None:
        from safetensors.torch import load_file

        p = load_file(path)
        for name in ("R", "W", "b"):
            target = getattr(self, name)
            if p[name].shape != target.shape:
                raise ValueError(f"pyreft exported {name} {tuple(p[name].shape)}, expected {tuple(target.shape)}.")
            with torch.no_grad():
                target.copy_(p[name])


def block_layer(model: nn.Module, hook: str) -> int:
    """pyreft's `layer` (component block_output) whose output is the residual at `hook`."""
    from saebasis.interventions.caa import block_output_layer

    return block_output_layer(model, hook)


def model_folder(stack, work: Path) -> Path:
    """A transformers-4 folder of the stack's model: a linked copy of its own folder, or (a model built in memory,
    e.g. tiny-llama) saved first."""
    from saebasis.core.models import transformers4_folder

    source = getattr(stack.model, "name_or_path", "") or ""
    if not (source and (Path(source) / "config.json").exists()):
        source = work / "model"
        stack.model.save_pretrained(source)
    return transformers4_folder(source, work / "model-tf4" if Path(source).parent == work else None)


def worker_spec(stack, work: Path, rank: int, cfg: dict) -> dict:
    param = next(stack.model.parameters())
    trainer = cfg.get("trainer") or {}
    return {
        "model_dir": str(model_folder(stack, work)),
        "layer": block_layer(stack.model, stack.hook),
        "rank": rank,
        "dtype": str(param.dtype).removeprefix("torch."),
        "device": str(param.device),
        "seed": cfg["seed"],
        "lr": cfg["lr"],
        "weight_decay": cfg.get("weight_decay", 0.0),
        "batch_size": cfg["batch_size"],
        "grad_clip": trainer.get("gradient_clip_val"),
    }


def training_batches(n: int, cfg: dict) -> list[list[int]]:
    """The training batches in the order saebasis' own trainer draws them (StepSeededSampler, one seeded shuffle per
    epoch), for min(max_steps, max_epochs x batches per epoch) steps; fast_dev_run: one."""
    trainer = cfg.get("trainer") or {}
    size = cfg["batch_size"]
    per_epoch = max(1, math.ceil(n / size))
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    limits = [
        s
        for s in ((steps if steps and steps > 0 else None), (epochs * per_epoch if epochs and epochs > 0 else None))
        if s
    ]
    if trainer.get("fast_dev_run"):
        limits.append(1)
    if not limits:
        raise ValueError("loreft needs a finite training length: set trainer.max_epochs or trainer.max_steps.")
    total, out, epoch = min(limits), [], 0
    while len(out) < total:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg["seed"] * 1000 + epoch)).tolist()
        out += [perm[i : i + size] for i in range(0, n, size)]
        epoch += 1
    return out[:total]


def write_training_data(path: Path, stack, concept, cfg: dict, span: tuple[int, int] | None) -> int:
    """The pairs as saebasis' trainer sees them (data.split_pairs' split, encode_pairs' tokens) -> safetensors."""
    from safetensors.torch import save_file

    from saebasis.core.activations import completion_labels, encode_pairs
    from saebasis.data import split_pairs

    train_rows, val_rows = split_pairs(concept, cfg["val_fraction"], cfg["seed"], cfg.get("max_pairs"))
    rows = train_rows + val_rows
    enc = encode_pairs(stack.tokenizer, [r[0] for r in rows], [r[1] for r in rows], cfg["max_len"])  # [n, pos] each
    batches = training_batches(len(train_rows), cfg)
    tensors = {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": completion_labels(enc),
        "order": torch.tensor([i for b in batches for i in b]),
        "bounds": torch.tensor([0, *torch.tensor([len(b) for b in batches]).cumsum(0).tolist()]),
        "val_rows": torch.arange(len(train_rows), len(rows)),
    }
    if not val_rows:
        tensors.pop("val_rows")
    if span is not None:
        tensors["positions"] = prompt_positions(enc["attention_mask"], enc["completion_mask"], *span)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return len(batches)


def prompt_positions(mask: Tensor, completion: Tensor, first: int, last: int) -> Tensor:
    """[n, first + last] columns of each row's first / last prompt tokens (left padding; repeats when the prompt is
    shorter than first + last, as the same token edited once)."""
    pad = (mask == 0).sum(-1, keepdim=True)  # [n, 1]
    n_prompt = (mask.sum(-1, keepdim=True) - completion.sum(-1, keepdim=True)).clamp(min=1)  # [n, 1]
    heads = pad + torch.minimum(torch.arange(first)[None], n_prompt - 1)  # [n, first]
    tails = pad + (n_prompt - last + torch.arange(last)[None]).clamp(min=0)  # [n, last]
    return torch.cat([heads, tails], dim=1)


def run_worker(python: Path, command: str, spec: dict, work: Path) -> dict:
    """`loreft_worker.py command spec` under pyreft's python; its last stdout line is the JSON result."""
    (work / f"{command}.json").write_text(json.dumps(spec))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)  # saebasis' own path must not shadow the worker venv's packages
    done = subprocess.run(
        [str(python), str(WORKER), command, str(work / f"{command}.json")], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"the pyreft worker ({command}) failed with exit code {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])
