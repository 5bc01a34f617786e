#!/usr/bin/env bash
# Optional peer methods, each through its own library, in saebasis' own venv (.venv, made by scripts/setup.sh):
#   intervention=lora  -> peft (the `peers` extra)
#   intervention=caa   -> steering-vectors 0.12.2, installed with --no-deps: it declares transformers<5 (pip would
#                         swap saebasis' transformers 5 for 4.57), but its code imports only PreTrainedTokenizerBase
#                         from transformers and runs on 5.x (tests/interventions/test_peers.py checks it on the tiny model).
#   saebasis export format=repeng -> repeng 0.4.0, installed with --no-deps (checked by tests/export/): it declares
#                         numpy<2 and transformers>=4.36; saebasis runs numpy 2, where importing repeng 0.4.0 needs the
#                         removed alias numpy.float_ (saebasis.export.repeng.require_repeng restores it as float64).
# torch / transformers are held at what .venv has, so nothing here can replace them.
#   bash scripts/setup_peers.sh
# intervention=loreft trains through pyreft, which pins transformers==4.45.1: its own venv, bash scripts/setup_pyreft.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=.venv/bin/pip
[ -x "$PIP" ] || { echo "no .venv: run bash scripts/setup.sh first" >&2; exit 1; }
held=$(mktemp)
.venv/bin/python -c "import torch, transformers; print(f'torch=={torch.__version__}'); print(f'transformers=={transformers.__version__}')" > "$held"
"$PIP" install -q -e '.[peers]' -c "$held"
"$PIP" install -q --no-deps 'steering-vectors==0.12.2' 'repeng==0.4.0'
rm -f "$held"
.venv/bin/python -c "import peft, steering_vectors, transformers; print('peft', peft.__version__, '| steering-vectors', steering_vectors.__version__ if hasattr(steering_vectors, '__version__') else '0.12.2', '| transformers', transformers.__version__)"
