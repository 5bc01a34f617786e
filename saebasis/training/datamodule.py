"""LightningDataModule over a concept: SFT / preference pairs and neutral prompts for the KL term."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from saebasis.core.activations import completion_labels, encode_pairs  # noqa: F401  (completion_labels: re-export)
from saebasis.data import Concept, split_pairs


class PairCollator:
    """Tokenises (prompt, positive, negative) rows into left-padded batches for both completions."""

    def __init__(self, tokenizer, max_len: int) -> None:
        self.tokenizer, self.max_len = tokenizer, max_len

    def __call__(self, rows: list[tuple[str, str, str]]) -> dict[str, dict[str, torch.Tensor]]:
        prompts = [r[0] for r in rows]
        return {
            "pos": encode_pairs(self.tokenizer, prompts, [r[1] for r in rows], self.max_len),
            "neg": encode_pairs(self.tokenizer, prompts, [r[2] for r in rows], self.max_len),
        }


class StepSeededSampler(torch.utils.data.Sampler):
    """Shuffles with a seed derived from the epoch the optimizer step count is in, read when iteration
    starts, and skips the batches of that epoch already trained on: a run resumed from a checkpoint
    (also one killed mid-epoch) sees exactly the batches an uninterrupted run would.

    Under DDP it shards itself (Lightning's own distributed sampler is switched off, since its length
    would not match a resumed epoch): the permutation is padded by wrapping to a multiple of
    `world_size`, as torch's DistributedSampler does, and rank r takes every `world_size`-th index from r.
    Every rank sees the same number of batches, so the step count means the same on each."""

    def __init__(self, n: int, batch_size: int, seed: int, global_step, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}.")
        self.n, self.batch_size, self.seed, self.global_step = n, batch_size, seed, global_step
        self.rank, self.world_size = rank, world_size
        self.per_rank = -(-n // world_size)
        self.n_batches = max(1, -(-self.per_rank // batch_size))

    def __iter__(self):
        epoch, done = divmod(self.global_step(), self.n_batches)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + epoch)).tolist()
        perm = (perm * self.world_size)[: self.per_rank * self.world_size]  # pad by wrapping
        return iter(perm[self.rank :: self.world_size][done * self.batch_size :])

    def __len__(self) -> int:
        return self.per_rank


class ConceptDataModule(L.LightningDataModule):
    """Train / val split of the concept's pairs (a seeded shuffle, val = the first `val_fraction`), plus neutral
    prompts."""

    def __init__(
        self,
        concept: Concept,
        tokenizer,
        batch_size: int = 8,
        max_len: int = 64,
        val_fraction: float = 0.1,
        seed: int = 0,
        max_pairs: int | None = None,
    ) -> None:
        super().__init__()
        self.train_rows, self.val_rows = split_pairs(concept, val_fraction, seed, max_pairs)
        self.neutral = list(concept.neutral)
        self.collate = PairCollator(tokenizer, max_len)
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self) -> DataLoader:
        step = lambda: self.trainer.global_step if self.trainer else 0
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = StepSeededSampler(len(self.train_rows), self.batch_size, self.seed, step, rank, world)
        return DataLoader(self.train_rows, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_rows or self.train_rows[:1], batch_size=self.batch_size, collate_fn=self.collate)

    def neutral_batch(self, step: int, size: int) -> dict[str, torch.Tensor]:
        """A deterministic cycling batch of neutral prompts (for KL(steered || base))."""
        start = (step * size) % max(1, len(self.neutral))
        prompts = (self.neutral * 2)[start : start + size]
        return encode_pairs(self.collate.tokenizer, prompts, [""] * len(prompts), self.collate.max_len)
