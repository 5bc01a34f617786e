"""The offline corpus: chat transcripts the embedded model writes itself, in compressed shards.

Why this corpus: a fresh machine here has no network and no text dataset, and nothing may be fetched
from a hub at run time. Text the model generates from prompts this project writes is legitimately
available anywhere the model is (so the project may redistribute it), and it matches the distribution
saebasis steers (chat responses). Each document is the chat-formatted user prompt plus the model's
sampled reply (temperature 0.9, top-p 0.95). Prompts are topics x registers (chat, stories,
explanations, lists, dialogue, code, opinions, both sentiments, letters, reviews, ...), so replies cover
many subjects and styles.

Honest limits: the text is narrower and more repetitive than web text (a 135M model's style, English
only, chat register), so an SAE trained on it learns fewer rare features and may fit web text worse.
At scale, use a real dataset (sae-lens `dataset_path`, e.g. a FineWeb sample) instead.

Layout: `<dir>/shard-00000.jsonl.gz`, ... each shard the `shard_size` prompts [s * size, (s + 1) * size)
of the seeded prompt list, written atomically once complete, so an interrupted build resumes at the
first missing shard and a shard's text depends only on (seed, shard index). Shards whose index is
`HELDOUT_EVERY - 1` mod `HELDOUT_EVERY` are held out: no SAE trains on them; SAE quality and the
interpretation tables are measured on them. The shipped corpus lives in `saebasis/assets/corpus`
(built by `python scripts/build_corpus.py --n-shards 51`).
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import os
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from saebasis.core.models import cache_root

HELDOUT_EVERY = 10  # every 10th shard is held out (10% of the corpus)
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "corpus"

TOPICS = [
    # nature and science
    "the ocean",
    "volcanoes",
    "black holes",
    "honeybees",
    "rainforests",
    "the human heart",
    "dinosaurs",
    "earthquakes",
    "thunderstorms",
    "the desert",
    "islands",
    "birds migrating",
    "the immune system",
    "DNA",
    "photosynthesis",
    "the solar system",
    "Mars",
    "the moon",
    "comets",
    "glaciers",
    "coral reefs",
    "wolves",
    "octopuses",
    "mushrooms",
    "rivers",
    "electricity",
    "magnets",
    "gravity",
    "atoms",
    "vaccines",
    "the brain",
    "sleep",
    "climate change",
    "renewable energy",
    "space telescopes",
    "evolution",
    "chemistry experiments",
    # history and society
    "the Roman Empire",
    "ancient Egypt",
    "the French Revolution",
    "the printing press",
    "the moon landing",
    "the Silk Road",
    "medieval castles",
    "the Industrial Revolution",
    "democracy",
    "elections",
    "taxes",
    "the law",
    "a court trial",
    "human rights",
    "immigration",
    "city traffic",
    "a small town",
    "libraries",
    "museums",
    "public transport",
    "volunteering",
    "newspapers",
    "social media",
    "privacy online",
    # everyday life and feelings
    "friendship",
    "a birthday party",
    "a job interview",
    "a rainy day",
    "winter",
    "summer holidays",
    "moving to a new city",
    "a first day at school",
    "losing a pet",
    "a wedding",
    "a family dinner",
    "being late",
    "a broken phone",
    "a noisy neighbour",
    "a surprise gift",
    "a long journey",
    "homesickness",
    "learning to drive",
    "a hospital visit",
    "getting lost",
    "an argument with a friend",
    "a promotion at work",
    "loneliness",
    "gratitude",
    "fear of failure",
    "a perfect morning",
    "a terrible day",
    "a lost wallet",
    # food, home, health
    "coffee",
    "bread baking",
    "cooking pasta",
    "healthy breakfast",
    "spicy food",
    "chocolate",
    "tea",
    "a vegetarian diet",
    "gardening",
    "cleaning the house",
    "running a marathon",
    "yoga",
    "a cold",
    "headaches",
    "dentists",
    "first aid",
    "nutrition",
    "a restaurant meal",
    "street food",
    "baking a cake",
    # technology and work
    "smartphones",
    "the internet",
    "machine learning",
    "robots",
    "electric cars",
    "video games",
    "programming in Python",
    "a database",
    "sorting algorithms",
    "web browsers",
    "passwords",
    "3D printing",
    "email etiquette",
    "remote work",
    "a startup",
    "the stock market",
    "saving money",
    "a budget",
    "customer service",
    "a team meeting",
    "deadlines",
    "spreadsheets",
    "open source software",
    "a bug in the code",
    # culture, sport, leisure
    "jazz music",
    "the violin",
    "poetry",
    "Shakespeare",
    "painting",
    "photography",
    "a film festival",
    "a rock concert",
    "chess",
    "football",
    "basketball",
    "tennis",
    "swimming",
    "the Olympics",
    "mountain climbing",
    "camping",
    "fishing",
    "board games",
    "a theme park",
    "a bookshop",
    "science fiction",
    "fairy tales",
    "comic books",
    "dancing",
    "a choir",
    "knitting",
    "trains",
    "bridges",
    "cats",
    "dogs",
    "horses",
    "a zoo",
]
TEMPLATES = [
    # explanations and facts
    "Explain {t} to a ten-year-old.",
    "What are three interesting facts about {t}?",
    "Summarise the history of {t}.",
    "How does {t} work?",
    "What should a beginner know about {t}?",
    "Answer briefly: what is the most important thing about {t}?",
    "Explain {t} in simple steps.",
    # stories and creative
    "Tell me a short story involving {t}.",
    "Write a poem about {t}.",
    "Write a diary entry about {t}.",
    "Write a funny story about {t}.",
    "Write a sad story about {t}.",
    "Write a fairy tale that includes {t}.",
    "Describe {t} in vivid detail.",
    "Write a song verse about {t}.",
    # dialogue and chat
    "Write a dialogue between two friends about {t}.",
    "Let's chat about {t}. What do you think of it?",
    "I have a question about {t}. Can you help me?",
    "Pretend you are a tour guide and talk about {t}.",
    "Write an interview with an expert on {t}.",
    # lists and structure
    "List pros and cons of {t}.",
    "Give me five tips about {t}.",
    "Make a checklist for dealing with {t}.",
    "Compare {t} with something similar, in a short table or list.",
    # opinions and sentiment
    "What is your opinion of {t}?",
    "Write an enthusiastic, positive review of {t}.",
    "Write a harsh, negative review of {t}.",
    "Write a complaint letter about {t}.",
    "Write a thank-you note about {t}.",
    "Why do people love {t}?",
    "Why do some people hate {t}?",
    "Argue for and against {t}.",
    # practical and formal
    "Give me advice related to {t}.",
    "Write a short formal email about {t}.",
    "Write a news report about {t}.",
    "How would you teach a class on {t}?",
    "Write a product description connected to {t}.",
    "Write a short speech about {t}.",
    # code
    "Write a short Python function that has something to do with {t}, with comments.",
    "Write a JSON object describing {t}.",
]


def corpus_prompts(seed: int = 0) -> list[str]:
    prompts = [tpl.format(t=topic) for topic, tpl in itertools.product(TOPICS, TEMPLATES)]
    random.Random(seed).shuffle(prompts)
    return prompts


def shard_path(directory: Path, index: int) -> Path:
    return Path(directory) / f"shard-{index:05d}.jsonl.gz"


def is_heldout(index: int) -> bool:
    return index % HELDOUT_EVERY == HELDOUT_EVERY - 1


def shard_indices(directory: Path) -> list[int]:
    return sorted(int(p.name[6:11]) for p in Path(directory).glob("shard-*.jsonl.gz"))


def read_shards(directory: Path, split: str = "all") -> list[dict]:
    """Rows {"id", "prompt", "text", "n_tokens"} of the complete shards; split = all | train | heldout."""
    if split not in ("all", "train", "heldout"):
        raise ValueError(f"split={split!r}: choose all, train or heldout.")
    rows = []
    for index in shard_indices(directory):
        if split == "all" or (split == "heldout") == is_heldout(index):
            rows += read_shard(directory, index)
    return rows


def read_shard(directory: Path, index: int) -> list[dict]:
    """The rows of one complete shard."""
    with gzip.open(shard_path(directory, index), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def corpus_dir(name: str = "smollm2-chat-v2") -> Path:
    """Where a user's own corpus build goes (the shipped one is `SHIPPED_DIR`)."""
    return cache_root() / "corpus" / name


def default_corpus_dir() -> Path:
    """The shipped corpus when it is there, else the user's cache."""
    return SHIPPED_DIR if shard_indices(SHIPPED_DIR) else corpus_dir()


@torch.no_grad()
def build_corpus(
    model,
    tokenizer,
    directory: Path,
    n_shards: int,
    shard_size: int = 128,
    max_new_tokens: int = 256,
    batch_size: int = 64,
    seed: int = 0,
    dtype: str | None = None,
    stop_file: Path | None = None,
    capture=None,
) -> list[dict]:
    """Generate (or resume) shards 0..n_shards-1 into `directory`; returns every complete shard's rows.

    `dtype` casts the model for sampling only (bfloat16 is ~2x faster on CPUs with AVX512-BF16); the text
    is what matters here, and it is still the model's own. Touch `stop_file` to stop after the current shard.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prompts = corpus_prompts(seed)
    if n_shards * shard_size > len(prompts):
        raise ValueError(
            f"{n_shards} shards x {shard_size} prompts > the {len(prompts)} prompts: lower n_shards or shard_size."
        )
    if dtype:
        model = model.to(getattr(torch, dtype))
    todo = [s for s in range(n_shards) if not shard_path(directory, s).exists()]
    bar = tqdm(total=n_shards, initial=n_shards - len(todo), desc="corpus shards (model-written)", unit="shard")
    for s in todo:
        if stop_file and Path(stop_file).exists():
            break
        start = time.time()
        rows = []
        ids = list(range(s * shard_size, (s + 1) * shard_size))
        for b in range(0, len(ids), batch_size):
            rows += _generate_batch(
                model, tokenizer, prompts, ids[b : b + batch_size], max_new_tokens, seed * 100_003 + ids[b], capture
            )
        if capture is not None:
            capture.write(s, rows)
        _write_shard(shard_path(directory, s), rows)
        n_tok = sum(r["n_tokens"] for r in rows)
        bar.set_postfix(tokens=n_tok, tok_s=f"{n_tok / (time.time() - start):.0f}")
        bar.update(1)
    bar.close()
    return read_shards(directory)


def _generate_batch(model, tokenizer, prompts, ids, max_new_tokens, seed, capture=None) -> list[dict]:
    torch.manual_seed(seed)
    chats = [_chat(tokenizer, prompts[i]) for i in ids]
    batch = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
    with capture.recording(model) if capture is not None else contextlib.nullcontext():
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=0.9,
            top_p=0.95,
            pad_token_id=tokenizer.pad_token_id,
        )
    if capture is not None:
        capture.take(out, ids, batch["attention_mask"])
    new = out[:, batch["input_ids"].shape[1] :]  # [batch, new]
    replies = tokenizer.batch_decode(new, skip_special_tokens=True)
    rows = []
    for i, chat, reply, toks in zip(ids, chats, replies, new):
        n_new = int((toks != tokenizer.pad_token_id).sum())
        rows.append({"id": i, "prompt": prompts[i], "text": chat + reply.strip(), "n_tokens": n_new})
    return rows


def _write_shard(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=9) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _chat(tokenizer, prompt: str) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return prompt + "\n"


def corpus_texts(rows: list[dict]) -> list[str]:
    return [row["text"] for row in sorted(rows, key=lambda r: r["id"])]


def heldout_texts(directory: Path, tokenizer, n_tokens: int | None) -> list[str]:
    """The first held-out documents (every 10th shard: no shipped SAE trained on them) that together hold
    `n_tokens` tokens (all of them when None): what SAE quality is measured on."""
    out, total = [], 0
    for text in corpus_texts(read_shards(directory, "heldout")):
        if n_tokens and total >= n_tokens:
            break
        out.append(text)
        total += len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


# -- the old single-file cache (JSONL), still read so earlier caches keep working ------------------
def corpus_path(name: str = "smollm2-chat") -> Path:
    return cache_root() / "corpus" / f"{name}.jsonl"


def read_corpus(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
