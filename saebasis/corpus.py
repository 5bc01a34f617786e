"""The offline corpus: chat transcripts the embedded model writes itself, cached on disk.

Why this corpus: a fresh machine here has no network and no text dataset, and nothing may be fetched
from a hub at run time. Text the model generates from prompts this project writes is legitimately
available anywhere the model is, and it matches the distribution saebasis steers (chat responses).
Each document is the chat-formatted user prompt plus the model's sampled reply (temperature 0.9,
top-p 0.95). Prompts are topics x instruction types, so replies cover many subjects and registers.

Honest limits: the text is narrower and more repetitive than web text (a 135M model's style, English
only, chat register), so an SAE trained on it learns fewer rare features and may fit web text worse.
At scale, use a real dataset (sae-lens `dataset_path`, e.g. a FineWeb sample) instead.

The cache is a JSONL file, appended one batch at a time: an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from saebasis.models import cache_root

TOPICS = [
    "the ocean", "volcanoes", "bread baking", "chess", "the Roman Empire", "black holes", "honeybees", "jazz music",
    "electric cars", "rainforests", "the human heart", "learning a language", "mountain climbing", "coffee",
    "the printing press", "machine learning", "friendship", "winter", "smartphones", "ancient Egypt", "football",
    "gardening", "the moon landing", "recycling", "photography", "sleep", "dinosaurs", "the stock market", "poetry",
    "a rainy day", "trains", "cats", "dogs", "the internet", "renewable energy", "Shakespeare", "a small town",
    "space telescopes", "cooking pasta", "the immune system", "birds migrating", "a job interview", "city traffic",
    "the desert", "painting", "video games", "climate change", "a birthday party", "libraries", "earthquakes",
    "the violin", "mathematics", "a long journey", "healthy breakfast", "robots", "the French Revolution", "islands",
    "running a marathon", "bridges", "thunderstorms",
]
TEMPLATES = [
    "Write a short paragraph about {t}.", "Explain {t} to a ten-year-old.", "Tell me a short story involving {t}.",
    "What are three interesting facts about {t}?", "Write a poem about {t}.", "Give me advice related to {t}.",
    "Describe {t} in vivid detail.", "What is your opinion of {t}?", "Write a diary entry about {t}.",
    "Summarise the history of {t}.", "Write a product review connected to {t}.", "List pros and cons of {t}.",
    "Write a dialogue between two friends about {t}.", "Why do people care about {t}?",
    "Write a news report about {t}.", "How would you teach a class on {t}?",
]


def corpus_path(name: str = "smollm2-chat") -> Path:
    return cache_root() / "corpus" / f"{name}.jsonl"


def corpus_prompts(seed: int = 0) -> list[str]:
    prompts = [tpl.format(t=topic) for topic, tpl in itertools.product(TOPICS, TEMPLATES)]
    random.Random(seed).shuffle(prompts)
    return prompts


def read_corpus(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@torch.no_grad()
def build_corpus(
    model, tokenizer, n_prompts: int = 960, max_new_tokens: int = 128, batch_size: int = 64,
    path: Path | None = None, seed: int = 0,
) -> list[dict]:
    """Generate (or resume) the cached corpus; returns rows {"id", "prompt", "text"}."""
    path = path or corpus_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    prompts = corpus_prompts(seed)[:n_prompts]
    done = {row["id"] for row in read_corpus(path)}
    todo = [i for i in range(len(prompts)) if i not in done]
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="corpus (model-written)", unit="doc")
    for start in range(0, len(todo), batch_size):
        ids = todo[start : start + batch_size]
        torch.manual_seed(seed + ids[0])
        chats = [_chat(tokenizer, prompts[i]) for i in ids]
        batch = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.9, top_p=0.95,
            pad_token_id=tokenizer.pad_token_id,
        )
        replies = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        with open(path, "a") as f:
            for i, chat, reply in zip(ids, chats, replies):
                f.write(json.dumps({"id": i, "prompt": prompts[i], "text": chat + reply.strip()}) + "\n")
        bar.update(len(ids))
    bar.close()
    return read_corpus(path)


def _chat(tokenizer, prompt: str) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    return prompt + "\n"


def corpus_texts(rows: list[dict]) -> list[str]:
    return [row["text"] for row in sorted(rows, key=lambda r: r["id"])]
