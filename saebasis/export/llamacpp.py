"""Run the embedded GGUF (or any llama.cpp model) through llama-cpp-python with an exported control vector, to check
an export where it will be served. Optional: `bash scripts/setup_llamacpp.sh` builds llama-cpp-python from source.

`LlamaCpp.set_control_vector(path, scale)` fills llama.cpp's control-vector buffer as llama.cpp's own loader does
(common.cpp `common_control_vector_load`: direction.k at offset n_embd * (k - 1), times the scale) and applies it to
layers 1 .. n_layer (what `llama-cli --control-vector-scaled FILE:SCALE` does with no layer range).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from saebasis.export.gguf_file import read_gguf

SETUP = "bash scripts/setup_llamacpp.sh (builds llama-cpp-python from source, CPU)"
AGREEMENT_PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a",
    "My favourite food is",
    "The weather today is",
    "2 + 2 =",
    "The best way to learn a language is",
    "I went to the store and bought",
    "Water boils at a temperature of",
    "The movie was",
    "Dear friend, I hope",
    "Tell me about your day.",
    "The restaurant we visited last night",
]
"""Short raw-text prompts the engines' next-token logits are compared on (tests/export, bench/export_check.py)."""


def require_llama_cpp():
    try:
        import llama_cpp
    except ImportError as err:
        raise ImportError(f"llama.cpp checks need llama-cpp-python: {SETUP}.") from err
    return llama_cpp


class LlamaCpp:
    """A llama.cpp model with next-token logits for given token ids (the same ids saebasis' tokenizer gives)."""

    def __init__(self, gguf_path: str | Path, n_ctx: int = 512, n_threads: int = 2) -> None:
        llama_cpp = require_llama_cpp()
        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=str(gguf_path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            logits_all=True,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self.n_embd = self.llm.n_embd()
        self.n_layer = int(llama_cpp.llama_model_n_layer(self.llm.model))
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._buffer = None  # keeps the control vector's floats alive while llama.cpp holds the pointer

    def logits(self, ids: list[int]) -> np.ndarray:
        """[vocab] float32: logits after the last of `ids` (a fresh sequence each call)."""
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[len(ids) - 1], dtype=np.float32)

    def generate(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation of `ids` (a fresh sequence): the argmax of llama.cpp's logits at each step, stopping
        after an end-of-generation token (kept, as transformers keeps its EOS) or max_new_tokens."""
        self.llm.reset()
        self.llm.eval(list(ids))
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            out.append(token)
            if self.lib.llama_vocab_is_eog(self._vocab, token) or len(out) == max_new_tokens:
                break
            self.llm.eval([token])
        return out

    def close(self) -> None:
        """Free the model now (llama-cpp-python's own finaliser can fail at interpreter exit)."""
        self._buffer = None
        self.llm.close()

    def set_control_vector(self, path: str | Path | None, scale: float = 1.0) -> None:
        """Apply a control-vector GGUF at `scale` (None clears it)."""
        ctx = self.llm.ctx
        if path is None:
            self._buffer = None
            rc = self.lib.llama_set_adapter_cvec(ctx, None, 0, self.n_embd, -1, -1)
        else:
            directions = read_gguf(path)
            if 0 in directions:
                raise ValueError(f"{path} has direction.0, which llama.cpp rejects (no slot for block 0's output).")
            data = np.zeros(self.n_embd * max(directions), dtype=np.float32)
            for k, vector in directions.items():
                if vector.shape != (self.n_embd,):
                    raise ValueError(
                        f"{path}: direction.{k} has {vector.shape[0]} entries, the model's n_embd is {self.n_embd}."
                    )
                data[self.n_embd * (k - 1) : self.n_embd * k] += scale * vector
            self._buffer = data
            pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            rc = self.lib.llama_set_adapter_cvec(ctx, pointer, data.size, self.n_embd, 1, self.n_layer)
        if rc != 0:
            raise RuntimeError(f"llama.cpp refused the control vector {path} (code {rc}).")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def compare_engines(
    model,
    tokenizer,
    engine: LlamaCpp,
    prompts: list[str],
    control_vector: str | Path | None = None,
    intervention=None,
    hook: str | None = None,
    strength: float = 1.0,
) -> dict:
    """Next-token logits of saebasis (transformers) and llama.cpp on the same token ids.

    Unsteered: max |logit difference| and top-1 agreement per prompt. With `control_vector` (the export of
    `intervention` at `strength`): the steering effect (steered minus unsteered logits) of each engine, their cosine
    per prompt, the ratio of their norms, and top-1 agreement of the steered logits."""
    import torch

    from saebasis.core import hooks

    rows = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            hf = model(input_ids=torch.tensor([ids])).logits[0, -1].float().numpy()
        engine.set_control_vector(None)
        cpp = engine.logits(ids)
        row = {
            "prompt": prompt,
            "n_tokens": len(ids),
            "max_abs_diff": float(np.abs(hf - cpp).max()),
            "top1_agree": bool(hf.argmax() == cpp.argmax()),
            "logit_cosine": cosine(hf, cpp),
        }
        if control_vector is not None:
            with torch.no_grad(), hooks.steering(model, hook, intervention, strength):
                hf_steered = model(input_ids=torch.tensor([ids])).logits[0, -1].float().numpy()
            engine.set_control_vector(control_vector)
            cpp_steered = engine.logits(ids)
            engine.set_control_vector(None)
            effect_hf, effect_cpp = hf_steered - hf, cpp_steered - cpp
            row.update(
                effect_cosine=cosine(effect_hf, effect_cpp),
                effect_norm_ratio=float(np.linalg.norm(effect_cpp) / max(np.linalg.norm(effect_hf), 1e-30)),
                effect_norm=float(np.linalg.norm(effect_hf)),
                steered_top1_agree=bool(hf_steered.argmax() == cpp_steered.argmax()),
                steered_max_abs_diff=float(np.abs(hf_steered - cpp_steered).max()),
            )
        rows.append(row)
    summary = {
        "n_prompts": len(rows),
        "max_abs_diff": max(r["max_abs_diff"] for r in rows),
        "top1_agreement": float(np.mean([r["top1_agree"] for r in rows])),
        "min_logit_cosine": min(r["logit_cosine"] for r in rows),
    }
    if control_vector is not None:
        summary.update(
            min_effect_cosine=min(r["effect_cosine"] for r in rows),
            mean_effect_cosine=float(np.mean([r["effect_cosine"] for r in rows])),
            steered_top1_agreement=float(np.mean([r["steered_top1_agree"] for r in rows])),
            effect_norm_ratio=[round(r["effect_norm_ratio"], 4) for r in rows],
        )
    return {"summary": summary, "prompts": rows}
