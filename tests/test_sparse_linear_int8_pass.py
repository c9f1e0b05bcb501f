"""sparse_linear_int8_pass on a tiny graph, and the sparse-kernel int8 export it serves."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from runtime.kernels import library_available
from runtime.manifest import Manifest
from smp_export.errors import ExportError
from smp_export.export import ExportOptions, export_onnx
from smp_export.passes import sparse_linear_int8_pass
from tests.helpers import tiny_checkpoint
from tests.kernel_helpers import random_weight, session
from tests.test_kernel_passes import _linear_model

needs_library = pytest.mark.skipif(not library_available(), reason="the ai.smp library is not built")


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
    assert inits["lin.crow_indices"].dtype == np.int32 and inits["lin.scale"].shape == (24,)
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


def _int8_export(ckpt, out, **options) -> Manifest:
    return export_onnx(ckpt, out, options=ExportOptions(weights="sparse-kernel", precision="int8", **options))


def test_sparse_kernel_int8_export_runs_the_fp32_fusions(tmp_path):
    """Per layer: Q/K/V stacked, the attention output with residual + LayerNorm, the feed-forward
    pair as one SparseFFNInt8 (GELU, residual and LayerNorm inside); no fp32 kernel anywhere.
    (Unvalidated: the graph's structure needs no native library.)"""
    ckpt = tiny_checkpoint()
    layers = ckpt.config.num_hidden_layers
    _int8_export(ckpt, tmp_path / "q", validate=False)
    model = onnx.load(str(tmp_path / "q" / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "SparseLinear" not in ops and "SparseFFN" not in ops
    linears = [n for n in model.graph.node if n.op_type == "SparseLinearInt8"]
    ffns = [n for n in model.graph.node if n.op_type == "SparseFFNInt8"]
    assert len(linears) == 2 * layers and len(ffns) == layers
    assert sum(n.input[1].endswith(".qkv.crow_indices") and len(n.input) == 6 for n in linears) == layers
    assert sum(len(n.input) == 10 for n in linears) == layers                     # attention output: residual + LN
    assert all(len(n.input) == 15 and n.input[11] == n.input[0] for n in ffns)   # residual X, post-LayerNorm
    assert all(helper.get_attribute_value(a) == b"gelu" for n in ffns for a in n.attribute if a.name == "activation")
    assert ops.count("LayerNormalization") == 1 and "Erf" not in ops             # the embeddings' only
    attention = [n for n in model.graph.node if n.op_type == "Attention"]
    assert len(attention) == layers
    assert all({a.name: helper.get_attribute_value(a) for a in n.attribute}.get("precision") == b"int8"
               for n in attention)


@needs_library
def test_sparse_kernel_int8_export_validates_and_records_the_quantization(tmp_path):
    ckpt = tiny_checkpoint()
    manifest = _int8_export(ckpt, tmp_path / "q")
    model = onnx.load(str(tmp_path / "q" / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "SparseFFNInt8" in ops and "SparseLinear" not in ops
    assert manifest.validation.passed and manifest.validation.cosine_min >= 0.99
    record = Manifest.read(tmp_path / "q")
    assert record.precision == "int8"
    assert record.export_options["quantization"]["method"] == "ai.smp.SparseLinearInt8"
    assert "int8" in record.export_options["quantization"]["attention"]
    assert all(layer.bytes > 0 and layer.format == "csr" for layer in record.layers)
