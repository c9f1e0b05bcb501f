"""sparse_linear_int8_pass on a tiny graph, and the sparse-kernel int8 export it serves."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from runtime.manifest import Manifest
from smp_export.errors import ExportError
from smp_export.export import ExportOptions, export_onnx
from smp_export.passes import sparse_linear_int8_pass
from tests.helpers import tiny_checkpoint
from tests.kernel_helpers import random_weight, session
from tests.test_kernel_passes import _linear_model


def test_pass_on_a_tiny_linear():
    rng = np.random.default_rng(0)
    w = random_weight(rng, 24, 16, 0.3)
    b = rng.standard_normal(24).astype(np.float32)
    before = _linear_model(w, b)
    after = sparse_linear_int8_pass(before, ["lin.weight"])
    onnx.checker.check_model(after)
    assert [n.op_type for n in before.graph.node] == ["MatMul", "Add", "Relu"]   # input untouched
    assert [n.op_type for n in after.graph.node] == ["SparseLinearInt8", "Relu"]
    inits = {i.name: numpy_helper.to_array(i) for i in after.graph.initializer}
    assert "lin.weight_t" not in inits and inits["lin.values_int8"].dtype == np.int8
    assert inits["lin.crow_indices"].dtype == np.int64 and inits["lin.scale"].shape == (24,)
    # Dequantized weights are the pruned ones within half a step per row.
    crow, col = inits["lin.crow_indices"], inits["lin.col_indices"]
    deq = np.zeros_like(w)
    for r in range(24):
        deq[r, col[crow[r]:crow[r + 1]]] = inits["lin.values_int8"][crow[r]:crow[r + 1]] * inits["lin.scale"][r]
    assert ((deq != 0) <= (w != 0)).all()   # a weight under half a step may round to 0
    assert (np.abs(deq - w) <= inits["lin.scale"][:, None] / 2 + 1e-7).all()
    x = rng.standard_normal((5, 16)).astype(np.float32)
    y = session(after).run(None, {"X": x})[0]
    want = np.maximum(x @ w.T + b, 0)
    assert np.abs(y - want).max() < 0.05 * np.abs(want).max()


def test_pass_names_what_it_cannot_find():
    rng = np.random.default_rng(1)
    model = _linear_model(random_weight(rng, 8, 8, 0.5), np.zeros(8, np.float32))
    with pytest.raises(ExportError, match="other.weight_t") as info:
        sparse_linear_int8_pass(model, ["other.weight"])
    assert info.value.field == "other"


def test_sparse_kernel_int8_export_validates_and_records_the_quantization(tmp_path):
    ckpt = tiny_checkpoint()
    manifest = export_onnx(ckpt, tmp_path / "q", options=ExportOptions(weights="sparse-kernel", precision="int8"))
    model = onnx.load(str(tmp_path / "q" / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("SparseLinearInt8") == len(ckpt.masks) and "SparseLinear" not in ops
    assert manifest.validation.passed and manifest.validation.cosine_min >= 0.99
    record = Manifest.read(tmp_path / "q")
    assert record.precision == "int8"
    assert record.export_options["quantization"]["method"] == "ai.smp.SparseLinearInt8"
    assert all(layer.bytes > 0 and layer.format == "csr" for layer in record.layers)
