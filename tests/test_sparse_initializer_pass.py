"""Graph passes, each on a tiny graph built with onnx.helper (and on the tiny BERT graph)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from smp_export.checkpoint import linear_weight_names
from smp_export.errors import ExportError
from smp_export.graph import build_onnx_model, linear_initializer_name
from smp_export.passes import sparse_initializer_pass
from smp_export.reference import build_reference_model
from smp_export.validate import validate_export
from tests.helpers import tiny_checkpoint


def _sparse_weight(shape, density, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) >= density] = 0.0
    return w


def _matmul_model(w: np.ndarray) -> onnx.ModelProto:
    """Y = X @ W + b."""
    b = np.arange(w.shape[1], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["XW"], name="/MatMul"),
         helper.make_node("Add", ["XW", "b"], ["Y"], name="/Add")],
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", w.shape[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", w.shape[1]])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def test_sparse_initializer_pass_on_tiny_matmul(tmp_path):
    w = _sparse_weight((64, 48), density=0.1)
    before = _matmul_model(w)
    after = sparse_initializer_pass(before, ["W"])
    onnx.checker.check_model(after)     # (full_check: onnx shape inference ignores sparse initializers)
    # The input model is untouched; only W moved, b stays dense.
    assert [i.name for i in before.graph.initializer] == ["W", "b"]
    assert [i.name for i in after.graph.initializer] == ["b"]
    (sparse,) = after.graph.sparse_initializer
    assert sparse.values.name == "W" and list(sparse.dims) == [64, 48]
    assert sparse.indices.data_type == TensorProto.INT64 and len(sparse.indices.dims) == 1
    np.testing.assert_array_equal(numpy_helper.to_array(sparse.indices), np.flatnonzero(w))
    np.testing.assert_array_equal(numpy_helper.to_array(sparse.values), w[w != 0])
    # onnxruntime loads it and computes the same thing.
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_array_equal(_run(after, {"X": x}), _run(before, {"X": x}))
    onnx.save(before, str(tmp_path / "before.onnx"))
    onnx.save(after, str(tmp_path / "after.onnx"))
    assert (tmp_path / "after.onnx").stat().st_size < 0.5 * (tmp_path / "before.onnx").stat().st_size


def test_sparse_initializer_all_zero_weight_loads():
    w = np.zeros((8, 4), dtype=np.float32)
    after = sparse_initializer_pass(_matmul_model(w), ["W"])
    onnx.checker.check_model(after)
    y = _run(after, {"X": np.ones((2, 8), dtype=np.float32)})
    np.testing.assert_array_equal(y, np.tile(np.arange(4, dtype=np.float32), (2, 1)))


def test_sparse_initializer_missing_name_is_an_error():
    with pytest.raises(ExportError, match="'nope'"):
        sparse_initializer_pass(_matmul_model(np.eye(4, dtype=np.float32)), ["W", "nope"])


def test_sparse_initializer_pass_on_tiny_bert(tmp_path):
    ckpt = tiny_checkpoint(head="sequence-classification", keep=0.1)
    dense = build_onnx_model(ckpt.config, ckpt.masked_weights(), ckpt.head)
    names = [linear_initializer_name(n) for n in linear_weight_names(ckpt.config.num_hidden_layers)]
    sparse = sparse_initializer_pass(dense, names)
    assert sorted(s.values.name for s in sparse.graph.sparse_initializer) == sorted(names)
    dense_path, sparse_path = tmp_path / "dense.onnx", tmp_path / "sparse.onnx"
    onnx.save(dense, str(dense_path))
    onnx.save(sparse, str(sparse_path))
    onnx.checker.check_model(str(sparse_path))
    assert sparse_path.stat().st_size < 0.75 * dense_path.stat().st_size
    record = validate_export(sparse_path, build_reference_model(ckpt), vocab_size=ckpt.config.vocab_size,
                             type_vocab_size=ckpt.config.type_vocab_size, output_name="logits")
    assert record.passed and record.max_abs_diff < 1e-5
