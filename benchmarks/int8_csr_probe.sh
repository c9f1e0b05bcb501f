#!/usr/bin/env bash
# Probe "int8-csr": the unstructured int8 CSR inner loop (four entries of a row, any columns, their
# X^T rows interleaved into [token][4 bytes]) against this project's fp32 CSR loop; see the
# header of benchmarks/int8_csr_probe.cc for the variants. Quantization is not timed.
#   bash benchmarks/int8_csr_probe.sh
set -euo pipefail
source "$(dirname "$0")/_record.sh"

probe_runs() {
  for shape in "1536 384" "384 1536" "384 384"; do for d in 0.10 0.03; do
    "$1" $shape $d; done; done
}

probe int8_csr_probe "int8 CSR (groups of any 4 columns) vs fp32 CSR (one 32-token tile)" "probe: int8 CSR (4-column groups) vs fp32 CSR"
