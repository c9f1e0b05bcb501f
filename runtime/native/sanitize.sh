#!/usr/bin/env bash
# Build libsmp_sparse.so with AddressSanitizer + UBSan and run the kernel tests against it.
#   bash runtime/native/sanitize.sh            (from the repository root, after `make setup`)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${SMP_SANITIZE_BUILD:-/tmp/smp-sparse-asan}
cmake -S "$root/runtime/native" -B "$build" -DSMP_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug > /dev/null
cmake --build "$build" > /dev/null
cd "$root"
SMP_SPARSE_LIBRARY="$build/libsmp_sparse.so" \
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_kernel.py tests/test_kernel_ort.py \
  tests/test_kernel_validation.py tests/test_kernel_abi.py tests/test_attention_kernel.py tests/test_ffn_kernel.py \
  tests/test_qkv_pass.py tests/test_kernel_hostile.py tests/test_kernel_int8.py tests/test_kernel_int8_op.py tests/test_kernel_int8_fused.py tests/test_attention_int8.py \
  tests/test_int8_fusion_passes.py tests/test_int8_qkv_pass.py tests/test_attention_int8_pass.py \
  -k "not older_than_its_sources" "$@"
