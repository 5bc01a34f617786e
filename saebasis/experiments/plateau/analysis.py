"""Activation plateaus: how large must a steering vector be before the model's output changes?

Real activations sit on plateaus (Heimersheim & Mendel 2024, "Activation plateaus and sensitive directions
in GPT2"): adding eps * u to the residual barely moves the next-token distribution until eps reaches an
edge, then the output changes abruptly; directions the model uses leave the plateau at a smaller eps than
random ones. For steering: a vector needs a strength just past its plateau edge, and a learned direction
should escape far earlier than a random one.

The measurement (every quantity on neutral prompts, chat template, one prompt per forward batch: no padding)
    h'_t = h_t + eps * u   at the hook, every position t but the first (the attention sink)
    KL(eps, u) = mean over tokens t >= 1 of KL(p(. | h') || p(. | h)) of the next-token distributions
(and the same mean over only the tokens after the chat template's shared opening, `Prompt.shared`: those
positions hold the same tokens in every prompt) for the learned direction and five random families of unit
directions:
    isotropic     u = g / |g|, g ~ N(0, I)
    covariance    u = z / |z|, z ~ N(0, Sigma), Sigma the (centred) covariance of neutral activations at the
                  hook, sink excluded (sampled exactly as z = X^T g / sqrt(N - 1), X the centred activations)
    cov_mixture   u = (z1 - z2) / |z1 - z2|, z1, z2 ~ N(mu, Sigma) independent: the covariance-random mixture
                  of Lee & Heimersheim 2024 ("Investigating sensitive directions in GPT-2"; a direction between
                  two random activation-like points, not towards one, so the current activation is excluded).
                  z1 - z2 ~ N(0, 2 Sigma): as a unit direction it has the law of `covariance`, an independent draw
    real_mixture  u = (a_i - a_j) / |a_i - a_j|, a_i, a_j two distinct real neutral activations (sink excluded):
                  their real mixture (the difference of two real activations; zero differences redrawn)
    alive rows    u = W_dec[i] / |W_dec[i]|, i a latent that fires on a neutral token (sink excluded)
The plateau edge is the first eps at which KL exceeds a threshold (log-log interpolation between grid
points); its sharpness is d log KL / d log eps across that grid step (2 = the quadratic rise of a smooth
function; larger = a cliff). The upstream blocks run once per prompt (`hooks.skip_to_hook`).

Reporting (table, plot, JSON) lives in `report.py`; the command (`saebasis plateau`) in `command.py`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from saebasis.core import hooks
from saebasis.core.activations import encode_pairs
from saebasis.core.sae import SAEBasis
from saebasis.corpus.acts import template_prefix

FAMILIES = ("isotropic", "covariance", "cov_mixture", "real_mixture", "alive_rows")
MARGIN = 1.25
"""The suggested strength is the learned direction's edge times this margin: just past the plateau."""


class Prompt(NamedTuple):
    ids: Int[Tensor, " pos"]
    """Token ids of one neutral prompt (chat template), no padding."""
    h: Float[Tensor, "pos d_model"]
    """Its residual at the hook (position 0 is the attention sink)."""
    shared: int = 0
    """Leading positions that are the chat template's shared opening (the same tokens in every prompt); 0 when
    the tokenizer has no template or the prompt was truncated on the left."""


class Edge(NamedTuple):
    size: float
    """First size at which KL exceeds the threshold (log-log interpolated); nan when never reached."""
    sharpness: float
    """d log KL / d log size across the grid step that crosses the threshold (nan when never reached)."""
    status: str
    """crossed | below_grid (already above at the smallest size: `size` is an upper bound) | not_reached."""


# -- neutral activations -------------------------------------------------------------------------------
@torch.no_grad()
def neutral_prompts(model, tokenizer, hook: str, prompts: Sequence[str], max_len: int = 96) -> list[Prompt]:
    """Each prompt's token ids and residual at the hook, one prompt at a time (no padding)."""
    device = next(model.parameters()).device
    prefix = template_prefix(tokenizer)
    out = []
    for prompt in tqdm(prompts, desc="neutral activations", leave=False, disable=len(prompts) < 8):
        ids = encode_pairs(tokenizer, [prompt], [""], max_len)["input_ids"][0]  # [pos]
        if len(ids) < 2:
            continue  # a lone sink token has no position to perturb
        h = hooks.run_to_hook(model, hook, input_ids=ids[None].to(device))[0].float()  # [pos, d_model]
        shared = len(prefix) if prefix and ids[: len(prefix)].tolist() == prefix else 0
        out.append(Prompt(ids, h, shared))
    if not out:
        raise ValueError("No neutral prompt has 2 or more tokens: the plateau sweep needs positions after the first.")
    return out


def token_acts(prompts: Sequence[Prompt]) -> Float[Tensor, "n d_model"]:
    """Every neutral token's residual, the first token of each prompt (attention sink) excluded."""
    return torch.cat([p.h[1:] for p in prompts])


def median_norm(acts: Float[Tensor, "n d_model"]) -> float:
    return float(acts.norm(dim=-1).median())


def size_grid(lo: float, hi: float, factor: float) -> list[float]:
    """lo, lo * factor, ... up to hi (inclusive up to rounding): a log grid."""
    if not (0 < lo <= hi) or factor <= 1:
        raise ValueError(f"The size grid needs 0 < size_min <= size_max and size_factor > 1; got {lo}, {hi}, {factor}.")
    n = math.floor(math.log(hi / lo) / math.log(factor) + 1e-9) + 1
    return [lo * factor**k for k in range(n)]


# -- random families (each returns [n, d_model] rows of norm `norm`) -------------------------------------
def _rescale(v: Tensor, norm: float) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True) * norm


def isotropic(
    n: int, d_model: int, norm: float = 1.0, generator: torch.Generator | None = None
) -> Float[Tensor, "n d_model"]:
    """Uniformly random directions (g / |g|, g ~ N(0, I)) of norm `norm`."""
    return _rescale(torch.randn(n, d_model, generator=generator), norm)


def covariance_matched(
    acts: Float[Tensor, "N d_model"], n: int, norm: float = 1.0, generator: torch.Generator | None = None
) -> Float[Tensor, "n d_model"]:
    """z ~ N(0, Sigma) rescaled to `norm`, Sigma the centred covariance of `acts`: z = X^T g / sqrt(N - 1) with
    X the centred activations and g ~ N(0, I_N) has covariance X^T X / (N - 1) = Sigma exactly (any rank)."""
    if acts.shape[0] < 2:
        raise ValueError(f"A covariance needs at least 2 activations, got {acts.shape[0]}.")
    x = (acts - acts.mean(0)).double()  # [N, d_model]
    g = torch.randn(n, x.shape[0], generator=generator, dtype=torch.float64)  # [n, N]
    return _rescale((g @ x / math.sqrt(x.shape[0] - 1)).float(), norm)


def covariance_mixture(
    acts: Float[Tensor, "N d_model"], n: int, norm: float = 1.0, generator: torch.Generator | None = None
) -> Float[Tensor, "n d_model"]:
    """Lee & Heimersheim's covariance-random mixture: z1 - z2 for independent z1, z2 ~ N(mu, Sigma) (mu, Sigma the
    mean and centred covariance of `acts`, each drawn exactly as in `covariance_matched`), rescaled to `norm`.
    The mean cancels; z1 - z2 ~ N(0, 2 Sigma)."""
    if acts.shape[0] < 2:
        raise ValueError(f"A covariance needs at least 2 activations, got {acts.shape[0]}.")
    mu = acts.mean(0).double()
    x = (acts - acts.mean(0)).double()  # [N, d_model]
    scale = math.sqrt(x.shape[0] - 1)
    z1 = mu + torch.randn(n, x.shape[0], generator=generator, dtype=torch.float64) @ x / scale  # [n, d_model]
    z2 = mu + torch.randn(n, x.shape[0], generator=generator, dtype=torch.float64) @ x / scale
    return _rescale((z1 - z2).float(), norm)


def real_mixture(
    acts: Float[Tensor, "N d_model"], n: int, norm: float = 1.0, generator: torch.Generator | None = None
) -> Float[Tensor, "n d_model"]:
    """Lee & Heimersheim's real mixture: a_i - a_j for random pairs of distinct rows of `acts` (pairs whose
    difference is exactly zero, e.g. the same template token in two prompts, are redrawn), rescaled to `norm`."""
    if acts.shape[0] < 2:
        raise ValueError(f"Differences of real activations need at least 2 activations, got {acts.shape[0]}.")
    out, kept = [], 0
    for _ in range(20):
        i = torch.randint(acts.shape[0], (4 * n,), generator=generator)
        j = (i + torch.randint(1, acts.shape[0], (4 * n,), generator=generator)) % acts.shape[0]  # j != i
        diff = (acts[i] - acts[j]).float()  # [4n, d_model]
        diff = diff[diff.norm(dim=-1) > 0]
        out.append(diff[: n - kept])
        kept += out[-1].shape[0]
        if kept == n:
            return _rescale(torch.cat(out), norm)
    raise ValueError(
        "Almost every pair of neutral activations is identical: the real-mixture family is empty. "
        "Use more or longer neutral prompts (n_cov_prompts)."
    )


@torch.no_grad()
def alive_latents(sae: SAEBasis, acts: Float[Tensor, "N d_model"]) -> Bool[Tensor, " d_sae"]:
    """Latents that fire (z > 0) on at least one of the activations."""
    return (sae.encode_chunked(acts.to(sae.W_dec.device)) > 0).any(0).cpu()


@torch.no_grad()
def alive_rows(
    sae: SAEBasis, alive: Bool[Tensor, " d_sae"], n: int, norm: float = 1.0, generator: torch.Generator | None = None
) -> tuple[Float[Tensor, "n d_model"], Int[Tensor, " n"]]:
    """n decoder rows of distinct alive latents (drawn at random; with repeats only when fewer are alive),
    each rescaled to `norm`; and the latents' indices."""
    idx = alive.nonzero().flatten()
    if len(idx) == 0:
        raise ValueError("No SAE latent fires on the neutral prompts: the alive-rows family is empty.")
    if len(idx) < n:
        warnings.warn(f"Only {len(idx)} latents are alive on the neutral prompts; drawing {n} rows with repeats.")
        pick = idx[torch.randint(len(idx), (n,), generator=generator)]
    else:
        pick = idx[torch.randperm(len(idx), generator=generator)[:n]]
    return _rescale(sae.W_dec[pick].detach().float().cpu(), norm), pick


# -- the sweeps -----------------------------------------------------------------------------------------
def _kl(logits: Float[Tensor, "batch pos vocab"], base: Float[Tensor, "pos vocab"]) -> Float[Tensor, "batch pos_1"]:
    """KL(steered || base) of the next-token distributions at positions 1.. (pos_1 = pos - 1)."""
    logp = logits[:, 1:].float().log_softmax(-1)  # [batch, pos - 1, vocab]
    return (logp.exp() * (logp - base[None, 1:])).sum(-1)


class KLMeans(NamedTuple):
    all: Tensor
    """Mean KL per token over positions >= 1 of every prompt."""
    unshared: Tensor
    """Mean KL per token over the positions after each prompt's shared template opening (and >= 1); nan when
    no prompt has such a position."""


def mean_kl(per_position: Sequence[Float[Tensor, "rows pos_1"]], shared: Sequence[int]) -> KLMeans:
    """Token-weighted means of per-position KL, one tensor per prompt (positions 1.., so column c is position
    c + 1), `shared[k]` the length of prompt k's shared opening: over every position, and over positions >= shared."""
    total = sum(kl.double().sum(-1) for kl in per_position)  # [rows]
    kept = [kl.double()[:, max(s - 1, 0) :] for kl, s in zip(per_position, shared)]  # positions >= max(shared, 1)
    n_all, n_kept = sum(kl.shape[-1] for kl in per_position), sum(k.shape[-1] for k in kept)
    unshared = sum(k.sum(-1) for k in kept) / n_kept if n_kept else torch.full_like(total, math.nan)
    return KLMeans((total / n_all).float(), unshared.float())


@torch.no_grad()
def _perturbed_logits(model, hook: str, prompt: Prompt, deltas: Float[Tensor, "rows d_model"]) -> Tensor:
    """Logits with h + delta_r at every position but the first, each row r its own delta; blocks upstream of
    the hook are skipped (the prompt's residual there is known)."""
    device = next(model.parameters()).device
    rows, pos = deltas.shape[0], prompt.ids.shape[0]
    h = prompt.h.to(device)[None].expand(rows, pos, -1)  # [rows, pos, d_model]
    shift = (
        deltas.to(device)[:, None, :] * (torch.arange(pos, device=device) > 0)[None, :, None]
    )  # [rows, pos, d_model]
    with hooks.skip_to_hook(model, hook, h), hooks.attach(model, hook, lambda x: x + shift.to(x.dtype)):
        return model(input_ids=prompt.ids.to(device)[None].expand(rows, pos), use_cache=False).logits


def n_batches(n_rows: int, batch_size: int, n_prompts: int) -> int:
    return math.ceil(n_rows / batch_size) * n_prompts


@torch.no_grad()
def kl_sweep(
    model,
    hook: str,
    prompts: Sequence[Prompt],
    directions: Float[Tensor, "n_dir d_model"],
    sizes: Sequence[float],
    batch_size: int = 32,
    progress=None,
) -> KLMeans:
    """Mean KL per token for h + size * direction, every (direction, size): each a [n_dir, n_size] tensor, over
    positions >= 1 of every prompt (`all`) and over the positions after the shared template opening (`unshared`)."""
    sizes_t = torch.as_tensor(list(sizes), dtype=torch.float32)
    deltas = (sizes_t[None, :, None] * directions.float()[:, None, :]).reshape(
        -1, directions.shape[-1]
    )  # [n_dir * n_size, d]
    per_prompt = []
    for prompt in prompts:
        base = _perturbed_logits(model, hook, prompt, deltas[:1] * 0)[0].float().log_softmax(-1)  # [pos, vocab]
        rows = []
        for start in range(0, deltas.shape[0], batch_size):
            logits = _perturbed_logits(model, hook, prompt, deltas[start : start + batch_size])
            rows.append(_kl(logits, base).double().cpu())  # [batch, pos - 1]
            if progress is not None:
                progress.update(1)
        per_prompt.append(torch.cat(rows))  # [n_dir * n_size, pos - 1]
    means = mean_kl(per_prompt, [p.shared for p in prompts])
    return KLMeans(*(m.reshape(directions.shape[0], len(sizes_t)) for m in means))


class MethodCurve(NamedTuple):
    strengths: list[float]
    kl: list[float]
    """Mean KL per token (positions >= 1) at each strength."""
    kl_unshared: list[float]
    """The same over the positions after each prompt's shared template opening."""
    delta_norm: list[float]
    """Mean |h'(s) - h| per token at the hook (positions >= 1) at each strength: the residual-change size."""


@torch.no_grad()
def method_sweep(
    model,
    hook: str,
    prompts: Sequence[Prompt],
    intervention,
    strengths: Sequence[float],
    batch_size: int = 32,
    progress=None,
) -> MethodCurve:
    """KL and residual-change size of a method applied as it is (`attach_to`, every position but the first),
    one row per strength; the full model runs (a method may act inside a block)."""
    device = next(model.parameters()).device
    s_all = torch.as_tensor(list(strengths), dtype=torch.float32)
    dh = torch.zeros(len(s_all), dtype=torch.float64)
    batch_size = min(batch_size, intervention.max_batch or batch_size)
    per_prompt = []
    for prompt in prompts:
        ids, pos = prompt.ids.to(device), prompt.ids.shape[0]
        base = model(input_ids=ids[None], use_cache=False).logits[0].float().log_softmax(-1)  # [pos, vocab]
        rows = []
        for start in range(0, len(s_all), batch_size):
            s = s_all[start : start + batch_size].to(device)
            intervention.begin_generation(torch.ones(len(s), pos, dtype=torch.long, device=device))
            with (
                hooks.steering(model, hook, intervention, s, positions=range(1, pos)),
                hooks.record(model, hook) as seen,
            ):
                logits = model(input_ids=ids[None].expand(len(s), pos), use_cache=False).logits
            rows.append(_kl(logits, base).double().cpu())  # [batch, pos - 1]
            change = seen[0].float()[:, 1:] - prompt.h.to(device)[None, 1:]  # [rows, pos - 1, d_model]
            dh[start : start + len(s)] += change.norm(dim=-1).sum(-1).double().cpu()
            if progress is not None:
                progress.update(1)
        per_prompt.append(torch.cat(rows))  # [n_strengths, pos - 1]
    kl = mean_kl(per_prompt, [p.shared for p in prompts])
    n_tokens = sum(p.ids.shape[0] - 1 for p in prompts)
    return MethodCurve(s_all.tolist(), kl.all.tolist(), kl.unshared.tolist(), (dh / n_tokens).tolist())


# -- the edge -------------------------------------------------------------------------------------------
def plateau_edge(sizes: Sequence[float], kl: Sequence[float], threshold: float = 0.1) -> Edge:
    """Where KL first exceeds `threshold` along an increasing size grid, interpolated linearly in
    (log size, log KL) between the two grid points around the crossing; sharpness = the slope there."""
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0 (nats), got {threshold}.")
    x = [math.log(s) for s in sizes]
    y = [math.log(max(float(k), 1e-30)) for k in kl]
    above = [i for i, k in enumerate(kl) if k > threshold]
    if not above:
        return Edge(float("nan"), float("nan"), "not_reached")
    i = above[0]
    if i == 0:
        slope = (y[1] - y[0]) / (x[1] - x[0]) if len(x) > 1 else float("nan")
        return Edge(float(sizes[0]), slope, "below_grid")
    slope = (y[i] - y[i - 1]) / (x[i] - x[i - 1])
    edge = x[i - 1] + (math.log(threshold) - y[i - 1]) / slope
    return Edge(math.exp(edge), slope, "crossed")


def interpolate_loglog(x_at: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """y at x_at by linear interpolation in (log x, log y) on an increasing grid xs (nan outside it)."""
    if not math.isfinite(x_at):
        return float("nan")
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x_at <= x1 and min(x0, y0, x1, y1) > 0:
            t = (math.log(x_at) - math.log(x0)) / (math.log(x1) - math.log(x0)) if x1 > x0 else 0.0
            return math.exp(math.log(y0) + t * (math.log(y1) - math.log(y0)))
    return float(ys[0]) if xs and x_at == xs[0] else float("nan")
