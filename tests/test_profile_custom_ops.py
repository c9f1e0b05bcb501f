"""Profiling (smp-bench --profile) and sessions find the ai.smp library of sparse-kernel exports."""

from __future__ import annotations

import numpy as np

from runtime.kernels import LIBRARY_NAME
from runtime.session import required_custom_op_libraries
from smp_bench.profile import profile_model
from smp_export.export import ExportOptions, export_onnx
from tests.helpers import tiny_checkpoint


def test_sparse_kernel_export_profiles_with_the_project_library(tmp_path):
    out = tmp_path / "sk"
    export_onnx(tiny_checkpoint(keep=0.2), out, options=ExportOptions(weights="sparse-kernel"))
    libraries = required_custom_op_libraries(out)
    assert [p.rsplit("/", 1)[-1] for p in libraries] == [LIBRARY_NAME]
    ids = np.array([[2, 5, 9, 4]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    summary = profile_model(out / "model.onnx", feeds, runs=1, custom_op_libraries=libraries)
    assert summary is not None
    # Stacked Q/K/V and attention output (SparseLinear), feed-forward (SparseFFN), Attention:
    assert {"SparseLinear", "SparseFFN", "Attention"} <= set(summary.op_ms)
    assert summary.category_ms["pruned_linears"] > 0 and summary.category_ms["attention"] > 0
    assert summary.category_ms.get("activation", 0.0) == 0.0        # GELU runs inside SparseFFN


def test_plain_export_needs_no_library(tmp_path):
    out = tmp_path / "d"
    export_onnx(tiny_checkpoint(), out, options=ExportOptions(weights="dense"))
    assert required_custom_op_libraries(out) == ()
