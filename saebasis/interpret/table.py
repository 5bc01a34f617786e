"""The per-latent table: everything the report says about a latent that does not depend on the run.

Computed once per (model, SAE, corpus, settings) from the SAE's activations over a corpus, and saved as a
gzip-compressed safetensors file (`table.safetensors.gz`) plus a readable `table.json` (never pickle):

  density [d_sae]            fraction of encoded corpus tokens where the latent fires (> 0)
  n_fire, n_docs_fire        firing tokens, documents with at least one
  ctx_*                      up to `n_contexts` max-activating contexts per latent (CSR: latent i owns rows
                             ctx_ptr[i]:ctx_ptr[i+1], strongest first): document index, peak position in it,
                             peak activation, how many documents shared the same prefix (shown once; see
                             contexts.py), and a window of `before` + 1 + `after` token ids with the latent's
                             activation on each (-1 pads past a document's edge; the peak is column `before`)
  top_ids / top_counts       the tokens it fires on, most frequent first (share = count / n_fire)
  prev_ids / prev_counts     the tokens just before those (share = count / n_prev)
  lift_ids / lift_counts /   the tokens it fires on ranked by lift = share among its firing tokens / share among all
  lift                       encoded corpus tokens (its base rate), among tokens seen >= MIN_COUNT times (or, for
                             a latent that fires on no token that often, those seen most often): a frequent function
                             word it fires on no more than anything else has lift ~1 and ranks last. A table built
                             here ranks every firing token; a table built before lift existed gets them from its
                             top_ids (`add_lift`: the k_tokens most frequent firing tokens re-ranked by lift);
                             info["lift"] says which
  prev_lift_ids / ..._counts the same for the tokens just before (base rate: all corpus tokens)
  / prev_lift
  lens_up*/lens_down*        logit lens of W_dec[i] (lens.py): most promoted / suppressed tokens, with logits
  output_score, input_score, per-latent effect scores (interventions/latent_effect.py: Arad et al.'s output and
  delta_conf                 input scores, the change of next-token confidence); input_score is NaN for a latent
                             with no context. Present when computed (`latent_table(effect=True)`; the shipped tables
                             have them); info["effect"] records their settings, seconds and fingerprint

Where it lives: a shipped SAE carries the table of the shipped held-out corpus in its asset folder
(`saebasis/assets/sae/<name>/latents/`, written by scripts/build_latent_tables.py); any other SAE or corpus
gets it computed once and cached under `saebasis.core.models.cache_root()/latent_tables/<key>`. The key is
cache.cache_key: model (config + weights sample), SAE (weights sample + hook), corpus token ids, settings.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor
from tqdm.auto import tqdm

from saebasis.core.models import cache_root
from saebasis.core.sae import resolve_builtin
from saebasis.interpret.cache import LatentCache, cache_key, encode_corpus, tokenize, valid_mask
from saebasis.interpret.contexts import Context, token_texts
from saebasis.interpret.lens import through_norm
from saebasis.interventions.latent_effect import SCORES, EffectSettings, effect_scores, fingerprint, input_scores

FORMAT = 2  # 2: the chat template's shared opening is not encoded (cache.valid_mask)
MIN_COUNT = 3  # firing tokens seen fewer times are not ranked by lift (one sighting gives a huge, noisy lift)
TENSORS = "table.safetensors.gz"
INFO = "table.json"


@dataclasses.dataclass
class TableSettings:
    max_len: int = 128
    """Tokens per document (longer documents are truncated)."""
    skip_first: int = 1
    """Positions not encoded at the start of each document (the attention sink)."""
    skip_special: bool = True
    """Special (chat-template) tokens are not encoded."""
    n_contexts: int = 20
    """Max-activating contexts kept per latent."""
    before: int = 16
    """Window tokens before each context's peak."""
    after: int = 4
    """Window tokens after it."""
    k_tokens: int = 10
    """Top activating tokens / tokens before them kept per latent."""
    k_lens: int = 10
    """Logit-lens tokens kept per latent (each side)."""

    def __post_init__(self) -> None:
        if (
            min(self.max_len, self.n_contexts, self.k_tokens, self.k_lens) < 1
            or min(self.skip_first, self.before, self.after) < 0
        ):
            raise ValueError(f"table settings out of range: {self}. Counts must be >= 1, offsets >= 0.")


@dataclasses.dataclass
class LatentTable:
    t: dict[str, Tensor]
    info: dict

    @property
    def d_sae(self) -> int:
        return self.t["density"].numel()

    def density(self, i: int) -> float:
        return float(self.t["density"][i])

    def n_contexts(self, i: int) -> int:
        return int(self.t["ctx_ptr"][i + 1] - self.t["ctx_ptr"][i])

    def alive(self) -> Tensor:
        return (self.t["n_fire"] > 0).nonzero()[:, 0]

    def contexts(self, i: int, tokenizer, n: int | None = None) -> list[Context]:
        """Latent i's max-activating contexts (strongest first), padding dropped."""
        lo, hi = int(self.t["ctx_ptr"][i]), int(self.t["ctx_ptr"][i + 1])
        out = []
        for r in range(lo, hi if n is None else min(hi, lo + n)):
            keep = self.t["ctx_tokens"][r] >= 0
            ids = self.t["ctx_tokens"][r][keep].tolist()
            out.append(
                Context(
                    int(self.t["ctx_doc"][r]),
                    int(self.t["ctx_pos"][r]),
                    float(self.t["ctx_max"][r]),
                    token_texts(tokenizer, ids),
                    self.t["ctx_acts"][r][keep].float().tolist(),
                    self.t["ctx_skipped"][r][keep].tolist(),
                    int(self.t["ctx_count"][r]),
                )
            )
        return out

    def context_texts(self, i: int, tokenizer) -> list[str]:
        """Each context's window decoded as plain text (what a judge reads)."""
        lo, hi = int(self.t["ctx_ptr"][i]), int(self.t["ctx_ptr"][i + 1])
        rows = self.t["ctx_tokens"][lo:hi]
        return [tokenizer.decode(row[row >= 0].tolist(), skip_special_tokens=True) for row in rows]

    def token_stats(self, i: int, tokenizer) -> dict:
        """{fires_on, before, promotes, suppresses, fires_on_lift, before_lift}: lists of [token, count, share]
        (lens: [token, logit]; *_lift: [token, count, share, lift], empty in a table without lift columns)."""

        def counted(ids: str, counts: str, total: int) -> list:
            pairs = [(a, c) for a, c in zip(self.t[ids][i].tolist(), self.t[counts][i].tolist()) if a >= 0]
            return [[tokenizer.decode([a]), c, c / max(1, total)] for a, c in pairs]

        def lifted(prefix: str, total: int) -> list:
            if f"{prefix}_ids" not in self.t:
                return []
            ids, counts = self.t[f"{prefix}_ids"][i].tolist(), self.t[f"{prefix}_counts"][i].tolist()
            rows = zip(ids, counts, self.t[prefix][i].tolist())
            return [[tokenizer.decode([a]), c, c / max(1, total), float(x)] for a, c, x in rows if a >= 0]

        def lens(ids: str, logits: str) -> list:
            return [
                [tokenizer.decode([a]), float(v)] for a, v in zip(self.t[ids][i].tolist(), self.t[logits][i].tolist())
            ]

        return {
            "n_fire": int(self.t["n_fire"][i]),
            "fires_on": counted("top_ids", "top_counts", int(self.t["n_fire"][i])),
            "before": counted("prev_ids", "prev_counts", int(self.t["n_prev"][i])),
            "promotes": lens("lens_up_ids", "lens_up"),
            "suppresses": lens("lens_down_ids", "lens_down"),
            "fires_on_lift": lifted("lift", int(self.t["n_fire"][i])),
            "before_lift": lifted("prev_lift", int(self.t["n_prev"][i])),
        }

    def effect(self, i: int) -> dict | None:
        """{output_score, input_score, delta_conf} of latent i (None where not computed; NaN input score -> None)."""
        if "output_score" not in self.t:
            return None
        values = {name: float(self.t[name][i]) for name in SCORES if name in self.t}
        return {name: None if v != v else v for name, v in values.items()}


# -- building ------------------------------------------------------------------------------------
def _top_counts(ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k most frequent values of ids (ties: the lower id) and their counts, padded with -1 / 0."""
    out_ids, out_counts = torch.full((k,), -1, dtype=torch.int32), torch.zeros(k, dtype=torch.int32)
    if ids.numel():
        values, counts = ids.unique(return_counts=True)  # sorted by value
        top = counts.sort(descending=True, stable=True).indices[:k]
        out_ids[: top.numel()], out_counts[: top.numel()] = values[top].int(), counts[top].int()
    return out_ids, out_counts


def _lift_top(ids: Tensor, base: Tensor, base_total: int, k: int, min_count: int) -> tuple[Tensor, Tensor, Tensor]:
    """The k tokens of ids with the highest lift (share in ids / base[token] / base_total) among those seen
    >= min(min_count, the largest count) times (ties: the more frequent, then the lower id), padded -1 / 0 / 0."""
    out_ids, out_counts = torch.full((k,), -1, dtype=torch.int32), torch.zeros(k, dtype=torch.int32)
    out_lift = torch.zeros(k)
    if ids.numel():
        values, counts = ids.unique(return_counts=True)  # sorted by value
        keep = counts >= min(min_count, int(counts.max()))
        values, counts = values[keep], counts[keep]
        lift = (counts / ids.numel()) / (base[values].clamp_min(1) / max(1, base_total))
        order = counts.sort(descending=True, stable=True).indices
        order = order[lift[order].sort(descending=True, stable=True).indices][:k]
        n = order.numel()
        out_ids[:n], out_counts[:n], out_lift[:n] = values[order].int(), counts[order].int(), lift[order].float()
    return out_ids, out_counts, out_lift


def _contexts(cache: LatentCache, tok: Tensor, val: Tensor, s: TableSettings) -> dict[str, Tensor]:
    """The latent's strongest distinct contexts from its firing tokens tok (sorted) and values val."""
    docs = cache.doc_of(tok)
    peak = torch.full((cache.n_docs,), float("-inf")).scatter_reduce(0, docs, val, "amax")
    at_peak = val == peak[docs]
    d, t, v = docs[at_peak], tok[at_peak], val[at_peak]
    first = torch.ones_like(d, dtype=torch.bool)
    first[1:] = d[1:] != d[:-1]  # tok is sorted, so each document's first peak token
    d, t, v = d[first], t[first], v[first]
    order = v.argsort(descending=True, stable=True)
    d, t, v = d[order], t[order], v[order]
    starts = cache.doc_ptr[d][:, None]  # [n, 1]
    prefix_pos = t[:, None] + torch.arange(-s.before, 1)  # [n, before + 1]
    prefix = torch.where(prefix_pos >= starts, cache.input_ids[prefix_pos.clamp_min(0)], -1)
    _, inverse, counts = torch.unique(prefix, dim=0, return_inverse=True, return_counts=True)
    firsts = torch.full((counts.numel(),), len(d)).scatter_reduce(0, inverse, torch.arange(len(d)), "amin")
    chosen = firsts.sort().values[: s.n_contexts]  # the strongest document of each distinct prefix
    d, t, v = d[chosen], t[chosen], v[chosen]
    pos = t[:, None] + torch.arange(-s.before, s.after + 1)  # [n, window]
    inside = (pos >= cache.doc_ptr[d][:, None]) & (pos < cache.doc_ptr[d + 1][:, None])
    safe = pos.clamp(0, cache.n_tokens - 1)
    at = torch.searchsorted(tok, safe).clamp(max=tok.numel() - 1)
    acts = torch.where(inside & (tok[at] == safe), val[at], 0.0)
    return {
        "ctx_doc": d.int(),
        "ctx_pos": (t - cache.doc_ptr[d]).int(),
        "ctx_max": v.float(),
        "ctx_count": counts[inverse[chosen]].int(),
        "ctx_tokens": torch.where(inside, cache.input_ids[safe], -1).int(),
        "ctx_acts": acts.half(),
        "ctx_skipped": inside & ~cache.valid[safe],
    }


@torch.no_grad()
def lens_table(model, W_dec: Tensor, k: int, chunk: int = 256) -> dict[str, Tensor]:
    """Logit lens of every decoder row, `chunk` latents at a time: top-k promoted / suppressed token ids."""
    W_U = model.get_output_embeddings().weight.detach().float()  # [vocab, d_model]
    k = min(k, W_U.shape[0])
    parts: dict[str, list[Tensor]] = {"lens_up_ids": [], "lens_up": [], "lens_down_ids": [], "lens_down": []}
    for start in range(0, W_dec.shape[0], chunk):
        logits = (
            through_norm(model, W_dec[start : start + chunk].detach().float().to(W_U.device)) @ W_U.T
        )  # [chunk, vocab]
        up, down = logits.topk(k, dim=-1), (-logits).topk(k, dim=-1)
        parts["lens_up_ids"].append(up.indices.int().cpu())
        parts["lens_up"].append(up.values.cpu())
        parts["lens_down_ids"].append(down.indices.int().cpu())
        parts["lens_down"].append(-down.values.cpu())
    return {name: torch.cat(p) for name, p in parts.items()}


def build_table(cache: LatentCache, model, W_dec: Tensor, s: TableSettings, progress: bool = True) -> dict[str, Tensor]:
    """Every tensor of the table (see the module docstring) from a corpus's sparse activations."""
    is_start = torch.zeros(cache.n_tokens, dtype=torch.bool)
    is_start[cache.doc_ptr[:-1][cache.doc_ptr[:-1] < cache.n_tokens]] = True
    n_valid = max(1, int(cache.valid.sum()))
    n_fire, n_docs, n_prev = (torch.zeros(cache.d_sae, dtype=torch.long) for _ in range(3))
    top = torch.full((2, cache.d_sae, s.k_tokens), -1, dtype=torch.int32)
    counts = torch.zeros(2, cache.d_sae, s.k_tokens, dtype=torch.int32)
    ctx_parts: list[dict[str, Tensor]] = []
    ctx_ptr = torch.zeros(cache.d_sae + 1, dtype=torch.long)
    vocab = int(cache.input_ids.max()) + 1 if cache.n_tokens else 1
    base = (
        torch.bincount(cache.input_ids[cache.valid], minlength=vocab),  # encoded tokens: the rate of what fires
        torch.bincount(cache.input_ids, minlength=vocab),
    )  # every token: the rate of the tokens before
    lift_ids = torch.full((2, cache.d_sae, s.k_tokens), -1, dtype=torch.int32)
    lift_counts = torch.zeros(2, cache.d_sae, s.k_tokens, dtype=torch.int32)
    lift = torch.zeros(2, cache.d_sae, s.k_tokens)
    for i in tqdm(range(cache.d_sae), desc="per-latent table", unit="latent", disable=not progress, mininterval=2):
        lo, hi = int(cache.col_ptr[i]), int(cache.col_ptr[i + 1])
        tok, val = cache.token_idx[lo:hi].long(), cache.values[lo:hi].float()
        tok, val = tok[val > 0], val[val > 0]
        if tok.numel():
            prev = cache.input_ids[(tok - 1).clamp_min(0)][~is_start[tok]]
            n_fire[i], n_prev[i] = tok.numel(), prev.numel()
            top[0, i], counts[0, i] = _top_counts(cache.input_ids[tok], s.k_tokens)
            top[1, i], counts[1, i] = _top_counts(prev, s.k_tokens)
            fired = cache.input_ids[tok]
            lift_ids[0, i], lift_counts[0, i], lift[0, i] = _lift_top(fired, base[0], n_valid, s.k_tokens, MIN_COUNT)
            lift_ids[1, i], lift_counts[1, i], lift[1, i] = _lift_top(
                prev, base[1], cache.n_tokens, s.k_tokens, MIN_COUNT
            )
            n_docs[i] = cache.doc_of(tok).unique_consecutive().numel()
            ctx_parts.append(_contexts(cache, tok, val, s))
        ctx_ptr[i + 1] = ctx_ptr[i] + (ctx_parts[-1]["ctx_doc"].numel() if tok.numel() else 0)
    width = s.before + 1 + s.after
    empty = {
        "ctx_doc": torch.zeros(0, dtype=torch.int32),
        "ctx_pos": torch.zeros(0, dtype=torch.int32),
        "ctx_max": torch.zeros(0),
        "ctx_count": torch.zeros(0, dtype=torch.int32),
        "ctx_tokens": torch.zeros(0, width, dtype=torch.int32),
        "ctx_acts": torch.zeros(0, width, dtype=torch.float16),
        "ctx_skipped": torch.zeros(0, width, dtype=torch.bool),
    }
    ctx = {name: torch.cat([p[name] for p in ctx_parts] or [empty[name]]) for name in empty}
    return {
        "density": n_fire.float() / n_valid,
        "n_fire": n_fire,
        "n_docs_fire": n_docs,
        "n_prev": n_prev,
        "ctx_ptr": ctx_ptr,
        **ctx,
        "top_ids": top[0],
        "top_counts": counts[0],
        "prev_ids": top[1],
        "prev_counts": counts[1],
        "lift_ids": lift_ids[0],
        "lift_counts": lift_counts[0],
        "lift": lift[0],
        "prev_lift_ids": lift_ids[1],
        "prev_lift_counts": lift_counts[1],
        "prev_lift": lift[1],
        **lens_table(model, W_dec, s.k_lens),
    }


def base_rates(tokenizer, texts: list[str], s: TableSettings) -> tuple[Tensor, int, Tensor, int]:
    """(token counts over encoded tokens, their number, counts over all tokens, their number) of the corpus."""
    docs = tokenize(tokenizer, texts, s.max_len)
    ids = torch.tensor([i for d in docs for i in d], dtype=torch.long)
    valid = valid_mask(tokenizer, docs, s.skip_first, s.skip_special)
    vocab = max(len(tokenizer), int(ids.max()) + 1)
    counts_valid, counts_all = torch.bincount(ids[valid], minlength=vocab), torch.bincount(ids, minlength=vocab)
    return counts_valid, int(valid.sum()), counts_all, ids.numel()


def _relift(ids: Tensor, counts: Tensor, total: Tensor, base: Tensor, base_total: int) -> tuple[Tensor, Tensor, Tensor]:
    """Rows of (ids, counts) [d_sae, k] (most frequent first, -1 padded) re-ranked by lift, as _lift_top ranks."""
    known = ids >= 0
    c = counts.float()
    rate = base[ids.clamp_min(0).long()].clamp_min(1).float() / max(1, base_total)  # [d_sae, k] corpus share
    lift = (c / total.clamp_min(1)[:, None].float()) / rate
    floor = torch.minimum(torch.full_like(c[:, 0], MIN_COUNT), c.max(1).values)  # [d_sae]
    keep = known & (c >= floor[:, None])
    order = torch.where(keep, lift, torch.tensor(float("-inf"))).sort(dim=1, descending=True, stable=True).indices
    kept = keep.gather(1, order)
    return (
        torch.where(kept, ids.gather(1, order), -1).int(),
        torch.where(kept, counts.gather(1, order), 0).int(),
        torch.where(kept, lift.gather(1, order), 0.0).float(),
    )


def add_lift(table: LatentTable, tokenizer, texts: list[str]) -> None:
    """Lift columns for a table built before they existed, from its top_ids / prev_ids and the corpus's base rates."""
    fields = {f.name for f in dataclasses.fields(TableSettings)}
    s = TableSettings(**{k: v for k, v in table.info["settings"].items() if k in fields})
    base_valid, n_valid, base_all, n_all = base_rates(tokenizer, texts, s)
    t = table.t
    t["lift_ids"], t["lift_counts"], t["lift"] = _relift(
        t["top_ids"], t["top_counts"], t["n_fire"], base_valid, n_valid
    )
    t["prev_lift_ids"], t["prev_lift_counts"], t["prev_lift"] = _relift(
        t["prev_ids"], t["prev_counts"], t["n_prev"], base_all, n_all
    )
    table.info["lift"] = {"ranked": f"the {s.k_tokens} most frequent firing tokens (top_ids)", "min_count": MIN_COUNT}


def add_effect(
    table: LatentTable, model, tokenizer, sae, s: EffectSettings = EffectSettings(), progress: bool = True
) -> float:
    """Put every latent's output score, input score and delta_conf into the table (latent_effect.py); returns
    the seconds it took. The input score reads the table's contexts: the peak token is window column `before`."""
    start = time.perf_counter()
    scores = effect_scores(model, tokenizer, sae, None, s, progress)
    ctx = table.t["ctx_tokens"]
    peaks = ctx[:, table.info["settings"]["before"]] if ctx.numel() else torch.zeros(0, dtype=torch.int32)
    table.t.update(
        {
            "output_score": scores["output_score"],
            "delta_conf": scores["delta_conf"],
            "input_score": input_scores(table.t["ctx_ptr"], peaks, scores["lens_ids"]),
        }
    )
    seconds = round(time.perf_counter() - start, 1)
    table.info["effect"] = {
        **dataclasses.asdict(s),
        "fingerprint": fingerprint(model, sae, s),
        "seconds": seconds,
        "scores": list(SCORES),
    }
    return seconds


def effect_of(
    table: LatentTable, model, tokenizer, sae, latents: list[int], s: EffectSettings = EffectSettings()
) -> dict[int, dict | None]:
    """{latent: {output_score, input_score, delta_conf}} for `latents`: read from the table when it holds them for
    this model and SAE, else computed for these latents only (one batch of forward passes); None where the scores
    cannot be computed (no latent active at the neutral prompt)."""
    if not latents:
        return {}
    if has_effect(table, model, sae, s):
        return {i: table.effect(i) for i in latents}
    try:
        scores = effect_scores(model, tokenizer, sae, torch.tensor(latents), s)
    except ValueError:
        return {i: None for i in latents}
    out = {}
    for j, i in enumerate(latents):
        lo, hi = int(table.t["ctx_ptr"][i]), int(table.t["ctx_ptr"][i + 1])
        peaks = table.t["ctx_tokens"][lo:hi, table.info["settings"]["before"]].long()
        hit = torch.isin(peaks, scores["lens_ids"][j].long()).float()
        out[i] = {
            "output_score": float(scores["output_score"][j]),
            "delta_conf": float(scores["delta_conf"][j]),
            "input_score": float(hit.mean()) if hi > lo else None,
        }
    return out


def has_effect(table: LatentTable, model, sae, s: EffectSettings = EffectSettings()) -> bool:
    """The table holds effect scores computed on this model and SAE with these settings."""
    stored = (table.info.get("effect") or {}).get("fingerprint")
    return all(name in table.t for name in SCORES) and stored == fingerprint(model, sae, s)


# -- storing and finding --------------------------------------------------------------------------
def save_table(folder: Path, table: LatentTable) -> None:
    """gzip(safetensors) + JSON, each written under a temporary name then renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{TENSORS}.{os.getpid()}.tmp"
    tmp.write_bytes(
        gzip.compress(save_bytes({k: v.contiguous() for k, v in table.t.items()}), compresslevel=6, mtime=0)
    )
    (folder / f".{INFO}.tmp").write_text(json.dumps(table.info, indent=1))
    os.replace(tmp, folder / TENSORS)
    os.replace(folder / f".{INFO}.tmp", folder / INFO)


def load_table(folder: Path) -> LatentTable | None:
    if not (folder / TENSORS).exists() or not (folder / INFO).exists():
        return None
    return LatentTable(
        load_bytes(gzip.decompress((folder / TENSORS).read_bytes())), json.loads((folder / INFO).read_text())
    )


def shipped_folder(sae) -> Path | None:
    """`<the SAE's own folder>/latents` when the SAE was loaded from a folder (shipped or on disk)."""
    path = resolve_builtin(sae.source) if sae.source else None
    return path / "latents" if path is not None and path.is_dir() else None


def table_key(model, tokenizer, sae, texts: list[str], s: TableSettings) -> tuple[str, list[list[int]]]:
    docs = tokenize(tokenizer, texts, s.max_len)
    return cache_key(model, sae, docs, {"table": FORMAT, **dataclasses.asdict(s)}), docs


def latent_table(
    model,
    tokenizer,
    sae,
    texts: list[str],
    ids: list[str],
    source: str,
    s: TableSettings = TableSettings(),
    cache_dir: str | Path | None = None,
    batch_size: int = 8,
    write_to: Path | None = None,
    progress: bool = True,
    effect: bool = False,
) -> tuple[LatentTable, str]:
    """The table for this (model, SAE, corpus, settings) and where it came from: "shipped" (the SAE's own
    folder), "cache", or "built" (computed now and saved to `write_to`, default the cache). effect=True gives a
    built table every latent's effect scores too (add_effect: ~4096 forwards of one token; the report otherwise
    scores only the latents it shows, effect_of)."""
    key, docs = table_key(model, tokenizer, sae, texts, s)
    cached = Path(cache_dir or cache_root() / "latent_tables") / key
    for where, folder in (("shipped", shipped_folder(sae)), ("cache", cached)):
        table = load_table(folder) if folder is not None else None
        if table is not None and table.info.get("key") == key:
            return table, where
    start = time.perf_counter()
    valid = valid_mask(tokenizer, docs, s.skip_first, s.skip_special)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sparse = encode_corpus(model, sae, docs, valid, pad, batch_size)
    tensors = build_table(sparse, model, sae.W_dec, s, progress)
    info = {
        "format": FORMAT,
        "key": key,
        "sae": sae.source,
        "hook": sae.hook,
        "model": getattr(model.config, "_name_or_path", ""),
        "corpus": source,
        "doc_ids": ids,
        "n_docs": sparse.n_docs,
        "n_tokens": sparse.n_tokens,
        "n_encoded": int(valid.sum()),
        "settings": dataclasses.asdict(s),
        "seconds": round(time.perf_counter() - start, 1),
        "lift": {"ranked": "every firing token", "min_count": MIN_COUNT},
    }
    table = LatentTable(tensors, info)
    if effect:
        try:
            add_effect(table, model, tokenizer, sae, progress=progress)
        except ValueError as err:  # e.g. no latent active at the neutral prompt: the report shows no effect scores
            print(f"[saebasis] per-latent table without effect scores: {err}")
    save_table(write_to or cached, table)
    return table, "built"
