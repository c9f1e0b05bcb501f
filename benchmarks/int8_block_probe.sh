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
source "$(dirname "$0")/_record.sh"

probe_runs() {
  for shape in "1536 384" "384 1536"; do for d in 0.10 0.03; do for kind in u b; do
    "$1" $shape $d $kind; done; done; done
}

probe int8_block_probe "int8 1x4-block probe vs fp32 CSR (one 32-token tile)" "probe: int8 1x4 blocks vs fp32 CSR"
