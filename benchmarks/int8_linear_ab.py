"""Suite "int8-linear": one pruned linear, fp32 CSR kernel (AVX2, AVX-512) against the int8 CSR
kernel on each instruction path the CPU has, interleaved in one process.

MiniLM's linear shapes (rows x cols of W: 1536x384 FFN in, 384x1536 FFN out, 384x384 attention),
a random mask at 90% and 97% sparsity, X of 4096 tokens (batch 32 x 128) and 128 tokens (batch 1).
The int8 time includes quantizing X per token; fp32 and int8 both write fp32 Y with the bias.
Each round runs every variant once (order rotated); the ratio is of medians against fp32 AVX2.

    python benchmarks/int8_linear_ab.py [--rounds 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.kernels import resolved_isa, sparse_linear  # noqa: E402
from runtime.kernels_int8 import INT8_PATHS, int8_linear, int8_path, quantize_csr_rows  # noqa: E402
from smp_bench.stats import cpu_isa, cpu_model, environment, machine_slug  # noqa: E402

SHAPES = [(1536, 384), (384, 1536), (384, 384)]


def _csr(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(dense)
    crow = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=dense.shape[0]))]).astype(np.int64)
    return crow, cols.astype(np.int64), dense[rows, cols].astype(np.float32)


def _variants(shape: tuple[int, int], sparsity: float, threads: int, rng: np.random.Generator) -> dict:
    rows, cols = shape
    dense = rng.standard_normal(shape).astype(np.float32) * (rng.random(shape) >= sparsity)
    crow, col, values = _csr(dense)
    q, scale = quantize_csr_rows(crow, values)
    bias = rng.standard_normal(rows).astype(np.float32)
    out = {"fp32-avx2": lambda x: sparse_linear(x, crow, col, values, bias, shape, threads=threads, isa="avx2")}
    if resolved_isa("avx512") == "avx512":
        out["fp32-avx512"] = lambda x: sparse_linear(x, crow, col, values, bias, shape, threads=threads, isa="avx512")
    def int8(path: str):
        return lambda x: int8_linear(x, crow, col, q, scale, bias, shape, threads=threads, path=path)

    for path in INT8_PATHS:
        if path not in ("auto", "portable") and int8_path(path) == path:
            out[f"int8-{path}"] = int8(path)
    return out


def measure(variants: dict, x: np.ndarray, rounds: int) -> dict[str, float]:
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:  # warm-up
        variants[n](x)
    for i in range(rounds):
        for n in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            variants[n](x)
            times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(v) * 1e3 for n, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    records = []
    for shape in SHAPES:
        for sparsity in (0.9, 0.97):
            variants = _variants(shape, sparsity, args.threads, rng)
            for tokens in (4096, 128):
                x = rng.standard_normal((tokens, shape[1])).astype(np.float32)
                med = measure(variants, x, args.rounds if tokens > 128 else args.rounds * 4)
                base = med["fp32-avx2"]
                records.append({"shape": list(shape), "sparsity": sparsity, "tokens": tokens, "median_ms": med,
                                "speedup_vs_fp32_avx2": {n: base / t for n, t in med.items()}})
                line = "  ".join(f"{n} {t:.3f} ms ({base / t:.2f}x)" for n, t in med.items())
                print(f"{shape[0]:5d}x{shape[1]:<5d} sparsity {sparsity:.2f} tokens {tokens:5d}: {line}", flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = ROOT / "benchmarks" / "results" / f"{stamp}-int8-linear-{machine_slug(cpu_model())}"
    meta = {"command": "python benchmarks/int8_linear_ab.py " + " ".join(sys.argv[1:]), "cpu": cpu_model(),
            "cpu_isa": cpu_isa(), "threads": args.threads, "rounds": args.rounds, "environment": environment()}
    out.with_suffix(".json").write_text(json.dumps({**meta, "records": records}, indent=2) + "\n")
    lines = ["# int8 CSR kernel vs fp32 CSR kernel (one linear)", "", f"- CPU: {meta['cpu']} [{meta['cpu_isa']}]",
             f"- threads {args.threads}, {args.rounds} rounds (x4 at 128 tokens), medians, order rotated",
             f"- command: `{meta['command']}`", "", "| W | sparsity | tokens | " +
             " | ".join(records[0]["median_ms"]) + " |", "|---|---:|---:|" + "---:|" * len(records[0]["median_ms"])]
    for r in records:
        cells = " | ".join(f"{t:.3f} ms ({r['speedup_vs_fp32_avx2'][n]:.2f}x)" for n, t in r["median_ms"].items())
        lines.append(f"| {r['shape'][0]}x{r['shape'][1]} | {r['sparsity']:.2f} | {r['tokens']} | {cells} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
