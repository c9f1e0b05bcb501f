#!/usr/bin/env bash
# Suite "default": the packaged MiniLM dense vs. its 90%-magnitude-pruned exports (every export
# variant), PyTorch eager dense and the torch.sparse CSR peer; accuracy on BBC News; ORT profile.
# Run on a quiet machine: bash benchmarks/bench_default.sh [extra smp-bench args]
set -euo pipefail
source "$(dirname "$0")/_record.sh"
record default --batch 32 --seq-len 128 --runs 30 --warmup 5 --backend all --profile "$@"
