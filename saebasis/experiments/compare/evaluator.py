"""Generating and judging: (method, strengths, split, seed) -> judged responses, in one batched generate call per
method and split; the unsteered / prompting generations and the unsteered capability pass are cached."""

from __future__ import annotations

import contextlib
import weakref

import torch

from saebasis import judges
from saebasis.core.generation import generate_timed
from saebasis.eval import capability
from saebasis.eval.metrics import ab_matching_prob, harmonic_mean
from saebasis.experiments.compare.spec import Method


class Evaluator:
    """Generate and judge (method, strengths, split, seed); caches the unsteered / prompting generations."""

    def __init__(self, stack, concept, cfg: dict) -> None:
        self.stack, self.concept, self.cfg = stack, concept, cfg
        self.splits = {
            "val": concept.instructions["val"][: cfg["n_val"]],
            "test": concept.instructions["test"][: cfg["n_test"]],
        }
        self._cache: dict[tuple, dict] = {}
        self.prompt_reuse = judges.PromptReuse()  # the fluency judge runs each instruction's prompt once per concept

    def precision(self):
        """torch.autocast in cfg.autocast (bfloat16 / float16) around generating, judging and measuring;
        no-op when null.
        On a CPU with AVX512-BF16 ~1.6x faster here, and greedy text changes (scripts/bench/bench_precision.py)."""
        if not self.cfg.get("autocast"):
            return contextlib.nullcontext()
        return torch.autocast(
            next(self.stack.model.parameters()).device.type, dtype=getattr(torch, self.cfg["autocast"])
        )

    def generate(self, method: Method, split: str, strength: float, seed: int) -> dict:
        return self.generate_many(method, split, [strength], seed)[float(strength)]

    def generate_many(self, method: Method, split: str, strengths: list[float], seed: int) -> dict[float, dict]:
        """{strength: judged responses} for every strength in one batched generate pass (rows at their own strength)."""
        cfg, iv = self.cfg, method.intervention
        key = (method.prefix, split, seed if cfg["do_sample"] else 0)
        if iv is None:
            if key not in self._cache:
                self._cache[key] = self._run(method, split, [0.0], seed)[0.0]
            return {float(s): self._cache[key] for s in strengths}
        return self._run(method, split, [float(s) for s in strengths], seed)

    def _run(self, method: Method, split: str, strengths: list[float], seed: int) -> dict[float, dict]:
        cfg, prompts = self.cfg, self.splits[split]
        rows = [p for _ in strengths for p in prompts]
        per_row = [s for s in strengths for _ in prompts]
        with self.precision():
            gen = generate_timed(
                self.stack.model,
                self.stack.tokenizer,
                rows,
                method.intervention,
                method.hook,
                cfg["max_new_tokens"],
                cfg["batch_size"],
                method.prefix,
                do_sample=cfg["do_sample"],
                temperature=cfg["temperature"],
                top_p=cfg["top_p"],
                seed=seed,
                desc=f"{split} x{len(strengths)} strengths",
                strength=per_row if method.intervention is not None else 1.0,
            )
            out = {}
            for j, s in enumerate(strengths):
                responses = gen.responses[j * len(prompts) : (j + 1) * len(prompts)]
                out[s] = {
                    **self.judge(prompts, responses),
                    "responses": responses,
                    "seconds_per_token": gen.seconds / max(1, gen.token_slots),
                }
        return out

    def judge(self, instructions: list[str], responses: list[str]) -> dict[str, list[float]]:
        given = dict(
            description=self.concept.description,
            instructions=instructions,
            model=self.stack.model,
            tokenizer=self.stack.tokenizer,
        )
        with self.prompt_reuse.active():
            c, i, f = (
                judges.score(name, responses, **given) for name in (self.concept.judge, "instruction", "fluency")
            )
        out = {"concept": c, "instruction": i, "fluency": f, "score": [harmonic_mean(*x) for x in zip(c, i, f)]}
        if self.concept.second_judge:  # an independent judge of the same concept, reported beside the first
            out["concept2"] = judges.score(self.concept.second_judge, responses, **given)
            out["score2"] = [harmonic_mean(*x) for x in zip(out["concept2"], i, f)]
        return out

    def capability(self, method: Method, strength: float) -> dict:
        """Capability kept at the chosen strength (saebasis.eval.capability): accuracy on cfg.capability items, steered
        (or prompted) / unsteered, with its paired bootstrap CI; the unsteered pass is made once per process."""
        n = self.cfg["capability"]
        items = capability.select_items(capability.load_items(), n)
        known = _UNSTEERED.setdefault(self.stack.model, {})
        key = (len(items), self.cfg.get("autocast"))
        with self.precision():
            if key not in known:
                known[key] = capability.correct(self.stack.model, self.stack.tokenizer, items)
            base = known[key]
            if not bool(base.any()):  # e.g. a random tiny model: the ratio is undefined
                return {"capability_kept": None, "capability_acc": 0.0, "capability_items": len(items)}
            if method.intervention is None and not method.prefix:
                got = capability.Capability(1.0, (1.0, 1.0), *(float(base.float().mean()),) * 2, len(items), {})
            else:
                got = capability.capability_kept(
                    self.stack.model,
                    self.stack.tokenizer,
                    method.intervention,
                    method.hook,
                    strength,
                    items,
                    unsteered=base,
                    prefix=method.prefix,
                )
        return {
            "capability_kept": got.kept,
            "capability_ci_low": got.ci[0],
            "capability_ci_high": got.ci[1],
            "capability_acc": got.steered,
            "capability_items": got.n_items,
        }

    def ab(self, method: Method, split: str, strength: float) -> float:
        with self.precision():
            return ab_matching_prob(
                self.stack.model,
                self.stack.tokenizer,
                method.hook,
                method.intervention,
                self.concept.ab_items(split),
                method.prefix,
                strength=float(strength),
            )


_UNSTEERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> {(number of items, autocast): the unsteered model's [n_items] correctness}, shared by every concept of a
process and forgotten with the model."""


def evaluator(stack, concept, cfg: dict) -> list:
    """[the Evaluator, the unsteered test generation]: warmed up, then the reference speed of gen_overhead."""
    ev = Evaluator(stack, concept, cfg)
    warm_up(ev)  # the first generate call of a process is slow (allocator, kernels): never the reference
    return [ev, ev.generate(Method(None, ev.stack.hook, 0.0), "test", 0.0, cfg["seeds"][0])]  # cached for unsteered


def warm_up(ev: Evaluator) -> None:
    """One short untimed generation, so the unsteered reference for gen_overhead is timed warm."""
    prompts = ev.splits["val"][: ev.cfg["batch_size"]] or ev.splits["test"][: ev.cfg["batch_size"]]
    with ev.precision():  # warm the kernels the timed calls will use
        generate_timed(
            ev.stack.model,
            ev.stack.tokenizer,
            prompts,
            None,
            ev.stack.hook,
            min(8, ev.cfg["max_new_tokens"]),
            ev.cfg["batch_size"],
        )
