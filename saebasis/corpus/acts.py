"""Residual activations of the corpus at several layers, cached per shard, for SAE training.

Why: on a CPU the model's forward pass costs far more than the SAE's training step (SmolLM2-135M to layer 18:
~600 tokens/s on 2 cores, against ~4,000 tokens/s for a 4,096-latent TopK step), so streaming text through
the model for every pass over the corpus (sae-lens' default) spends most of the time recomputing the same
activations. Here each document's residual at every cached layer is computed once (captured for free while
the corpus is generated, or by one forward pass per shard afterwards) and stored as fp16 safetensors; SAEs
for several layers then train for several passes from the same cache (`CachedActivations` is the data
provider handed to sae-lens' own trainer, so its TopK auxiliary loss, dead-latent tracking, schedules and
wandb logging are unchanged).

What is kept, per document, in its own context from its first token (as the SAE will see chat text when a
method steers): every token except special tokens (chat-template markers, padding; sae-lens'
`exclude_special_tokens`) and the chat template's shared opening (the system prompt, identical in every
document), which is kept in one document of `PREFIX_EVERY` only so that it is represented but does not take
a seventh of the data. Held-out shards are never cached: SAE quality is measured on their text.

Layout: `<dir>/shard-00000.safetensors` with one `[n, d_model]` fp16 tensor per hook name
(`blocks.12.hook_resid_post`, ...) and `token_ids` `[n]`; its metadata holds a digest of the shard's text
rows, so a cache built from other text (a rebuilt corpus) is recomputed, never silently reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from saebasis.core import hooks
from saebasis.core.activations import right_padded
from saebasis.corpus.build import is_heldout, read_shard, shard_indices

PREFIX_EVERY = 16  # keep the shared system-prompt opening in one document of 16


def default_dir(corpus_dir: Path, model_name: str) -> Path:
    """Where the activations of `corpus_dir` under model `model_name` are cached (GBs: never in the repository)."""
    from saebasis.core.models import cache_root

    return cache_root() / "acts" / model_name / Path(corpus_dir).name


def hook_name(layer: int) -> str:
    return hooks.HookPoint(layer, "post").name


def template_prefix(tokenizer) -> list[int]:
    """Token ids every chat-formatted user turn starts with (the template's system block and user marker): the
    common prefix of two chats that differ only in the user's text. Empty without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    a, b = (
        tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
        for text in ("Alpha", "Omega")
    )
    ids_a, ids_b = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (a, b))
    n = 0
    while n < min(len(ids_a), len(ids_b)) and ids_a[n] == ids_b[n]:
        n += 1
    return ids_a[:n]


def special_ids(tokenizer) -> Tensor:
    """The tokenizer's special token ids (chat-template markers, padding), sorted."""
    return torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)


def keep_mask(ids: Tensor, prefix: Sequence[int], special: Tensor, keep_prefix: bool) -> Tensor:
    """Which positions of one document's token ids `[pos]` train the SAE: not special, and not the shared
    chat-template opening unless `keep_prefix`."""
    keep = ~torch.isin(ids, special)
    n = len(prefix)
    if n and not keep_prefix and ids.shape[0] >= n and ids[:n].tolist() == list(prefix):
        keep[:n] = False
    return keep


def rows_digest(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps([[r["id"], r["text"]] for r in rows]).encode()).hexdigest()[:16]


def acts_path(directory: Path, index: int) -> Path:
    return Path(directory) / f"shard-{index:05d}.safetensors"


def save_acts(path: Path, acts: dict[str, Tensor], token_ids: Tensor, rows: list[dict]) -> None:
    for name, a in acts.items():
        if not torch.isfinite(a).all():
            raise ValueError(
                f"non-finite activations at {name} for {path.name}: the model overflowed; cache in float32."
            )
    tmp = path.with_suffix(".tmp")
    save_file(
        {**{k: v.contiguous() for k, v in acts.items()}, "token_ids": token_ids.to(torch.int32).contiguous()},
        str(tmp),
        metadata={"digest": rows_digest(rows), "n_docs": str(len(rows))},
    )
    tmp.replace(path)


def cached_ok(directory: Path, index: int, rows: list[dict], names: Sequence[str]) -> bool:
    """The cache of shard `index` exists, was built from these rows, and holds every hook in `names`."""
    path = acts_path(directory, index)
    if not path.exists():
        return False
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata().get("digest") == rows_digest(rows) and set(names) <= set(f.keys())
    except Exception:  # a truncated / corrupt file is rebuilt
        return False


class GenerationCapture:
    """Records the residual at `layers` while `model.generate` writes a batch (prefill + every decode step),
    so corpus generation yields the SAE's training activations at no extra forward pass.

    Use: `with capture.recording(model): out = model.generate(...)`, then `capture.take(out, prompt_len, ids)`
    returns each document's kept activations. The last sampled token is never fed back, so it has none."""

    def __init__(self, tokenizer, layers: Sequence[int], directory: Path):
        self.layers, self.directory = list(layers), Path(directory)
        self.prefix, self.special = template_prefix(tokenizer), special_ids(tokenizer)
        self.steps: dict[int, list[Tensor]] = {}
        self.parts: dict[str, list[Tensor]] = {}
        self.tokens: list[Tensor] = []

    def recording(self, model):
        stack = ExitStack()
        self.steps = {layer: [] for layer in self.layers}
        for layer in self.layers:
            stack.enter_context(hooks.attach(model, hook_name(layer), self._grab(layer)))
        return stack

    def _grab(self, layer: int):
        def grab(h: Tensor) -> Tensor:
            self.steps[layer].append(h.detach().to(torch.float16))
            return h

        return grab

    def take(self, out: Tensor, doc_ids: Sequence[int], attention_mask: Tensor) -> None:
        """Keep the captured activations of one generated batch: `out` [batch, prompt + new] token ids,
        `attention_mask` the prompt's (left padding)."""
        seqs = {layer: torch.cat(steps, dim=1) for layer, steps in self.steps.items()}  # [batch, fed, d]
        fed = next(iter(seqs.values())).shape[1]
        pads = (attention_mask == 0).sum(1)  # left padding per row
        for row, doc in enumerate(doc_ids):
            ids = out[row, int(pads[row]) : fed]
            keep = keep_mask(ids, self.prefix, self.special, doc % PREFIX_EVERY == 0)
            self.tokens.append(ids[keep])
            for layer, seq in seqs.items():
                self.parts.setdefault(hook_name(layer), []).append(seq[row, int(pads[row]) : fed][keep])
        self.steps = {layer: [] for layer in self.layers}

    def write(self, index: int, rows: list[dict]) -> None:
        """Write shard `index`'s activations (before its text shard is written, so a text shard without a
        cache only means the process stopped in between; `build_cache` then recomputes it)."""
        if not is_heldout(index):
            self.directory.mkdir(parents=True, exist_ok=True)
            save_acts(
                acts_path(self.directory, index),
                {k: torch.cat(v) for k, v in self.parts.items()},
                torch.cat(self.tokens),
                rows,
            )
        self.parts, self.tokens = {}, []


@torch.no_grad()
def shard_activations(
    model, tokenizer, rows: list[dict], layers: Sequence[int], batch_size: int = 16, max_len: int = 512
) -> tuple[dict[str, Tensor], Tensor]:
    """One forward pass per batch of documents (right-padded, stopped after the deepest layer): the kept
    activations of every document at every layer, in document order."""
    prefix, special = template_prefix(tokenizer), special_ids(tokenizer)
    deepest = max(layers)
    docs = [
        tokenizer(r["text"], add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"] for r in rows
    ]
    device = next(model.parameters()).device
    parts: dict[str, list[Tensor]] = {hook_name(layer): [] for layer in layers}
    tokens = []
    for start in range(0, len(docs), batch_size):
        chunk = docs[start : start + batch_size]
        ids, mask = right_padded(chunk, tokenizer.pad_token_id)
        with ExitStack() as stack:
            grabbed = {
                layer: stack.enter_context(hooks.record(model, hook_name(layer), stop=layer == deepest))
                for layer in layers
            }
            try:
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            except hooks.StopForward:
                pass
        for row, d in enumerate(chunk):
            doc_ids = torch.tensor(d)
            keep = keep_mask(doc_ids, prefix, special, rows[start + row]["id"] % PREFIX_EVERY == 0)
            tokens.append(doc_ids[keep])
            for layer in layers:
                parts[hook_name(layer)].append(
                    grabbed[layer][0][row, : len(d)][keep.to(device)].to(torch.float16).cpu()
                )
    return {k: torch.cat(v) for k, v in parts.items()}, torch.cat(tokens)


def build_cache(
    model,
    tokenizer,
    corpus_dir: Path,
    cache_dir: Path,
    layers: Sequence[int],
    n_shards: int | None = None,
    batch_size: int = 16,
) -> list[Path]:
    """Cache every training shard of `corpus_dir` that has no valid cache yet (resumable; held-out shards are
    skipped); returns the cache files of all training shards."""
    names = [hook_name(layer) for layer in layers]
    indices = [i for i in shard_indices(corpus_dir) if not is_heldout(i) and (n_shards is None or i < n_shards)]
    rows_of = {i: read_shard(corpus_dir, i) for i in indices}
    todo = [i for i in indices if not cached_ok(cache_dir, i, rows_of[i], names)]
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    for i in tqdm(todo, desc=f"activations of corpus shards (layers {list(layers)})", unit="shard"):
        acts, tokens = shard_activations(model, tokenizer, rows_of[i], layers, batch_size)
        save_acts(acts_path(cache_dir, i), acts, tokens, rows_of[i])
    return [acts_path(cache_dir, i) for i in indices]


class CachedActivations:
    """sae-lens data provider over cached activations of one hook: yields `[batch_tokens, d_model]` float32
    batches, every token once per pass, in a fresh random order each pass (a global shuffle, stronger than
    sae-lens' mixing buffer). `save_to_checkpoint` lets sae-lens' runner checkpoint it like its own store."""

    def __init__(self, files: Sequence[Path], hook: str, batch_tokens: int, seed: int = 0, device: str = "cpu"):
        parts = []
        for path in files:
            with safe_open(str(path), "pt") as f:
                if hook not in f.keys():
                    raise ValueError(
                        f"{path} has no activations for {hook}: rebuild the cache with that layer "
                        f"(corpus.cache_layers) or delete {Path(path).parent}."
                    )
                parts.append(f.get_tensor(hook))
        if not parts:
            raise ValueError("no cached activations: the corpus has no training shard.")
        self.acts = torch.cat(parts)  # [n, d] fp16
        self.batch_tokens, self.device = batch_tokens, device
        self.generator = torch.Generator().manual_seed(seed)
        self.passes, self._order, self._at = 0, torch.empty(0, dtype=torch.long), 0

    def __len__(self) -> int:
        return self.acts.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        if self._at + self.batch_tokens > len(self._order):
            self._order = torch.randperm(len(self), generator=self.generator)
            self._at, self.passes = 0, self.passes + 1
        idx = self._order[self._at : self._at + self.batch_tokens]
        self._at += self.batch_tokens
        return self.acts[idx].float().to(self.device)

    def save_to_checkpoint(self, checkpoint_path) -> None:
        Path(checkpoint_path).mkdir(parents=True, exist_ok=True)
        (Path(checkpoint_path) / "cached_activations.json").write_text(
            json.dumps({"passes": self.passes, "at": self._at})
        )
