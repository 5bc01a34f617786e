"""CAA through steering-vectors (peer): its own `train_steering_vector` and its own `SteeringVector.apply`.

Optional: needs `steering-vectors` (bash scripts/setup_peers.sh installs it with --no-deps: it declares
transformers<5, but imports nothing from transformers except a tokenizer type, and runs on 5.x here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from saebasis.core import hooks
from saebasis.core.activations import chat_prefix, example_means
from saebasis.interventions.base import FitData, InterventionConfig, Strength, check_strength, is_zero, register
from saebasis.interventions.diffmean import FittedVector


def require_steering_vectors():
    try:
        import steering_vectors
    except ImportError as err:
        raise ImportError(
            "intervention=caa needs steering-vectors: bash scripts/setup_peers.sh "
            "(pip install --no-deps steering-vectors==0.12.2 scikit-learn)."
        ) from err
    return steering_vectors


@dataclasses.dataclass
class CAAConfig(InterventionConfig):
    read_token_index: int = -1
    """Token read in each positive / negative text (steering-vectors' default -1: the last token)."""
    min_token_index: int = 0
    """Apply the vector from this token index of each forward call on (the library's default 0: every token)."""
    batch_size: int = 1
    """Texts per forward pass while training (steering-vectors' default 1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1 or self.min_token_index < 0:
            raise ValueError(
                f"batch_size must be >= 1 and min_token_index >= 0, got {self.batch_size}, {self.min_token_index}."
            )


def block_output_layer(model: nn.Module, hook: str) -> int:
    """steering-vectors' decoder_block index whose output is the residual at `hook`."""
    point = hooks.parse_hook(hook)
    layer = point.layer if point.kind == "post" else point.layer - 1
    if layer < 0:
        raise ValueError(
            f"CAA reads and writes a decoder block's output; '{hook}' is the embeddings. Use a later hook."
        )
    hooks.resolve(model, f"blocks.{layer}.hook_resid_post")
    return layer


@register("caa")
class CAA(FittedVector):
    """h' = h + s v at the output of the block before the hook, v = mean_i(h_pos_i[read] - h_neg_i[read])
    (CAA, Rimsky et al. 2024), fitted by steering-vectors' `train_steering_vector` on the concept's pairs as
    chat(prompt) + completion texts (tokenized by the library itself) and applied by its `SteeringVector.apply`.

    `prepare` hands it the model and the concept (it needs them: the library reads activations itself); `fit`
    uses as many pairs as `FitData` holds, and records the cosine between the library's vector and saebasis'
    own last-token DiffMean on the same pairs (`fit_check_cosine`).
    """

    Config = CAAConfig

    def __init__(self, cfg: CAAConfig, d_model: int, sae=None) -> None:
        super().__init__(cfg, d_model, sae)
        require_steering_vectors()
        self.__dict__["_stack"] = None
        self.__dict__["_check"] = None

    @property
    def fit_positions(self) -> str:
        return "last"  # saebasis' own activations at CAA's read position: the cross-check

    def prepare(self, stack, concept, max_len: int) -> None:
        self.__dict__["_stack"] = (stack, concept)

    def fit(self, data: FitData) -> CAA:
        if self._stack is None:
            raise ValueError(
                "CAA reads activations through steering-vectors and needs the model: "
                "call prepare(stack, concept, max_len) before fit."
            )
        sv_lib = require_steering_vectors()
        stack, concept = self._stack
        pairs = concept.pairs[: len(data.positive)]
        texts = [
            (chat_prefix(stack.tokenizer, p.prompt) + p.positive, chat_prefix(stack.tokenizer, p.prompt) + p.negative)
            for p in pairs
        ]
        layer = block_output_layer(stack.model, stack.hook)
        vector = sv_lib.train_steering_vector(
            stack.model,
            stack.tokenizer,
            texts,
            layers=[layer],
            layer_type="decoder_block",
            read_token_index=self.cfg.read_token_index,
            batch_size=self.cfg.batch_size,
        )
        self.v.copy_(vector.layer_activations[layer].to(self.v))
        if self.cfg.read_token_index == -1:
            own = example_means(data.positive).mean(0) - example_means(data.negative).mean(0)  # [d_model]
            self.__dict__["_check"] = float(torch.nn.functional.cosine_similarity(own, self.v, dim=0))
        return self

    @contextmanager
    def attach_to(self, model: nn.Module, hook: str, strength: Strength = 1.0, positions=None) -> Iterator[None]:
        """steering-vectors' own application at the output of the block before `hook` (a [batch] strength
        through its `operator`, so each row gets its own multiplier)."""
        strength = check_strength(strength)
        if positions is not None:
            raise ValueError(
                "CAA is applied by steering-vectors from min_token_index on; positions= is not supported "
                "(set intervention.min_token_index instead)."
            )
        layer = block_output_layer(model, hook)
        if is_zero(strength):
            yield
            return
        sv_lib = require_steering_vectors()
        vector = sv_lib.SteeringVector({layer: self.v}, "decoder_block")
        kw = {"multiplier": strength} if not isinstance(strength, Tensor) else {"operator": _per_row(strength)}
        with vector.apply(model, min_token_index=self.cfg.min_token_index, **kw):
            yield

    def folded_shift(self, strength: float = 1.0) -> Tensor | None:
        """v at every token only when the library applies it from the first token on (min_token_index 0)."""
        return super().folded_shift(strength) if self.cfg.min_token_index == 0 else None

    def unfolded_reason(self) -> str:
        return (
            f"caa with min_token_index={self.cfg.min_token_index} adds v only from that token on, which a "
            "control vector (added at every token) cannot express; export a run fitted with min_token_index=0."
        )

    def describe(self) -> dict:
        out = super().describe()
        return out if self._check is None else {**out, "fit_check_cosine": round(self._check, 6)}


def _per_row(strength: Tensor):
    def operator(original: Tensor, vector: Tensor) -> Tensor:  # original [batch, pos, d_model], vector [1, 1, d_model]
        if strength.shape[0] != original.shape[0]:
            raise ValueError(
                f"per-row strength has {strength.shape[0]} entries for a batch of {original.shape[0]} rows."
            )
        return strength.to(device=original.device, dtype=original.dtype)[:, None, None] * vector.to(original.dtype)

    return operator
