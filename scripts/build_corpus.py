"""Build (or resume) the shipped model-written corpus: saebasis/assets/corpus/shard-*.jsonl.gz.

    .venv/bin/python scripts/build_corpus.py --n-shards 51     # ~2 min per shard on 2 CPU cores

Resumable: complete shards are kept, the first missing one is generated next; `touch <dir>/STOP` stops
cleanly after the current shard. Every 10th shard (index 9, 19, ...) is held out from SAE training.
"""

import argparse
import time
from pathlib import Path

from saebasis.corpus import SHIPPED_DIR, build_corpus, read_shards
from saebasis.models import load_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--n-shards", type=int, default=51)
parser.add_argument("--shard-size", type=int, default=128)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--max-new-tokens", type=int, default=192)
parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
parser.add_argument("--model", default="smollm2")
args = parser.parse_args()

start = time.time()
lm = load_model(args.model)
build_corpus(lm.model, lm.tokenizer, args.out, args.n_shards, args.shard_size, args.max_new_tokens, args.batch_size,
             stop_file=args.out / "STOP")
for split in ("train", "heldout"):
    rows = read_shards(args.out, split)
    print(f"{split}: {len(rows)} documents, {sum(r['n_tokens'] for r in rows):,} model-written tokens")
print(f"took {time.time() - start:.0f} s")
