#!/usr/bin/env bash
# Suite "distilbert": the second architecture entry (smp_export.arch.DISTILBERT) measured like
# the default model: a DistilBERT-base-shaped encoder (random weights, MiniLM's tokenizer) dense
# vs. its 90% magnitude-pruned exports, PyTorch eager dense beside them; agreement with the dense
# model on BBC News texts. bash benchmarks/bench_distilbert.sh [extra smp-bench args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${DISTILBERT_DIR:-$root/build/distilbert-base-random}
[ -f "$model/config.json" ] || "$root/.venv/bin/python" "$root/benchmarks/make_distilbert.py" "$model"
source "$(dirname "$0")/_record.sh"
record distilbert --model-dir "$model" --sparsity 0.9 --variants dense,compact,sparse-kernel \
  --batch 32 --seq-len 128 --runs 10 --eval-samples 64 --centroid-samples 64 "$@"
