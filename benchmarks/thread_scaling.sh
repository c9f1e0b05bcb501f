#!/usr/bin/env bash
# How the ai.smp kernel and the whole sparse-kernel model scale with threads, on a machine with
# more cores than the 2-core development box (e.g. the 16-core host of the lent GPU machine).
#
#   OUT=/tmp/scaling bash benchmarks/thread_scaling.sh     # results under $OUT (default build/scaling)
#
# Expects Python with torch, transformers, onnx, onnxruntime and CMake; nothing is downloaded.
# 1. builds libsmp_sparse.so with CMake unless SMP_SPARSE_LIBRARY is set;
# 2. one linear (X [tokens, 768] @ W^T [768, 3072], SCALING_SPARSITY sparse, default "0.9 0.97")
#    at each thread count of SCALING_THREADS (default "16 4 2 1"): benchmarks/bench_linear.py --no-peers;
# 3. smp-bench --profile of a MiniLM-shaped random model at 90% magnitude sparsity, ort-dense vs
#    sparse-kernel, batch 32 x 128, at the largest and the smallest of SCALING_THREADS.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
RESULTS=${OUT:-$ROOT/build/scaling}
THREADS=${SCALING_THREADS:-16 4 2 1}
SPARSITY=${SCALING_SPARSITY:-0.9 0.97}
mkdir -p "$RESULTS"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -z "${SMP_SPARSE_LIBRARY:-}" ]; then
  cmake -S runtime/native -B build/native-check -DCMAKE_BUILD_TYPE=Release >"$RESULTS/native-build.log" 2>&1 \
    && cmake --build build/native-check -j >>"$RESULTS/native-build.log" 2>&1 \
    || { echo "error: building the kernel library failed ($RESULTS/native-build.log)"; exit 3; }
  export SMP_SPARSE_LIBRARY=$ROOT/build/native-check/libsmp_sparse.so
fi
nproc; lscpu 2>/dev/null | grep -E "Model name|^CPU\(s\)|Thread|L1d|L2|L3"
echo "vector extensions: $(grep -o -w -E 'avx2|fma|avx512[a-z_]*|amx[a-z_]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
for t in $THREADS; do
  echo "== one linear, $t threads"
  "$PY" benchmarks/bench_linear.py --suite linear --sparsity $SPARSITY --threads "$t" --no-peers --out-dir "$RESULTS" \
    2>&1 | grep -v Warning
done
set -- $THREADS
"$PY" - "$RESULTS" "$1" "${!#}" <<'PYEOF'
import sys
from pathlib import Path
import torch
from transformers import BertConfig, BertModel
from smp_bench import BenchConfig, run_benchmark
results, threads = Path(sys.argv[1]), sorted({int(sys.argv[2]), int(sys.argv[3])}, reverse=True)
model = Path("build/scaling-minilm-shape")
if not (model / "model.safetensors").is_file():
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
              add_pooling_layer=False).save_pretrained(model, safe_serialization=True)
for t in threads:
    config = BenchConfig.from_flat(
        output_dir=results / f"model-{t}threads", batch=32, seq_len=128, runs=10, warmup=3, threads=t,
        sparsity=0.9, variants=("sparse-kernel",), model_dir=model, data="none", eval_samples=0, memory=False,
        profile=True, torch_eager=False, progress=False,
        command=f"benchmarks/thread_scaling.sh ({t} threads)")
    result = run_benchmark(config, echo=print)
    print(result.table)
PYEOF
echo "== done; results in $RESULTS"
