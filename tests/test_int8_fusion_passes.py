"""The kernel fusions (``passes.KERNEL_FUSIONS``) on SparseLinearInt8 graphs: each pass folds the
same patterns as in fp32 at the int8 input positions (residual 6, LayerNorm 7-9), a feed-forward
pair becomes SparseFFNInt8, and an fp32 node is never joined with an int8 one. The structure
tests need no native library; the numeric ones compare the fused graph with the unfused one in
onnxruntime (exactly where the kernels promise it) and skip where the library lacks an op."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.kernels import library_available
from smp_export.passes import (KERNEL_FUSIONS, ffn_fusion_pass, gelu_fusion_pass, layer_norm_fusion_pass,
                               residual_fusion_pass, sparse_linear_int8_pass, sparse_linear_pass)
from tests.kernel_helpers import assert_close, random_weight, session
from tests.test_kernel_passes import _fusable_model, _with_layer_norm

needs_library = pytest.mark.skipif(not library_available(), reason="the ai.smp library is not built")

LINEAR = ["SparseLinearInt8"]
A_INPUTS = ["X", "a.crow_indices", "a.col_indices", "a.values_int8", "a.scale", "a.bias"]
B_WEIGHT = ["b.crow_indices", "b.col_indices", "b.values_int8", "b.scale", "b.bias"]


def _model(seed: int, *, layer_norm: bool = True) -> onnx.ModelProto:
    """X ─ a (24 x 16) ─ GELU ─ b (16 x 24) ─ + R [─ LayerNorm], both linears as SparseLinearInt8."""
    rng = np.random.default_rng(seed)
    w = random_weight(rng, 24, 16, 0.3)
    model = _fusable_model(w, rng.standard_normal(24).astype(np.float32), ["n", 16])
    if layer_norm:
        model = _with_layer_norm(model, 16, rng)
    return sparse_linear_int8_pass(model, ["a", "b"])


def _feeds(seed: int, tokens: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"X": rng.standard_normal((tokens, 16)).astype(np.float32),
            "R": rng.standard_normal((tokens, 16)).astype(np.float32)}


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _epsilon(model: onnx.ModelProto, name: str) -> list[float]:
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name)).tolist()


def test_each_fusion_pass_folds_into_int8_nodes():
    model = _model(0)
    assert _ops(model) == LINEAR + ["Div", "Erf", "Add", "Mul", "Mul"] + LINEAR + ["Add", "LayerNormalization"]
    model = gelu_fusion_pass(model)
    assert _ops(model) == LINEAR * 2 + ["Add", "LayerNormalization"]
    first, second = model.graph.node[:2]
    assert list(first.input) == A_INPUTS and _attrs(first) == {"shape": [24, 16], "activation": b"gelu"}
    model = residual_fusion_pass(model)
    assert _ops(model) == LINEAR * 2 + ["LayerNormalization"]
    second = model.graph.node[1]
    assert list(second.input) == [first.output[0], *B_WEIGHT, "R"] and list(second.output) == ["Z"]
    model = layer_norm_fusion_pass(model)
    assert _ops(model) == LINEAR * 2
    second = model.graph.node[1]
    assert list(second.input)[6:9] == ["R", "ln.gamma", "ln.beta"] and len(second.input) == 10
    assert list(second.output) == ["N"] and _epsilon(model, second.input[9]) == [np.float32(1e-6)]
    model = ffn_fusion_pass(model)
    onnx.checker.check_model(model)
    (node,) = model.graph.node
    assert node.op_type == "SparseFFNInt8" and node.domain == "ai.smp" and list(node.output) == ["N"]
    assert list(node.input) == A_INPUTS + B_WEIGHT + ["R", "ln.gamma", "ln.beta", second.input[9]]
    assert _attrs(node) == {"shape1": [24, 16], "shape2": [16, 24], "activation": b"gelu"}
    for rewrite in KERNEL_FUSIONS:          # nothing left to fold: an equal graph
        assert rewrite(model).graph == model.graph


def test_ffn_pops_absent_trailing_inputs_and_keeps_inner_ones_empty():
    """No LayerNorm: SparseFFNInt8 ends at the residual (input 11); no bias on the first linear:
    its slot (5) stays, empty."""
    model = _model(1, layer_norm=False)
    for node in model.graph.node:
        if node.op_type == "SparseLinearInt8" and node.input[5] == "a.bias":
            node.input[5] = ""
    fused = model
    for rewrite in KERNEL_FUSIONS:
        fused = rewrite(fused)
    (node,) = fused.graph.node
    assert node.op_type == "SparseFFNInt8"
    assert list(node.input) == A_INPUTS[:5] + [""] + B_WEIGHT + ["R"]


def test_fp32_and_int8_linears_are_never_joined():
    """a fp32, b int8: each gets its own folds, and the pair stays two nodes."""
    rng = np.random.default_rng(2)
    w = random_weight(rng, 24, 16, 0.3)
    model = _with_layer_norm(_fusable_model(w, rng.standard_normal(24).astype(np.float32), ["n", 16]), 16, rng)
    model = sparse_linear_int8_pass(sparse_linear_pass(model, ["a"]), ["b"])
    fused = model
    for rewrite in KERNEL_FUSIONS:
        fused = rewrite(fused)
    assert _ops(fused) == ["SparseLinear", "SparseLinearInt8"]
    first, second = fused.graph.node
    assert _attrs(first)["activation"] == b"gelu" and len(first.input) == 5
    assert list(second.input)[6:9] == ["R", "ln.gamma", "ln.beta"]
    # The other way round (a int8, b fp32) neither.
    other = sparse_linear_pass(sparse_linear_int8_pass(
        _with_layer_norm(_fusable_model(w, np.zeros(24, np.float32), ["n", 16]), 16, rng), ["a"]), ["b"])
    for rewrite in KERNEL_FUSIONS:
        other = rewrite(other)
    assert _ops(other) == ["SparseLinearInt8", "SparseLinear"]
    assert list(other.graph.node[1].input)[5:8] == ["R", "ln.gamma", "ln.beta"]


def test_hidden_tensor_read_elsewhere_keeps_the_int8_pair_apart():
    model = _model(3)
    model.graph.output.append(helper.make_tensor_value_info("G", TensorProto.FLOAT, ["n", 24]))
    for rewrite in KERNEL_FUSIONS:
        model = rewrite(model)
    assert _ops(model) == LINEAR * 2 and len(model.graph.node[1].input) == 10


@needs_library
def test_gelu_and_residual_folds_compute_what_the_graph_did():
    """GELU in the kernel against onnxruntime's Erf (close); the residual added in the kernel
    against an Add after it (exact)."""
    model, feeds = _model(4, layer_norm=False), _feeds(4)
    before = session(model).run(None, feeds)[0]
    gelu = gelu_fusion_pass(model)
    after_gelu = session(gelu).run(None, feeds)[0]
    assert_close(after_gelu, before)
    residual = residual_fusion_pass(gelu)
    assert _ops(residual) == LINEAR * 2
    np.testing.assert_array_equal(session(residual).run(None, feeds)[0], after_gelu)


@needs_library
def test_layer_norm_fold_computes_what_the_graph_did():
    model, feeds = _model(5), _feeds(5)
    unfolded = residual_fusion_pass(gelu_fusion_pass(model))
    folded = layer_norm_fusion_pass(unfolded)
    assert _ops(folded) == LINEAR * 2
    assert_close(session(folded).run(None, feeds)[0], session(unfolded).run(None, feeds)[0])


@needs_library
def test_sparse_ffn_int8_is_bit_equal_to_the_pair():
    for seed, layer_norm in ((6, True), (7, False)):
        pair = layer_norm_fusion_pass(residual_fusion_pass(gelu_fusion_pass(_model(seed, layer_norm=layer_norm))))
        fused = ffn_fusion_pass(pair)
        assert _ops(pair) == LINEAR * 2 and _ops(fused) == ["SparseFFNInt8"]
        for tokens in (1, 7, 33):
            feeds = _feeds(seed, tokens)
            for threads in (1, 2):
                np.testing.assert_array_equal(session(fused, threads).run(None, feeds)[0],
                                              session(pair, threads).run(None, feeds)[0])


@needs_library
def test_all_int8_fusions_compute_what_the_unfused_graph_did():
    model, feeds = _model(8), _feeds(8)
    fused = model
    for rewrite in KERNEL_FUSIONS:
        fused = rewrite(fused)
    assert _ops(fused) == ["SparseFFNInt8"]
    assert_close(session(fused).run(None, feeds)[0], session(model).run(None, feeds)[0])
