"""saebasis' Python API: steer a model already in memory, in the basis of a sparse autoencoder, in a few lines.

```python
import saebasis as sb
model, tok = sb.load_model("smollm2")                  # or any HF causal LM + tokenizer already in memory
sae = sb.load_sae("builtin:smollm2-l12")                # or any sae_lens SAE object (+ hook=...)
steer = sb.train("sae_bias", model, tok, sae, data="sentiment", max_steps=36)
with steer.apply(model, strength=1.0):
    print(sb.generate(model, tok, "Tell me about your day."))
print(steer.top_latents(10))
steer.save("runs/pos")
```

Every registered method (`sb.methods()`) is trained (`sb.train`) or fitted in closed form (`sb.fit`) on objects:
a model, its tokenizer, an optional SAE (an `SAEBasis` or any sae-lens `SAE`), and a concept (a built-in name, a
concept folder, or a list of (prompt, positive, negative)). Settings are keyword arguments checked against the same
configs the CLI composes (configs/train.yaml, configs/fit_baseline.yaml, the method's `configs/experiment/<method>.yaml`
and its typed dataclass): a typo is refused with the valid names. Training runs the CLI's own code path
(`saebasis.training.train.train_core`), so the same settings and seed give the same weights; nothing is written to disk
unless `save` is called. A saved steering is a folder in the Hugging Face Hub layout (safetensors + JSON + a README.md
model card), loaded again with `sb.load(folder)` or `sb.load("hf:<owner>/<repo>")`.
"""

from __future__ import annotations

import contextlib
import difflib
import html
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from saebasis.config import CONFIG_DIR, compose, override, setup_env, to_dict
from saebasis.core import hooks
from saebasis.core.generation import generate as _generate
from saebasis.core.models import load_model as _load_model
from saebasis.core.sae import SAEBasis
from saebasis.core.stack import Stack
from saebasis.data import Concept, Pair, builtin_names, load_concept
from saebasis.interventions import REGISTRY
from saebasis.interventions.base import Intervention, config_fields
from saebasis.runs import Run, check_finite, load_run, run_guard, save_run
from saebasis.validate import ConfigError, check_intervention, check_numbers, check_train_numbers

__all__ = [
    "Comparison",
    "LatentReading",
    "Steering",
    "compare",
    "concept",
    "concepts",
    "fit",
    "generate",
    "load",
    "load_model",
    "load_sae",
    "methods",
    "train",
]

# Settings that say where or how a CLI run is saved / logged: the API has its own arguments for them.
PLACE_KEYS = (
    "run_dir",
    "ckpt_dir",
    "overwrite",
    "resume",
    "logger",
    "n_samples",
    "ckpt_every_n_steps",
    "model",
    "sae",
    "hook",
    "data",
    "intervention",
    "trainer",
    "hydra",
)


# -- loading ---------------------------------------------------------------------------------------------
def load_model(name: str = "smollm2", device: str = "cpu", dtype: str = "float32"):
    """(model, tokenizer): the embedded default `smollm2`, a local folder, or a hub id (online only). The model is
    frozen, in eval mode; the tokenizer pads on the left (batched generation)."""
    loaded = _load_model(name, device, dtype)
    return loaded.model, loaded.tokenizer


def load_sae(source: Any, hook: str | None = None, sae_id: str | None = None, device: str = "cpu") -> SAEBasis:
    """The SAE basis: `builtin:<name>` (shipped: smollm2-l6, -l12, -l18), an sae-lens folder, a release + `sae_id`,
    or an sae-lens `SAE` object already in memory (its hook from `hook=` or its metadata). Nothing is saved."""
    if isinstance(source, SAEBasis):
        if hook is not None and not hooks.same_residual(hook, source.hook):
            raise ValueError(f"hook={hook} but this SAE reads {source.hook}: drop hook=, or pass an SAE for {hook}.")
        return source
    from sae_lens import SAE

    if isinstance(source, SAE):
        name = source.cfg.metadata.get("hook_name") or hook  # what the SAE records wins; a mismatch is refused later
        if not name:
            raise ValueError(
                "This sae-lens SAE records no hook (cfg.metadata.hook_name): pass hook='blocks.L.hook_resid_post'."
            )
        return SAEBasis(source.to(device), name)
    if not isinstance(source, (str, Path)):
        raise TypeError(
            "load_sae takes a 'builtin:<name>' / folder / release name or an sae_lens SAE, "
            f"got {type(source).__name__}."
        )
    return SAEBasis.load(str(source), sae_id, hook=hook, device=device)


def concept(data: Any, name: str = "pairs", description: str = "", judge: str = "minilm") -> Concept:
    """A concept from a built-in name, a concept folder, an `hf:` dataset, a `Concept`, or a list of
    (prompt, positive, negative) tuples / dicts. A list has no held-out instructions (training and fitting need none;
    `compare` does) and uses its own prompts as the neutral prompts of the KL term."""
    if isinstance(data, Concept):
        return data
    if isinstance(data, (str, Path)):
        return load_concept(str(data))
    if isinstance(data, Sequence) and data:
        pairs = []
        for i, row in enumerate(data):
            if isinstance(row, dict):
                row = (row.get("prompt"), row.get("positive"), row.get("negative"))
            if not (isinstance(row, (tuple, list)) and len(row) == 3 and all(isinstance(x, str) and x for x in row)):
                raise ValueError(
                    f"data[{i}] must be (prompt, positive, negative), three non-empty strings; got {row!r}."
                )
            pairs.append(Pair(*row))
        prompts = list(dict.fromkeys(p.prompt for p in pairs))
        return Concept(name, description or name, judge, pairs, prompts, {"val": [], "test": []})
    raise ValueError(
        f"data must be a concept name ({', '.join(builtin_names())}), a folder, or a non-empty list of "
        f"(prompt, positive, negative); got {data!r}."
    )


def methods() -> dict[str, str]:
    """Every registered method and how it is made: "trained" (sb.train), "fitted" (sb.fit) or "manual"."""
    return {name: cls.kind for name, cls in sorted(REGISTRY.items())}


def concepts() -> list[str]:
    """The built-in concepts (saebasis/data/<name>)."""
    return builtin_names()


# -- the steering object -----------------------------------------------------------------------------------
@dataclass
class LatentReading:
    """One SAE latent a steering acts on: its index, score (the method's own latent scores, or the cosine of the
    latent's decoder row with the folded residual vector), and what it means (from the SAE's per-latent table when it
    has one: token statistics and max-activating contexts; else the logit lens of its decoder row)."""

    latent: int
    score: float
    explanation: str
    contexts: list[str] = field(default_factory=list)
    promotes: list[str] = field(default_factory=list)


class LatentReadings(list):
    """A list of LatentReading that prints as a table (and as HTML in a notebook)."""

    source: str = ""

    def __repr__(self) -> str:
        lines = [f"{'latent':>7}  {'score':>8}  explanation"]
        lines += [f"{r.latent:>7}  {r.score:>8.4f}  {r.explanation}" for r in self]
        return "\n".join(lines + ([f"(scores: {self.source})"] if self.source else []))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{r.latent}</td><td>{r.score:.4f}</td><td>{html.escape(r.explanation)}</td>"
            f"<td>{html.escape(r.contexts[0]) if r.contexts else ''}</td></tr>"
            for r in self
        )
        return f"<table><tr><th>latent</th><th>score</th><th>explanation</th><th>top context</th></tr>{rows}</table>"


class Steering:
    """A trained or fitted steering: the intervention, the hook it acts at, the settings it was made with and its
    metrics. `apply` attaches it to a model; `save` writes a Hub-layout folder; `top_latents` reads it in the SAE's
    basis; `export` writes it for another engine (llama.cpp, steering-vectors, repeng, lm-eval)."""

    def __init__(
        self,
        intervention: Intervention,
        hook: str,
        cfg: dict,
        metrics: dict | None = None,
        sae: SAEBasis | None = None,
        path: Path | None = None,
        model=None,
        tokenizer=None,
    ) -> None:
        self.intervention, self.hook, self.cfg, self.metrics = intervention, hook, cfg, dict(metrics or {})
        self.sae = sae if sae is not None else intervention.sae
        self.path = path
        self._model, self._tokenizer = model, tokenizer

    @property
    def method(self) -> str:
        return self.intervention.method

    def __repr__(self) -> str:
        where = f", saved at {self.path}" if self.path else ""
        return f"Steering({self.method} at {self.hook}{where})"

    @contextlib.contextmanager
    def apply(self, model, strength: float = 1.0, positions=None) -> Iterator[None]:
        """Steer `model` at `strength` inside the `with` block (any forward: model(...), model.generate, sb.generate);
        the model is restored on exit, also after an exception. Strength 0 changes nothing."""
        device = next(model.parameters()).device
        self.intervention.to(device)
        with hooks.steering(model, self.hook, self.intervention, strength, positions):
            yield

    def vector(self) -> torch.Tensor | None:
        """The one residual vector it adds at the hook per unit strength ([d_model]), or None when it does not fold."""
        v = self.intervention.folded()
        return None if v is None else v.detach().clone()

    def as_run(self) -> Run:
        return Run(
            self.intervention,
            {**self.cfg, "hook": self.hook},
            self.metrics,
            self.path or Path(f"<in memory: {self.method}>"),
        )

    # -- reading ---------------------------------------------------------------------------------------------
    def top_latents(self, k: int = 10, tokenizer=None, model=None) -> LatentReadings:
        """The k SAE latents it acts on most, with what each means (see LatentReading)."""
        from saebasis.interpret import explain, lens, rank, table

        if self.sae is None:
            raise ValueError(
                f"This {self.method} steering has no SAE to read it in: pass sae= to sb.train / sb.fit / sb.load "
                f"(residual methods are read through an SAE at the same hook)."
            )
        tokenizer, model = tokenizer or self._tokenizer, model or self._model
        ranking = rank.rank_latents(self.intervention, self.sae, k)
        folder = table.shipped_folder(self.sae)
        latent_table = table.load_table(folder) if folder is not None else None
        if latent_table is None and (model is None or tokenizer is None):
            raise ValueError(
                "This SAE ships no per-latent table: pass model= and tokenizer= to read its latents "
                "through the logit lens."
            )
        out = LatentReadings()
        out.source = ranking.source
        for i in ranking.indices.tolist():
            score = float(ranking.scores[i])
            if latent_table is not None:
                stats = latent_table.token_stats(i, tokenizer)
                out.append(
                    LatentReading(
                        i,
                        score,
                        explain.token_explanation(stats),
                        latent_table.context_texts(i, tokenizer)[:5],
                        [t for t, _ in stats["promotes"][:8]],
                    )
                )
            else:
                promotes = lens.logit_lens(model, tokenizer, self.sae.W_dec[i], k=8)["promoted"]
                out.append(LatentReading(i, score, "promotes: " + ", ".join(map(repr, promotes[:5])), [], promotes))
        return out

    # -- saving ----------------------------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """A folder in the Hugging Face Hub layout: intervention.safetensors + cfg.json + metrics.json + README.md
        (a model card: method and its equation, model, hook, SAE, data, metrics, top latents). A finished folder is
        replaced only with overwrite=True."""
        path = Path(path)
        cfg = {**self.cfg, "hook": self.hook}
        with run_guard(path, overwrite=overwrite):
            save_run(path, self.intervention, cfg, self.metrics)
            (path / "README.md").write_text(self.model_card())
        self.path = path
        print(f"[saebasis] saved {self.method} -> {path}")
        return path

    def model_card(self) -> str:
        """README.md of a saved steering (YAML front matter the Hub reads, then what it is and how to load it)."""
        readings = None
        if self.sae is not None:
            with contextlib.suppress(ValueError):  # no per-latent table and no model to read it with: no latent table
                readings = self.top_latents(10)
        return _model_card(self, readings)

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None) -> str:
        """Save to a temporary folder and upload it as a model repo (needs network and a Hugging Face token)."""
        import tempfile

        from huggingface_hub import HfApi

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save(Path(tmp) / "steering")
            api = HfApi(token=token)
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=str(folder))
        return str(getattr(info, "commit_url", info))

    def export(self, path: str | Path, format: str, strength: float = 1.0, **kw) -> Path:
        """Write it for another engine: format gguf (llama.cpp control vector), steering-vectors, repeng or lm-eval."""
        from saebasis.export import export

        return export(self.as_run(), path, format, strength=strength, **kw)


def _model_card(steer: Steering, readings: LatentReadings | None) -> str:
    cls = type(steer.intervention)
    equation = (cls.__doc__ or "").strip().split("\n\n")[0]
    model = (steer.cfg.get("model") or {}).get("name", "")
    sae = (steer.cfg.get("sae") or {}).get("path") or ("an SAE built in memory" if steer.sae is not None else "none")
    metrics = {k: v for k, v in steer.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    lines = [
        "---",
        "library_name: saebasis",
        f"tags: [saebasis, steering, {steer.method}]",
        "---",
        "",
        f"# {steer.method} steering",
        "",
        f"A `{steer.method}` steering made with saebasis.",
        "",
        f"> {equation}",
        "",
        "| | |",
        "|---|---|",
        f"| method | `{steer.method}` ({cls.kind}) |",
        f"| model | `{model}` |",
        f"| hook | `{steer.hook}` |",
        f"| SAE | `{sae}` |",
        f"| data | `{steer.cfg.get('data')}` |",
        "",
    ]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(metrics.items())
        ]
        lines.append("")
    if readings:
        lines += ["## Top latents", "", "| latent | score | explanation |", "|---|---|---|"]
        lines += [f"| {r.latent} | {r.score:.4f} | {r.explanation.replace('|', '/')} |" for r in readings]
        lines.append("")
    lines += [
        "## Use",
        "",
        "```python",
        "import saebasis as sb",
        "model, tok = sb.load_model(...)  # the model above",
        'steer = sb.load("<this folder or hf:owner/repo>", model=model)',
        "with steer.apply(model, strength=1.0):",
        '    print(sb.generate(model, tok, "Tell me about your day."))',
        "```",
        "",
    ]
    return "\n".join(lines)


# -- making one --------------------------------------------------------------------------------------------
def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


def _compose(command: str, method: str) -> dict:
    """The CLI's config for `saebasis <command> experiment=<method>` (or intervention=<method>), logging off."""
    if method not in REGISTRY:
        raise ValueError(
            f"Unknown method '{method}'.{_suggest(method, list(REGISTRY))} Registered: {sorted(REGISTRY)}."
        )
    own_yaml = (CONFIG_DIR / "intervention" / f"{method}.yaml").exists()  # else the dataclass defaults
    overrides = [f"intervention={method if own_yaml else method + '_defaults'}"]
    if (CONFIG_DIR / "experiment" / f"{method}.yaml").exists():
        overrides.append(
            f"experiment={method}"
        )  # the method's tuned settings (lr, ...), as the CLI's experiment=<method>
    if command == "train":
        overrides += ["logger=none", "n_samples=0"]
    return to_dict(compose(command, overrides))


def _apply_settings(cfg: dict, method: str, settings: dict, command: str) -> dict:
    """Route each keyword to the config: a top-level field (lr, seed, ...), a Trainer argument (max_steps, ...) or a
    field of the method's dataclass (l1_coef, rank, ...); `trainer={...}` / `intervention={...}` set several."""
    iv_fields = sorted(config_fields(method))
    top = sorted(k for k in cfg if k not in PLACE_KEYS)
    trainer = sorted(cfg.get("trainer") or {})
    for key, value in settings.items():
        if key in ("trainer", "intervention") and isinstance(value, dict):
            valid = trainer if key == "trainer" else iv_fields
            for sub, v in value.items():
                if sub not in valid:
                    raise ConfigError(
                        f"{key}.{sub}", f"is not a {key} setting" + _suggest(sub, valid), f"use one of {valid}"
                    )
                cfg[key][sub] = v
        elif key in top:
            cfg[key] = value
        elif key in trainer:
            cfg["trainer"][key] = value
        elif key in iv_fields:
            cfg["intervention"][key] = value
        else:
            valid = top + trainer + iv_fields
            raise ConfigError(
                key,
                f"is not a setting of sb.{command}('{method}')" + _suggest(key, valid),
                f"use one of: {', '.join(valid)}",
            )
    return cfg


def _stack(model, tokenizer, sae: Any, hook: str | None) -> Stack:
    from saebasis.core.models import prepare

    if not hasattr(model, "config") or not hasattr(model.config, "hidden_size"):
        raise TypeError(
            f"model must be a Hugging Face causal LM (with .config.hidden_size), got {type(model).__name__}."
        )
    prepare(model, tokenizer, next(model.parameters()).device.type)
    basis = None
    if sae is not None:
        basis = load_sae(
            sae, hook=hook if not isinstance(sae, SAEBasis) else None, device=next(model.parameters()).device.type
        )
    hook = hook or (basis.hook if basis is not None else None)
    if hook is None:
        raise ValueError("No hook: pass hook='blocks.L.hook_resid_post' (or an SAE, whose hook is used).")
    hooks.resolve(model, hook)  # a clear error for a layer the model does not have
    if basis is not None:
        basis.check_width(model.config.hidden_size)
        if not hooks.same_residual(basis.hook, hook):
            raise ValueError(f"hook={hook} but the SAE reads {basis.hook}: drop hook=, or pass an SAE for {hook}.")
    return Stack(model, tokenizer, basis, hooks.parse_hook(hook).name, None)


def _describe(cfg: dict, model, stack: Stack, data: Any, concept_obj: Concept) -> dict:
    cfg["model"] = {
        "name": getattr(model.config, "_name_or_path", "") or type(model).__name__,
        "device": next(model.parameters()).device.type,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    cfg["sae"] = (
        None
        if stack.sae is None
        else {"path": stack.sae.source or None, "sae_id": None, "hook": stack.sae.hook, "check": False}
    )
    cfg["hook"] = stack.hook
    cfg["data"] = str(data) if isinstance(data, (str, Path)) else concept_obj.name
    return cfg


def train(
    method: str,
    model,
    tokenizer,
    sae: Any = None,
    data: Any = "sentiment",
    *,
    hook: str | None = None,
    progress: bool = True,
    **settings,
) -> Steering:
    """Train `method` (a trained or manual method of sb.methods()) on `data` at `hook` (default: the SAE's).

    settings: any field of configs/train.yaml (lr, seed, batch_size, objective, max_pairs, ...), of the Trainer
    (max_steps, max_epochs, precision, ...) or of the method's config (l1_coef, rank, ...)."""
    setup_env()
    cfg = _apply_settings(_compose("train", method), method, settings, "train")
    cfg["trainer"]["enable_progress_bar"] = bool(progress) and cfg["trainer"].get("enable_progress_bar", True)
    check_intervention(method, cfg["intervention"], "intervention")
    check_train_numbers(cfg)
    if REGISTRY[method].kind == "fitted":
        raise ValueError(f"'{method}' is fitted in closed form: use sb.fit('{method}', ...).")
    REGISTRY[method].check_can_train(cfg)
    stack = _stack(model, tokenizer, sae, hook)
    concept_obj = concept(data)
    cfg = _describe(cfg, model, stack, data, concept_obj)
    from saebasis.training.train import train_core

    iv, metrics, _ = train_core(cfg, stack, concept_obj)
    metrics.pop("global_zero", None)
    return Steering(iv, stack.hook, cfg, metrics, stack.sae, model=model, tokenizer=tokenizer)


def fit(
    method: str, model, tokenizer, sae: Any = None, data: Any = "sentiment", *, hook: str | None = None, **settings
) -> Steering:
    """Fit a closed-form `method` (DiffMean, PCA, SARA, one-latent SAE steering, ...) on `data` at `hook`.

    settings: any field of configs/fit_baseline.yaml (max_pairs, batch_size, max_len, seed) or of the
    method's config."""
    setup_env()
    cfg = _apply_settings(_compose("fit_baseline", method), method, settings, "fit")
    check_intervention(method, cfg["intervention"], "intervention")
    check_numbers(cfg, ("batch_size", "max_len"))
    if REGISTRY[method].kind != "fitted":
        raise ValueError(f"'{method}' is not fitted in closed form: use sb.train('{method}', ...).")
    stack = _stack(model, tokenizer, sae, hook)
    concept_obj = concept(data)
    cfg = _describe(cfg, model, stack, data, concept_obj)
    from saebasis.training.fit import fit_intervention

    torch.manual_seed(cfg["seed"])
    start = time.time()
    iv = fit_intervention(cfg, stack, concept_obj)
    check_finite(iv)  # as fit-baseline: NaN / inf weights are never handed back
    metrics = {
        "fit_time_s": round(time.time() - start, 2),
        "n_pairs": len(concept_obj.pairs[: cfg.get("max_pairs") or None]),
        **iv.describe(),
    }
    return Steering(iv, stack.hook, cfg, metrics, stack.sae, model=model, tokenizer=tokenizer)


def load(source: str | Path, model=None, sae: Any = None, tokenizer=None, device: str | None = None) -> Steering:
    """A saved steering: a folder written by `Steering.save` or the CLI (`saebasis train` / `fit-baseline`), or
    `hf:<owner>/<repo>` (a Hub model repo, fetched once when online, then read from the local cache). The SAE is the
    one its cfg.json names unless given; only safetensors and JSON are read."""
    folder = _resolve(source)
    device = device or (next(model.parameters()).device.type if model is not None else "cpu")
    from saebasis.runs import CFG_FILE, read_json

    cfg = read_json(folder / CFG_FILE)
    recorded_hook = cfg.get("hook") or (cfg.get("sae") or {}).get("hook")
    basis = None
    if sae is not None:
        basis = load_sae(sae, hook=recorded_hook if not isinstance(sae, SAEBasis) else None, device=device)
    method = cfg.get("method")
    if basis is None and method in REGISTRY and REGISTRY[method].uses_sae and not (cfg.get("sae") or {}).get("path"):
        raise ValueError(
            f"{folder} holds a '{method}' steering made with an SAE built in memory (cfg.json records no path): "
            f"pass sae= (the same SAE) to sb.load."
        )
    run = load_run(folder, sae=basis, device=device)
    if model is not None and model.config.hidden_size != run.cfg.get("d_model"):
        raise ValueError(
            f"{folder} was made for d_model={run.cfg.get('d_model')} but this model has "
            f"{model.config.hidden_size}: load it with the model it was trained on."
        )
    hook = run.cfg.get("hook") or (run.intervention.sae.hook if run.intervention.sae is not None else None)
    return Steering(
        run.intervention,
        hook,
        run.cfg.get("config") or run.cfg,
        run.metrics,
        basis or run.intervention.sae,
        folder,
        model=model,
        tokenizer=tokenizer,
    )


def _resolve(source: str | Path) -> Path:
    text = str(source)
    if text.startswith("hf:"):
        repo = text.removeprefix("hf:").strip("/")
        if repo.count("/") != 1:
            raise ValueError(f"'{text}' is not hf:<owner>/<repo>.")
        from huggingface_hub import snapshot_download

        try:  # the local cache first (offline works once fetched), the Hub only when it is not there
            return Path(
                snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "README.md"], local_files_only=True)
            )
        except Exception:  # noqa: BLE001 -- not cached yet (or a partial cache): fetch it
            try:
                return Path(snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "README.md"]))
            except Exception as err:
                raise FileNotFoundError(
                    f"Cannot fetch '{text}' ({type(err).__name__}): it is not in the local Hugging Face "
                    f"cache and the Hub cannot be reached or has no such repo. Go online once, or "
                    f"pass a local folder."
                ) from err
    return Path(text)


# -- using one -----------------------------------------------------------------------------------------------
def generate(model, tokenizer, prompt: str | Sequence[str], max_new_tokens: int = 64, **kw) -> str | list[str]:
    """Chat-formatted greedy generation (do_sample=True, temperature=, top_p= to sample). A steering applied with
    `with steer.apply(model): ...` acts on it. Returns one string per prompt (a string for a string)."""
    one = isinstance(prompt, str)
    texts, _ = _generate(model, tokenizer, [prompt] if one else list(prompt), None, None, max_new_tokens, **kw)
    return texts[0] if one else texts


class Comparison:
    """The judged comparison of `sb.compare`: one row per method (score with its 95% CI, concept / instruction /
    fluency, KL on neutral prompts, latents changed, chosen strength ...), best first. Prints as Markdown."""

    def __init__(self, rows: list[dict], results: dict) -> None:
        from saebasis.eval.plots import _order

        self.rows = sorted(rows, key=_order)
        self.results = results

    def __repr__(self) -> str:
        from saebasis.eval.plots import results_markdown

        return results_markdown(self.rows)

    def _repr_markdown_(self) -> str:
        return repr(self)

    def __getitem__(self, method: str) -> dict:
        for row in self.rows:
            if row["method"] == method:
                return row
        raise KeyError(f"no method '{method}' in this comparison: {[r['method'] for r in self.rows]}")

    def best(self) -> str:
        return self.rows[0]["method"]


def compare(
    methods: Sequence[Any],
    model,
    tokenizer,
    sae: Any = None,
    data: Any = "sentiment",
    *,
    hook: str | None = None,
    strengths: Sequence[float] | None = None,
    **settings,
) -> Comparison:
    """The judged protocol of `saebasis compare` on steerings in memory: strength chosen on the concept's validation
    instructions, test scores with bootstrap CIs. methods: Steering objects, "unsteered", "prompting" (the concept's
    prompting prefix) or a method name (fitted / trained here with its defaults). settings: configs/compare.yaml fields
    (n_val, n_test, max_new_tokens, seeds, autocast, out_dir to also write the result files, ...)."""
    from saebasis.experiments.compare import compare as run_compare

    setup_env()
    concept_obj = concept(data)
    cfg = to_dict(
        compose("compare", ["logger=none"] + ([override("data", data)] if isinstance(data, (str, Path)) else []))
    )
    cfg["out_dir"] = None
    for key, value in settings.items():
        if key not in cfg or key in ("model", "sae", "methods", "hydra", "logger", "stack_overrides"):
            raise ConfigError(
                key, "is not a setting of sb.compare" + _suggest(key, list(cfg)), f"use one of {sorted(cfg)}"
            )
        cfg[key] = value
    grid = list(strengths) if strengths is not None else None
    specs: dict[str, dict] = {}
    for item in methods:
        if isinstance(item, Steering):
            name = _unique(item.method, specs)
            spec = {"kind": "run", "run": item.as_run()}
            spec["strengths"] = grid or [0.5, 1.0, 2.0]
        elif item == "unsteered":
            name, spec = "unsteered", {"kind": "none"}
        elif item == "prompting":
            name, spec = "prompting", {"kind": "prompt", "prefix": concept_obj.prompt}  # concept.yaml's `prompt`
        elif isinstance(item, str) and item in REGISTRY:
            made = (fit if REGISTRY[item].kind == "fitted" else train)(
                item, model, tokenizer, sae, concept_obj, hook=hook
            )
            name, spec = (
                _unique(item, specs),
                {"kind": "run", "run": made.as_run(), "strengths": grid or [0.5, 1.0, 2.0]},
            )
        else:
            raise ValueError(
                f"compare takes Steering objects, 'unsteered', 'prompting' or a method name; got {item!r}."
            )
        specs[name] = spec
    cfg["methods"] = specs
    stack = _stack(model, tokenizer, sae, hook or _first_hook(methods))
    out = run_compare(cfg, stack=stack, concept=concept_obj)
    return Comparison(out["rows"], out["results"])


def _unique(name: str, taken: dict) -> str:
    n, out = 1, name
    while out in taken:
        n += 1
        out = f"{name}-{n}"
    return out


def _first_hook(methods: Sequence[Any]) -> str | None:
    return next((m.hook for m in methods if isinstance(m, Steering)), None)
