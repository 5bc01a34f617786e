"""Build (or resume) the shipped model-written corpus: saebasis/assets/corpus/shard-*.jsonl.gz.

    .venv/bin/python scripts/build_corpus.py --n-shards 51     # ~2 min per shard on 2 CPU cores

Resumable: complete shards are kept, the first missing one is generated next; `touch <dir>/STOP` stops
cleanly after the current shard. Every 10th shard (index 9, 19, ...) is held out from SAE training.
While it writes, the residuals at --cache-layers of every training document are captured for SAE training
(saebasis/corpus/acts.py; ~70 MB per shard under ~/.cache/saebasis/acts, never committed), so
`saebasis train-sae` needs no second forward pass over this text. `--cache-layers` with no value turns it off.
"""

import argparse
import time
from pathlib import Path

from saebasis.core.models import load_model
from saebasis.corpus.acts import GenerationCapture, default_dir
from saebasis.corpus.build import SHIPPED_DIR, build_corpus, read_shards

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--n-shards", type=int, default=51)
parser.add_argument("--shard-size", type=int, default=128)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--max-new-tokens", type=int, default=192)
parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
parser.add_argument("--model", default="smollm2")
parser.add_argument("--cache-layers", type=int, nargs="*", default=[6, 12, 18])
parser.add_argument(
    "--acts-dir", type=Path, default=None, help="default: ~/.cache/saebasis/acts/<model>/<corpus folder>"
)
args = parser.parse_args()

start = time.time()
lm = load_model(args.model)
capture = None
if args.cache_layers:
    capture = GenerationCapture(lm.tokenizer, args.cache_layers, args.acts_dir or default_dir(args.out, args.model))
build_corpus(
    lm.model,
    lm.tokenizer,
    args.out,
    args.n_shards,
    args.shard_size,
    args.max_new_tokens,
    args.batch_size,
    stop_file=args.out / "STOP",
    capture=capture,
)
for split in ("train", "heldout"):
    rows = read_shards(args.out, split)
    print(f"{split}: {len(rows)} documents, {sum(r['n_tokens'] for r in rows):,} model-written tokens")
print(f"took {time.time() - start:.0f} s")
