"""Loads items.jsonl (next to this file) for the lm-eval task saebasis_capability.yaml: local data, no download.
Imported by lm-eval by file path (`custom_dataset: !function task_data.load`); it imports nothing from saebasis."""

import json
from pathlib import Path

import datasets

ITEMS = Path(__file__).with_name("items.jsonl")


def load(**kwargs) -> datasets.DatasetDict:
    rows = [json.loads(line) for line in ITEMS.read_text().splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
