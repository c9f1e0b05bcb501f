#!/usr/bin/env bash
# Probe "int8-csr": the unstructured int8 CSR inner loop (four entries of a row, any columns, their
# X^T rows interleaved into [token][4 bytes]) against this project's fp32 CSR loop; see the
# header of benchmarks/int8_csr_probe.cc for the variants. Quantization is not timed.
#   bash benchmarks/int8_csr_probe.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
stamp=$(date -u +%Y%m%d-%H%M%S)
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
out=$root/benchmarks/results/$stamp-int8-csr-probe-$(echo "$cpu" | awk '{print $1"-"$2}').md
bin=$(mktemp -d)/probe
g++ -O3 -march=native -o "$bin" "$root/benchmarks/int8_csr_probe.cc"
{
  echo "# int8 CSR (groups of any 4 columns) vs fp32 CSR (one 32-token tile)"
  echo
  echo "- machine: $cpu, $(nproc) cores; family $(grep -m1 "cpu family" /proc/cpuinfo | cut -d: -f2 | xargs) model $(grep -m1 "^model\s" /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_vnni|avx_vnni)$' | xargs)"
  echo "- compiler: $(g++ --version | head -1), -O3 -march=native"
  echo "- command: bash benchmarks/int8_csr_probe.sh (source: benchmarks/int8_csr_probe.cc)"
  echo
  echo '```'
  for shape in "1536 384" "384 1536" "384 384"; do for d in 0.10 0.03; do
    "$bin" $shape $d; done; done
  echo '```'
} > "$out"
echo "| $stamp | probe: int8 CSR (4-column groups) vs fp32 CSR | $(echo "$cpu" | awk '{print $1" "$2}') | 1 | \`bash benchmarks/int8_csr_probe.sh\` | [$(basename "$out")]($(basename "$out")) |" >> "$root/benchmarks/results/INDEX.md"
cat "$out"
