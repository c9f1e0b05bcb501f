"""qkv_fusion_pass on SparseLinearInt8 projections: three int8 nodes feeding ai.smp.Attention
become one with the arrays (and per-row scales) stacked; bit-equal in onnxruntime. fp32 and
int8 projections are never stacked together."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.kernels import SPARSE_DOMAIN, library_available
from smp_export.passes.qkv import qkv_fusion_pass
from smp_export.passes.sparse_linear_int8 import INT8_KEYS, int8_arrays
from tests.kernel_helpers import csr_arrays, random_weight, session

HEADS, HEAD_DIM, HIDDEN = 2, 8, 24
WIDTH = HEADS * HEAD_DIM


def _projection(rng, name: str, op: str, with_bias: bool, attrs: dict) -> tuple[onnx.NodeProto, dict]:
    w = random_weight(rng, WIDTH, HIDDEN, 0.3)
    if op == "SparseLinearInt8":
        arrays = int8_arrays(w)
    else:
        arrays = dict(zip(("crow_indices", "col_indices", "values"), csr_arrays(w)))
        attrs = {"block_shape": [1, 1], **attrs}
    if with_bias:
        arrays["bias"] = rng.standard_normal(WIDTH).astype(np.float32)
    arrays = {f"enc.self.{name}.{key}": a for key, a in arrays.items()}
    node = helper.make_node(op, ["X", *arrays], [name.upper()], domain=SPARSE_DOMAIN,
                            name=f"/enc/self/{name}/{op}", shape=[WIDTH, HIDDEN], **attrs)
    return node, arrays


def _model(seed: int, *, ops=("SparseLinearInt8",) * 3, bias=(True, False, True), q_attrs: dict | None = None,
           q_also_output: bool = False) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """X -> q / k / v (16 x 24 each) -> Attention(Q, K, V, M) -> Y, and every array by name."""
    rng = np.random.default_rng(seed)
    nodes, arrays = [], {}
    for name, op, with_bias in zip("qkv", ops, bias):
        node, named = _projection(rng, name, op, with_bias, (q_attrs or {}) if name == "q" else {})
        nodes.append(node)
        arrays.update(named)
    nodes.append(helper.make_node("Attention", ["Q", "K", "V", "M"], ["Y"], domain=SPARSE_DOMAIN, name="att",
                                  shape=[HEADS, HEAD_DIM]))
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", "s", WIDTH])]
    if q_also_output:
        outputs.append(helper.make_tensor_value_info("Q", TensorProto.FLOAT, ["b", "s", WIDTH]))
    graph = helper.make_graph(nodes, "qkv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["b", "s", HIDDEN]),
                                             helper.make_tensor_value_info("M", TensorProto.INT64, ["b", "s"])],
                              outputs, initializer=[numpy_helper.from_array(a, n) for n, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                              ir_version=8)
    return model, arrays


def _want(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stacked arrays by numpy: row pointers shifted, the rest concatenated, k's bias zeros."""
    part = {key: [arrays[f"enc.self.{p}.{key}"] for p in "qkv"] for key in INT8_KEYS}
    nnz = np.cumsum([0] + [int(c[-1]) for c in part["crow_indices"]])
    crow = np.concatenate([part["crow_indices"][0]] + [c[1:] + int(nnz[i]) for i, c in enumerate(part["crow_indices"])
                                                       if i > 0])
    want = {key: np.concatenate(part[key]) for key in INT8_KEYS[1:]}
    want["crow_indices"] = crow
    want["bias"] = np.concatenate([arrays["enc.self.q.bias"], np.zeros(WIDTH, np.float32), arrays["enc.self.v.bias"]])
    return want


def test_three_int8_projections_become_one():
    model, arrays = _model(0)
    fused = qkv_fusion_pass(model)
    onnx.checker.check_model(fused)
    assert [n.op_type for n in model.graph.node] == ["SparseLinearInt8"] * 3 + ["Attention"]   # input untouched
    assert [n.op_type for n in fused.graph.node] == ["SparseLinearInt8", "Attention"]
    stacked, attention = fused.graph.node
    assert stacked.domain == SPARSE_DOMAIN and stacked.name == "/enc/self/qkv/SparseLinearInt8"
    assert {a.name: list(a.ints) for a in stacked.attribute} == {"shape": [3 * WIDTH, HIDDEN]}
    keys = (*INT8_KEYS, "bias")
    assert list(stacked.input) == ["X"] + [f"enc.self.qkv.{k}" for k in keys]
    assert list(attention.input) == [stacked.output[0], "", "", "M"]
    inits = {i.name: numpy_helper.to_array(i) for i in fused.graph.initializer}
    assert sorted(inits) == sorted(f"enc.self.qkv.{k}" for k in keys)          # the three weights' arrays dropped
    for key, want in _want(arrays).items():
        got = inits[f"enc.self.qkv.{key}"]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
    assert inits["enc.self.qkv.crow_indices"].dtype == np.int32 and inits["enc.self.qkv.values_int8"].dtype == np.int8
    assert inits["enc.self.qkv.scale"].shape == (3 * WIDTH,)


@pytest.mark.parametrize("kind", ["activation", "shared output", "mixed fp32 and int8", "residual"])
def test_int8_projections_that_do_not_fit_are_left_alone(kind):
    if kind == "activation":
        model, _ = _model(1, q_attrs={"activation": "gelu"})
    elif kind == "shared output":
        model, _ = _model(1, q_also_output=True)
    elif kind == "mixed fp32 and int8":
        model, _ = _model(1, ops=("SparseLinear", "SparseLinearInt8", "SparseLinearInt8"))
    else:
        model, _ = _model(1, bias=(True, True, True))
        model.graph.node[1].input.append("X")                  # k with a residual (input 6)
    assert [n.op_type for n in qkv_fusion_pass(model).graph.node] == [n.op_type for n in model.graph.node]


@pytest.mark.skipif(not library_available(), reason="the ai.smp library is not built")
def test_stacked_int8_projections_are_bit_equal():
    model, _ = _model(2)
    fused = qkv_fusion_pass(model)
    rng = np.random.default_rng(3)
    for batch, seq in ((1, 1), (3, 7), (2, 33)):
        mask = np.ones((batch, seq), np.int64)
        mask[-1, seq // 2 + 1:] = 0
        feeds = {"X": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32), "M": mask}
        for threads in (1, 2):
            np.testing.assert_array_equal(session(fused, threads).run(None, feeds)[0],
                                          session(model, threads).run(None, feeds)[0])
