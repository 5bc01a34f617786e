"""`saebasis compare`: every method side by side on one concept, judged offline.

The package: `spec` (the method specs, the config's checks, each method's composed config and resume key),
`evaluator` (generate and judge), `results` (results.json, the shared cells, what a resume reuses) and `run` (the
compare: make each method, search its strength, report test).

Methods come from the config (`methods: {name: spec}`), each spec a mapping (data, never override strings
built by code) of one kind:
  {kind: none}                                   the unsteered model
  {kind: prompt, prefix: "..."}                  prompting reference: the prefix asks for the concept
  {kind: train, overrides: [...], strengths: [...]}   the train config with these overrides, trained in-process
  {kind: fit, overrides: [...], strengths: [...]}     the fit_baseline config with these overrides, fitted in-process
  {kind: run, run_dir: ..., strengths: [...]}    a saved run folder (any method, e.g. built by hand)
  {kind: run, run: <saebasis.runs.Run>, ...}     a run already in memory (what `train` returns), from Python
The model and SAE are loaded once per compare (`load_stack`) and shared by every method; trained / fitted
methods get the concept loaded once too, and come back in memory (nothing is read back from disk). Each
method's strengths are scored in one batched generate call (per-row strengths), and the unsteered / prompting
generations are computed once and reused.
Protocol (saebasis/eval/protocol.py): search strength on validation from the spec's `strengths` (extended x2 / /2
until the optimum is interior, cfg.strength_search; a choice still on an edge is flagged on_edge), choose, report
test with bootstrap CIs over examples (and seeds: trained methods are trained once per seed; with do_sample every
method is sampled once per seed). Judges come from the registry (saebasis/judges); a concept with a second_judge
also gets `concept2` (its score), `score2` (the harmonic mean with it) and `judge_rho` (Spearman of the two
judges over the test responses) in its row. Outputs in out_dir: results.csv, results.md, results.json,
score_vs_strength.png, score_vs_fluency.png, logged to wandb (offline by default; logger=none disables).
"""

from saebasis.experiments.compare.evaluator import Evaluator
from saebasis.experiments.compare.results import cell_key, finished_methods
from saebasis.experiments.compare.run import compare, compare_method, method_of, obtain
from saebasis.experiments.compare.spec import (
    KINDS,
    MIXED,
    Method,
    config_key,
    keep_methods,
    method_config,
    mixed_precision,
    normalise,
    saved_key,
    seeds_for,
)

__all__ = [
    "KINDS",
    "MIXED",
    "Evaluator",
    "Method",
    "cell_key",
    "compare",
    "compare_method",
    "config_key",
    "finished_methods",
    "keep_methods",
    "method_config",
    "method_of",
    "mixed_precision",
    "normalise",
    "obtain",
    "saved_key",
    "seeds_for",
]
