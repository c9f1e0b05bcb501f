#!/usr/bin/env bash
# Suite "sweep": latency vs sparsity of the packaged MiniLM, magnitude masks at each level,
# compact onnxruntime exports and the torch.sparse CSR peer against the dense model.
# Run on a quiet machine: bash benchmarks/bench_sweep.sh [extra smp-bench args]
set -euo pipefail
source "$(dirname "$0")/_record.sh"
record sweep --sweep 0.5,0.8,0.9,0.95,0.97 --variants compact --backend all \
  --batch 32 --seq-len 128 --runs 20 --warmup 3 --eval-samples 256 "$@"
