"""attention_int8_pass on a tiny graph: ai.smp.Attention nodes get precision="int8", nothing else
changes; and the int8 kernel export writes its attention in int8."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime.kernels import SPARSE_DOMAIN, library_available
from smp_export.passes import attention_int8_pass
from smp_export.passes.matcher import node_attrs
from tests.kernel_helpers import session


def _model(precision: str | None = None) -> onnx.ModelProto:
    attrs = {"shape": [2, 8]} if precision is None else {"shape": [2, 8], "precision": precision}
    att = helper.make_node("Attention", ["QKV", "", "", "M"], ["C"], domain=SPARSE_DOMAIN, name="att", **attrs)
    relu = helper.make_node("Relu", ["C"], ["Y"], name="relu")
    graph = helper.make_graph([att, relu], "g", [
        helper.make_tensor_value_info("QKV", TensorProto.FLOAT, ["b", "s", 48]),
        helper.make_tensor_value_info("M", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", "s", 16])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                             ir_version=8)


@pytest.mark.parametrize("before", [None, "fp32", ""])
def test_attention_nodes_become_int8(before):
    model = _model(before)
    out = attention_int8_pass(model)
    assert node_attrs(out.graph.node[0])["precision"] == b"int8"
    assert [a.name for a in out.graph.node[0].attribute].count("precision") == 1
    assert node_attrs(out.graph.node[0])["shape"] == [2, 8] and out.graph.node[1] == model.graph.node[1]
    assert node_attrs(model.graph.node[0]).get("precision", None) == (None if before is None else before.encode())


@pytest.mark.skipif(not library_available(), reason="the ai.smp library is not built")
def test_int8_node_runs_and_differs_from_fp32_within_quantization():
    rng = np.random.default_rng(0)
    feeds = {"QKV": rng.standard_normal((2, 9, 48)).astype(np.float32), "M": np.ones((2, 9), np.int64)}
    fp32 = session(_model()).run(None, feeds)[0]
    int8 = session(attention_int8_pass(_model())).run(None, feeds)[0]
    assert not np.array_equal(int8, fp32)
    np.testing.assert_allclose(int8, fp32, atol=0.05)
