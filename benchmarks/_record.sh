#!/usr/bin/env bash
# Shared by the suites: run smp-bench with the suite's recorded arguments into
# benchmarks/results/<UTC date>-<suite>-<cpu>/ and append a line to benchmarks/results/INDEX.md.
#   record SUITE [smp-bench args ...]
# and, for the C++ probes, probe (below).
set -euo pipefail

record() {
  local suite=$1; shift
  local root; root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  local bench=${SMP_BENCH:-$root/.venv/bin/smp-bench}
  [ -x "$bench" ] || bench=smp-bench
  local cpu; cpu=$(grep -m1 "model name" /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs || uname -m)
  local slug; slug=$(echo "$cpu" | tr -cs 'A-Za-z0-9' '-' | sed 's/-$//' | cut -c1-40)
  local stamp; stamp=$(date -u +%Y%m%d-%H%M%S)
  local out=$root/benchmarks/results/$stamp-$suite-$slug
  echo "== $suite: smp-bench $* -o $out"
  (cd "$root" && "$bench" "$@" -o "$out")
  local index=$root/benchmarks/results/INDEX.md
  [ -f "$index" ] || printf '| date (UTC) | suite | CPU | cores | command | results |\n| --- | --- | --- | ---: | --- | --- |\n' > "$index"
  local row; row=$(printf '| %s | %s | %s | %s | `smp-bench %s` | [%s](%s/results.md) |' \
    "$stamp" "$suite" "$cpu" "$(nproc)" "$*" "$(basename "$out")" "$(basename "$out")")
  # After the table's last row (notes may follow the table).
  local at; at=$(grep -n '^| ' "$index" | tail -1 | cut -d: -f1)
  { head -n "$at" "$index"; printf '%s\n' "$row"; tail -n +"$((at + 1))" "$index"; } > "$index.tmp" && mv "$index.tmp" "$index"
  echo "recorded in $out and $index"
}

# A C++ probe: compile benchmarks/NAME.cc (g++ -O3 -march=native), run the caller's
# `probe_runs BIN` and write benchmarks/results/<UTC date>-<NAME, dashed>-<cpu>.md with the
# machine, the compiler and the output; append its line (LABEL) to benchmarks/results/INDEX.md.
#   probe NAME "TITLE" "LABEL"
probe() {
  local name=$1 title=$2 label=$3
  local root; root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  local stamp; stamp=$(date -u +%Y%m%d-%H%M%S)
  local cpu; cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
  local out; out=$root/benchmarks/results/$stamp-${name//_/-}-$(echo "$cpu" | awk '{print $1"-"$2}').md
  local bin; bin=$(mktemp -d)/probe
  g++ -O3 -march=native -o "$bin" "$root/benchmarks/$name.cc"
  {
    echo "# $title"
    echo
    echo "- machine: $cpu, $(nproc) cores; family $(grep -m1 "cpu family" /proc/cpuinfo | cut -d: -f2 | xargs) model $(grep -m1 "^model\s" /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_vnni|avx_vnni)$' | xargs)"
    echo "- compiler: $(g++ --version | head -1), -O3 -march=native"
    echo "- command: bash benchmarks/$name.sh (source: benchmarks/$name.cc)"
    echo
    echo '```'
    probe_runs "$bin"
    echo '```'
  } > "$out"
  echo "| $stamp | $label | $(echo "$cpu" | awk '{print $1" "$2}') | 1 | \`bash benchmarks/$name.sh\` | [$(basename "$out")]($(basename "$out")) |" >> "$root/benchmarks/results/INDEX.md"
}
