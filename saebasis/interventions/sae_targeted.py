"""SAE-targeted steering (SAE-TS, Chalnev, Siu & Conmy 2024; target built as in FGAA, Soo et al. 2025).

A steering vector v at the hook changes which SAE latents the model's *written text* activates. SAE-TS fits a
linear effect approximator of that change, effects(v) ~ W v + b, once per (model, SAE, hook), and then solves for
the v whose predicted effect is a chosen target latent vector t: v = pinv(W)(t - b). FGAA builds t from the
concept's contrast in SAE space, mean enc(h_pos) - mean enc(h_neg), after dropping very dense latents and
latents that fire on the first (BOS / attention-sink) token, keeping the top k.

Effects as measured here (the SAE-TS recipe, sized for a CPU):
- directions: `n_directions` random unit directions u in antithetic pairs (+u, -u), each added at norm
  r = radius x median ||h|| at the hook, at every position (prompt and reply). The pairs make the fit
  split cleanly: W is the odd part of the effect (the mean of the directions is 0), b its even part
  (the effect any steering at norm r has, e.g. latents all large pushes raise);
- text: greedy continuations of `new_tokens` tokens of `n_prompts` short raw-text prompts (SAE-TS's own
  list, no chat template: a short prefill keeps the cost in the steered tokens);
- effect: the mean SAE code of the written tokens minus the same for the unsteered continuation. The residual
  at the hook of a token already written does not depend on the steering added at that hook, so the SAE reads
  it in the same pass, before the vector is added: exactly SAE-TS's unsteered re-read of the steered text;
- fit: ridge least squares on 90% of the pairs; the other 10% give a held-out R^2 (`approximator_r2`).
Cost: n_directions x n_prompts x (prompt + new_tokens) forward tokens (its own measured seconds are recorded).
Measured on the embedded default (SmolLM2-135M, layer-12 SAE, 1024 directions, 2 prompts, 8 tokens; see
docs) -- cached under saebasis.core.models.cache_root()/sae_targeted/<key>/ as effects.safetensors + cfg.json,
keyed by the model's and SAE's weights, the hook and these settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import time

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from saebasis.core import hooks
from saebasis.core.activations import example_means
from saebasis.core.models import cache_root
from saebasis.core.sae import SAEBasis
from saebasis.interventions.base import FitData, register
from saebasis.interventions.diffmean import FittedVector, VectorConfig

PROMPTS = (
    "I think",
    "Breaking news",
    "Last night",
    "For sale",
    "The weather",
    "Dear Sir/Madam",
    "Preheat the oven",
    "I went up to",
    "New study suggests",
    "It's interesting that",
)
"""SAE-TS's neutral prompts (its ft_effects/utils.py), first `n_prompts` used."""
HOLDOUT = 0.1


@dataclasses.dataclass
class SAETargetedConfig(VectorConfig):
    k: int = 10
    """Target latents kept: the k largest positive entries of the filtered contrast (FGAA's top-k)."""
    max_density: float = 0.05
    """Drop latents active on more than this fraction of the concept's neutral tokens (FGAA's density filter)."""
    drop_bos: bool = True
    """Drop latents active on the first token of the effect prompts (FGAA's BOS filter; the attention sink)."""
    solve_ridge: float = 1e-3
    """Ridge of the solve v = (W^T W + l I)^-1 W^T (t - b), l = solve_ridge x mean eigenvalue of W^T W."""
    n_directions: int = 1024
    """Random directions the approximator is fitted on (antithetic pairs: an even number)."""
    radius: float = 0.5
    """Norm of each probe direction as a fraction of the median residual norm at the hook."""
    new_tokens: int = 8
    """Greedy tokens written per prompt and direction; the SAE reads each of them."""
    n_prompts: int = 2
    """How many of PROMPTS the effects average over."""
    fit_ridge: float = 1e-2
    """Ridge of the effect fit, times the mean eigenvalue of V^T V."""
    batch_size: int = 64
    """Directions steered at once (one per row)."""
    seed: int = 0
    """Seed of the random directions."""
    chunk: int = 4096
    """Tokens encoded at a time while fitting (memory only)."""
    cache: bool = True
    """Reuse (and write) the approximator under cache_root()/sae_targeted/."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive = dict(
            k=self.k,
            n_directions=self.n_directions,
            new_tokens=self.new_tokens,
            batch_size=self.batch_size,
            chunk=self.chunk,
            n_prompts=self.n_prompts,
        )
        if any(not isinstance(v, int) or v < 1 for v in positive.values()):
            raise ValueError(f"sae_targeted: {positive} must all be positive integers.")
        if self.n_directions % 2 or self.n_directions < 4:
            raise ValueError(f"n_directions must be even and >= 4 (antithetic pairs), got {self.n_directions}.")
        if self.n_prompts > len(PROMPTS):
            raise ValueError(f"n_prompts must be <= {len(PROMPTS)} (the built-in prompt list), got {self.n_prompts}.")
        if not 0 < self.max_density <= 1 or self.radius <= 0 or self.solve_ridge < 0 or self.fit_ridge < 0:
            raise ValueError(
                "sae_targeted: need 0 < max_density <= 1, radius > 0, solve_ridge >= 0 and fit_ridge >= 0; "
                f"got {self.max_density}, {self.radius}, {self.solve_ridge}, {self.fit_ridge}."
            )


@dataclasses.dataclass
class EffectApproximator:
    """effects(v) ~ W v + b: W [d_sae, d_model], b [d_sae]; bos [d_sae] latents active on the first token."""

    W: Tensor
    b: Tensor
    bos: Tensor
    info: dict

    def predict(self, v: Float[Tensor, "*n d_model"]) -> Float[Tensor, "*n d_sae"]:
        return v @ self.W.T + self.b

    def solve(self, target: Float[Tensor, " d_sae"], ridge: float) -> Float[Tensor, " d_model"]:
        """argmin_v ||W v + b - t||^2 + l ||v||^2, l = ridge x mean eigenvalue of W^T W (ridge 0: pinv)."""
        W = self.W.double()
        if ridge == 0:
            return (torch.linalg.pinv(W) @ (target.double() - self.b.double())).float()
        gram = W.T @ W  # [d_model, d_model]
        if float(gram.diagonal().mean()) == 0.0:
            raise ValueError(
                "sae_targeted: the effect approximator is zero -- none of the random directions changed "
                "what the SAE read. Raise radius or new_tokens (or n_directions) and fit again."
            )
        lam = ridge * gram.diagonal().mean()
        rhs = W.T @ (target.double() - self.b.double())
        return torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), rhs).float()


def fit_linear(V: Float[Tensor, "n d_model"], E: Float[Tensor, "n d_sae"], ridge: float) -> tuple[Tensor, Tensor]:
    """Ridge least squares E ~ V W^T + b (b unpenalised): returns W [d_sae, d_model], b [d_sae]."""
    V, E = V.double(), E.double()
    v_mean, e_mean = V.mean(0), E.mean(0)
    Vc, Ec = V - v_mean, E - e_mean
    gram = Vc.T @ Vc  # [d_model, d_model]
    lam = ridge * gram.diagonal().mean()
    W = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), Vc.T @ Ec).T  # [d_sae, d_model]
    return W.float(), (e_mean - W @ v_mean).float()


def r_squared(pred: Tensor, actual: Tensor) -> float:
    """Explained variance of `actual` [n, d_sae] around its mean."""
    total = (actual - actual.mean(0)).pow(2).sum()
    return float(1 - (actual - pred).pow(2).sum() / total.clamp_min(1e-12))


def antithetic_directions(n: int, d_model: int, seed: int) -> Float[Tensor, "n d_model"]:
    """n/2 random unit directions, each followed by its negative."""
    u = torch.randn(n // 2, d_model, generator=torch.Generator().manual_seed(seed))
    u = u / u.norm(dim=-1, keepdim=True)
    return torch.stack([u, -u], 1).reshape(n, d_model)  # [+u0, -u0, +u1, -u1, ...]


def fit_approximator(effects, V: Float[Tensor, "n d_model"], ridge: float) -> tuple[Tensor, Tensor, float]:
    """Fit on the first 90% of V's antithetic pairs, score R^2 on the rest: (W, b, held-out R^2). `effects` maps
    directions [m, d_model] to mean latent changes [m, d_sae] (measured on a model, or planted in a test)."""
    E = effects(V)  # [n, d_sae]
    n_test = 2 * max(1, round(HOLDOUT * len(V) / 2))
    W, b = fit_linear(V[:-n_test], E[:-n_test], ridge)
    return W, b, r_squared(V[-n_test:] @ W.T + b, E[-n_test:])


@torch.no_grad()
def unsteered(model, tokenizer, sae: SAEBasis, hook: str, cfg: SAETargetedConfig) -> dict[str, Tensor]:
    """The unsteered continuations: {"codes": [n_prompts, d_sae] mean SAE code of the tokens written, "bos": [d_sae]
    latents active on a prompt's first token, "norm": median ||h|| at the hook over the tokens written}."""
    codes, bos, norms = [], torch.zeros(sae.d_sae, dtype=torch.bool), []
    for ids in _prompt_ids(model, tokenizer, cfg):
        code, first, norm = _continuation_codes(model, sae, hook, ids, torch.zeros(1, sae.d_model), cfg)
        codes.append(code[0])
        bos |= first
        norms.append(norm)
    return {"codes": torch.stack(codes), "bos": bos, "norm": torch.cat(norms).median()}


@torch.no_grad()
def measure_effects(
    model,
    tokenizer,
    sae: SAEBasis,
    hook: str,
    V: Float[Tensor, "n d_model"],
    cfg: SAETargetedConfig,
    base: dict[str, Tensor],
) -> Float[Tensor, "n d_sae"]:
    """Mean SAE code of the greedy continuation of each prompt under each steering vector (rows of V), minus the
    unsteered one (`base`, from `unsteered`), averaged over the prompts."""
    total = torch.zeros(len(V), sae.d_sae)
    jobs = [
        (ids, code, start)
        for ids, code in zip(_prompt_ids(model, tokenizer, cfg), base["codes"])
        for start in range(0, len(V), cfg.batch_size)
    ]
    for ids, code, start in tqdm(jobs, desc="sae_targeted effects", leave=False, disable=len(jobs) < 4):
        rows = V[start : start + cfg.batch_size]
        total[start : start + len(rows)] += _continuation_codes(model, sae, hook, ids, rows, cfg)[0] - code
    return total / cfg.n_prompts


def _prompt_ids(model, tokenizer, cfg: SAETargetedConfig) -> list[Tensor]:
    device = next(model.parameters()).device
    return [tokenizer(p, return_tensors="pt")["input_ids"].to(device) for p in PROMPTS[: cfg.n_prompts]]  # each [1, P]


def _continuation_codes(model, sae, hook, ids, V, cfg) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy `new_tokens` tokens after ids [1, P] with row i steered by V[i] at every position; returns each row's
    mean SAE code over the tokens written [rows, d_sae], the latents active on the first token, and the
    residual norms of the written tokens (row 0)."""
    rows = len(V)
    steer = V.to(ids.device)[:, None, :]  # [rows, 1, d_model]
    read: list[Tensor] = []

    def fn(h: Tensor) -> Tensor:  # h [rows, pos, d_model]: the residual before the vector is added
        read.append(h.detach().float())
        if len(read) == cfg.new_tokens + 1:  # the last token written is read: the layers after the hook are not needed
            raise hooks.StopForward
        return h + steer.to(h.dtype)

    from transformers import DynamicCache

    # the forward's name for the key / value cache: `cache` (transformers >= 5.2x) or `past_key_values`
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    kv = {name: DynamicCache(config=model.config)}  # filled in place by each forward
    nxt = ids.expand(rows, -1)  # [rows, P], then [rows, 1]
    with hooks.attach(model, hook, fn):
        try:
            for _ in range(cfg.new_tokens + 1):
                nxt = (
                    model(input_ids=nxt, use_cache=True, logits_to_keep=1, **kv).logits[:, -1].argmax(-1, keepdim=True)
                )
        except hooks.StopForward:
            pass
    written = torch.cat(read[1:], 1)  # [rows, new_tokens, d_model]: the tokens written, as the hook read them
    codes = sae.encode_chunked(written.flatten(0, 1), cfg.chunk).reshape(rows, cfg.new_tokens, -1)
    first = sae.encode(read[0][:1, 0]).cpu()[0] > 0  # [d_sae]
    return codes.mean(1).float().cpu(), first, written[0].norm(dim=-1).cpu()


def cache_key(model, sae: SAEBasis, hook: str, cfg: SAETargetedConfig) -> str:
    """Model and SAE weights (the embedding matrix; every SAE tensor), hook and the approximator's settings."""
    digest = hashlib.sha256()
    digest.update(str(getattr(model.config, "_name_or_path", "")).encode())
    digest.update(model.get_input_embeddings().weight.detach().float().cpu().numpy().tobytes())
    for name, tensor in sorted(sae.sae.state_dict().items()):
        digest.update(name.encode() + tensor.detach().float().cpu().numpy().tobytes())
    fields = ("n_directions", "radius", "new_tokens", "n_prompts", "fit_ridge", "seed")
    digest.update(json.dumps({"hook": hook, "version": 1, **{f: getattr(cfg, f) for f in fields}}).encode())
    return digest.hexdigest()[:20]


def load_or_fit(model, tokenizer, sae: SAEBasis, hook: str, cfg: SAETargetedConfig) -> EffectApproximator:
    """The cached approximator for (model, SAE, hook, settings), fitted and written on first use."""
    folder = cache_root() / "sae_targeted" / cache_key(model, sae, hook, cfg)
    if cfg.cache and (folder / "effects.safetensors").exists() and (folder / "cfg.json").exists():
        t = load_file(folder / "effects.safetensors")
        return EffectApproximator(t["W"], t["b"], t["bos"].bool(), json.loads((folder / "cfg.json").read_text()))
    print(
        f"[saebasis] sae_targeted: fitting the effect approximator for {hook} ({cfg.n_directions} directions x "
        f"{cfg.n_prompts} prompts x {cfg.new_tokens} tokens), once; cached in {folder}"
    )
    start = time.time()
    base = unsteered(model, tokenizer, sae, hook, cfg)
    r = cfg.radius * float(base["norm"])
    V = antithetic_directions(cfg.n_directions, sae.d_model, cfg.seed) * r  # [n, d_model]
    W, b, r2 = fit_approximator(lambda x: measure_effects(model, tokenizer, sae, hook, x, cfg, base), V, cfg.fit_ridge)
    info = {
        "hook": hook,
        "radius_norm": r,
        "approximator_r2": round(r2, 4),
        "fit_seconds": round(time.time() - start, 1),
        "tokens_read": cfg.n_directions * cfg.n_prompts * cfg.new_tokens,
        "n_directions": cfg.n_directions,
        "n_prompts": cfg.n_prompts,
        "new_tokens": cfg.new_tokens,
    }
    approx = EffectApproximator(W, b, base["bos"], info)
    if cfg.cache:
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {"W": W.contiguous(), "b": b.contiguous(), "bos": base["bos"].to(torch.uint8)},
            folder / "effects.safetensors",
        )
        (folder / "cfg.json").write_text(json.dumps(info, indent=1))
    return approx


def fgaa_target(contrast: Tensor, density: Tensor, bos: Tensor, cfg: SAETargetedConfig) -> tuple[Tensor, Tensor]:
    """FGAA's target: the contrast with dense (density > max_density) and BOS latents zeroed, its top-k positive
    entries kept: (latent ids [k], their contrast values [k])."""
    filtered = contrast.clone()
    filtered[density > cfg.max_density] = 0
    if cfg.drop_bos:
        filtered[bos] = 0
    values, idx = filtered.topk(cfg.k)
    if not bool((values > 0).all()):
        raise ValueError(
            f"sae_targeted: only {int((values > 0).sum())} latents rise from negative to positive completions "
            f"after the density (max_density={cfg.max_density}) and BOS filters, k={cfg.k}. Use a smaller k, "
            "raise max_density, or check the pairs (positive and negative swapped?)."
        )
    return idx, values


@register("sae_targeted")
class SAETargeted(FittedVector):
    """h' = h + s v,  v = c u / ||u||,  u = (W^T W + l I)^-1 W^T (t - b),  c = ||mean h_pos - mean h_neg||

    W, b: the effect approximator (effects(v) ~ W v + b, the mean SAE-latent change v causes in the written text);
    t: FGAA's target, D = mean_t enc(h_pos,t) - mean_t enc(h_neg,t) with dense and BOS latents zeroed, its top-k
    kept. The vector is rescaled to DiffMean's norm on the same pairs, so strengths mean the same size as DiffMean's.
    `latent_scores` are the target latents |t_i| (what the vector aims to raise in the written text; not a decoder
    write). Fitted on the model: `prepare(stack, ...)` loads or fits the approximator before `fit(data)`.
    """

    Config = SAETargetedConfig
    uses_sae = True

    def __init__(self, cfg: SAETargetedConfig, d_model: int, sae: SAEBasis | None = None) -> None:
        super().__init__(cfg, d_model, sae)
        self.register_buffer("latents", torch.full((cfg.k,), -1, dtype=torch.long))  # [k] target latent ids
        self.register_buffer("gains", torch.zeros(cfg.k))  # [k] their target values t_i
        self.__dict__["_approx"] = None

    def prepare(self, stack, concept, max_len: int) -> None:
        self.__dict__["_approx"] = load_or_fit(stack.model, stack.tokenizer, self.sae, stack.hook, self.cfg)

    def use_approximator(self, approx: EffectApproximator) -> SAETargeted:
        """Set the approximator directly (a planted one in tests, or one fitted elsewhere)."""
        self.__dict__["_approx"] = approx
        return self

    def fit(self, data: FitData) -> SAETargeted:
        if self._approx is None:
            raise ValueError(
                "sae_targeted needs its effect approximator: call prepare(stack, concept, max_len) before fit "
                "(fit-baseline does), or use_approximator(...)."
            )
        contrast = self._mean_code(data.positive) - self._mean_code(data.negative)  # [d_sae]
        neutral = torch.cat(data.neutral).to(self.sae.W_dec.device) if data.neutral else None
        density = (
            (self.sae.encode_chunked(neutral, self.cfg.chunk) > 0).float().mean(0).cpu()
            if neutral is not None
            else torch.zeros_like(contrast)
        )
        idx, values = fgaa_target(contrast, density, self._approx.bos.cpu(), self.cfg)
        target = torch.zeros_like(contrast)
        target[idx] = values
        u = self._approx.solve(target, self.cfg.solve_ridge)  # [d_model]
        size = (example_means(data.positive).mean(0) - example_means(data.negative).mean(0)).norm()
        self.v.copy_(u / u.norm().clamp_min(1e-12) * size)
        self.latents.copy_(idx)
        self.gains.copy_(values)
        return self

    @torch.no_grad()
    def _mean_code(self, acts: list[Tensor]) -> Float[Tensor, " d_sae"]:
        tokens = torch.cat(acts).to(self.sae.W_dec.device)  # [T, d_model]
        return self.sae.encode_chunked(tokens, self.cfg.chunk).float().mean(0).cpu()  # [d_sae]

    def latent_scores(self) -> Float[Tensor, " d_sae"]:
        """|t_i| at the target latents, 0 elsewhere (latent units)."""
        scores = torch.zeros(self.sae.d_sae, device=self.gains.device)
        chosen = self.latents >= 0
        scores[self.latents[chosen]] = self.gains[chosen].abs()
        return scores

    def describe(self) -> dict:
        out = {
            **super().describe(),
            "latents": self.latents.tolist(),
            "targets": [round(float(g), 4) for g in self.gains],
        }
        return out if self._approx is None else {**out, **{k: v for k, v in self._approx.info.items() if k != "hook"}}
