#!/usr/bin/env bash
# Probe "int8-block": can a u8 x s8 kernel beat this project's fp32 CSR inner loop on AVX2 (no
# VNNI)? One sparse linear on one 32-token tile held transposed in cache, best of 300 passes:
# fp32 CSR (broadcast + 4 FMAs per nonzero, as in runtime/native/src/kernel_avx2.cc) against
# 1x4 blocks of s8 weights on 7-bit activations (vpmaddubsw + vpmaddwd + vpaddd per 8 tokens),
# for unstructured masks (blocks padded with zeros) and for masks made of whole 1x4 blocks;
# and the same blocks through AVX-VNNI (vpdpbusd) where the CPU has it; and the fp32 CSR loop on
# AVX-512 (zmm) where the CPU has it.
# Quantizing X and dequantizing Y are not timed: this bounds what the inner loop can give.
#   bash benchmarks/int8_block_probe.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
stamp=$(date -u +%Y%m%d-%H%M%S)
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
out=$root/benchmarks/results/$stamp-int8-block-probe-$(echo "$cpu" | awk '{print $1"-"$2}').md
bin=$(mktemp -d)/probe
g++ -O3 -march=native -o "$bin" "$root/benchmarks/int8_block_probe.cc"
{
  echo "# int8 1x4-block probe vs fp32 CSR (one 32-token tile)"
  echo
  echo "- machine: $cpu, $(nproc) cores; family $(grep -m1 "cpu family" /proc/cpuinfo | cut -d: -f2 | xargs) model $(grep -m1 "^model\s" /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_vnni|avx_vnni)$' | xargs)"
  echo "- compiler: $(g++ --version | head -1), -O3 -march=native"
  echo "- command: bash benchmarks/int8_block_probe.sh (source: benchmarks/int8_block_probe.cc)"
  echo
  echo '```'
  for shape in "1536 384" "384 1536"; do for d in 0.10 0.03; do for kind in u b; do
    "$bin" $shape $d $kind; done; done; done
  echo '```'
} > "$out"
echo "| $stamp | probe: int8 1x4 blocks vs fp32 CSR | $(echo "$cpu" | awk '{print $1" "$2}') | 1 | \`bash benchmarks/int8_block_probe.sh\` | [$(basename "$out")]($(basename "$out")) |" >> "$root/benchmarks/results/INDEX.md"
cat "$out"
