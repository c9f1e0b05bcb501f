"""benchmarks/bench_linear.py's compaction peer: what it counts and how the table reports it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_linear.py"


@pytest.fixture(scope="module")
def bench_linear():
    spec = importlib.util.spec_from_file_location("bench_linear_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _payload(compaction: dict) -> dict:
    summary = {"p50_ms": 2.0, "speedup": {"ratio_of_medians": 4.0}}
    record = {"size": 128, "sparsity": 0.9, "target": 5.0, "meets_target": False, "compaction": compaction,
              "variants": {"ort-dense": {"p50_ms": 8.0}, "sparse-kernel": summary}}
    env = {"cpu_model": "test cpu", "usable_cores": 2, "load_average": (0.0, 0.0, 0.0), "kernel_isa": "avx2"}
    return {"command": ["bench_linear.py"], "environment": env, "records": [record]}


def test_compaction_counts_all_zero_rows_and_columns(bench_linear):
    w = np.zeros((5, 4), dtype=np.float32)
    w[1, 2] = 1.0
    w[3, 0] = -2.0
    assert bench_linear._compaction(w) == {"zero_rows": 3, "zero_cols": 2, "rows": 5, "cols": 4}
    assert bench_linear._compaction(np.ones((3, 2), dtype=np.float32))["zero_rows"] == 0


def test_table_says_when_compaction_is_the_dense_linear(bench_linear):
    text = bench_linear.markdown(_payload({"zero_rows": 0, "zero_cols": 0, "rows": 3072, "cols": 768}), "t")
    assert "0 of 3072 rows and 0 of 768 columns of W are all zero, so the compacted linear is the dense one" in text
    partial = bench_linear.markdown(_payload({"zero_rows": 7, "zero_cols": 0, "rows": 3072, "cols": 768}), "t")
    assert "7 of 3072 rows" in partial and "is the dense one" not in partial
