#!/usr/bin/env bash
# Suite "exports": any smp-export directories (e.g. SMP checkpoints fine-tuned on MNLI) on a
# user eval file, e.g. GLUE's dev_matched.tsv (sentence pairs, labels detected):
#   bash benchmarks/bench_exports.sh EXPORT_DIR... --data path/to/dev_matched.tsv
set -euo pipefail
source "$(dirname "$0")/_record.sh"
[ $# -ge 1 ] || { echo "usage: $0 EXPORT_DIR... [--data FILE] [smp-bench args]" >&2; exit 2; }
record exports --batch 32 --seq-len 128 --runs 20 --warmup 3 --backend all "$@"
