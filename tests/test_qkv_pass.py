"""qkv_fusion_pass on a tiny graph: three SparseLinear nodes feeding ai.smp.Attention become one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.kernels import SPARSE_DOMAIN
from smp_export.passes.qkv import qkv_fusion_pass
from tests.kernel_helpers import bsr_arrays, csr_arrays, random_weight, session

HEADS, HEAD_DIM, HIDDEN = 2, 8, 24


def _model(rng, block=(1, 1), *, bias=(True, False, True), q_attrs: dict | None = None,
           q_also_output: bool = False) -> onnx.ModelProto:
    """X -> SparseLinear q / k / v (16 x 24 each) -> Attention(Q, K, V, M) -> Y."""
    width = HEADS * HEAD_DIM
    nodes, inits = [], []
    for name, with_bias in zip("qkv", bias):
        w = random_weight(rng, width, HIDDEN, 0.3, block)
        arrays = csr_arrays(w) if block == (1, 1) else bsr_arrays(w, block)
        names = [f"enc.self.{name}.{key}" for key in ("crow_indices", "col_indices", "values")]
        inits += [numpy_helper.from_array(a, n) for a, n in zip(arrays, names)]
        if with_bias:
            names.append(f"enc.self.{name}.bias")
            inits.append(numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), names[-1]))
        attrs = {"shape": [width, HIDDEN], "block_shape": list(block), **((q_attrs or {}) if name == "q" else {})}
        nodes.append(helper.make_node("SparseLinear", ["X", *names], [name.upper()], domain=SPARSE_DOMAIN,
                                      name=f"/enc/self/{name}/SparseLinear", **attrs))
    nodes.append(helper.make_node("Attention", ["Q", "K", "V", "M"], ["Y"], domain=SPARSE_DOMAIN, name="att",
                                  shape=[HEADS, HEAD_DIM]))
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", "s", width])]
    if q_also_output:
        outputs.append(helper.make_tensor_value_info("Q", TensorProto.FLOAT, ["b", "s", width]))
    graph = helper.make_graph(nodes, "qkv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["b", "s", HIDDEN]),
                                             helper.make_tensor_value_info("M", TensorProto.INT64, ["b", "s"])],
                              outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                             ir_version=8)


def _feeds(rng):
    x = rng.standard_normal((3, 7, HIDDEN)).astype(np.float32)
    mask = np.ones((3, 7), np.int64)
    mask[1, 4:] = 0
    return {"X": x, "M": mask}


@pytest.mark.parametrize("block", [(1, 1), (2, 4)])
def test_three_projections_become_one(block):
    rng = np.random.default_rng(0)
    model = _model(rng, block)
    fused = qkv_fusion_pass(model)
    onnx.checker.check_model(fused)
    assert [n.op_type for n in model.graph.node] == ["SparseLinear"] * 3 + ["Attention"]   # input untouched
    assert [n.op_type for n in fused.graph.node] == ["SparseLinear", "Attention"]
    stacked, attention = fused.graph.node
    attrs = {a.name: list(a.ints) for a in stacked.attribute}
    assert attrs == {"shape": [48, HIDDEN], "block_shape": list(block)}
    assert list(stacked.input) == ["X"] + [f"enc.self.qkv.{k}" for k in ("crow_indices", "col_indices", "values",
                                                                         "bias")]
    assert list(attention.input) == [stacked.output[0], "", "", "M"]
    inits = {i.name: numpy_helper.to_array(i) for i in fused.graph.initializer}
    assert not any(".q." in n or ".k." in n or ".v." in n for n in inits)      # the three weights' arrays dropped
    assert inits["enc.self.qkv.bias"][16:32].tolist() == [0.0] * 16              # k had no bias
    feeds = _feeds(rng)
    np.testing.assert_array_equal(session(fused).run(None, feeds)[0], session(model).run(None, feeds)[0])


@pytest.mark.parametrize("kind", ["activation", "shared output"])
def test_projections_that_do_not_fit_are_left_alone(kind):
    rng = np.random.default_rng(1)
    model = (_model(rng, q_attrs={"activation": "gelu"}) if kind == "activation"
             else _model(rng, q_also_output=True))
    assert [n.op_type for n in qkv_fusion_pass(model).graph.node] == ["SparseLinear"] * 3 + ["Attention"]
