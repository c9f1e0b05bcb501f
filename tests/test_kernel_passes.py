"""The kernel variants' passes on tiny graphs: sparse_linear_pass, then each fusion on its own and
in the variants' order (``passes.KERNEL_FUSIONS``), and the sparse-kernel export end to end."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.manifest import Manifest
from runtime.session import ModelSession
from smp_export.errors import ExportError
from smp_export.export import ExportOptions, export_onnx
from smp_export.passes import (KERNEL_FUSIONS, KernelSpec, ffn_fusion_pass, gelu_fusion_pass, layer_norm_fusion_pass,
                               residual_fusion_pass, sparse_linear_pass)
from tests.helpers import tiny_checkpoint
from tests.kernel_helpers import assert_close, random_weight, session


def kernel_passes(model: onnx.ModelProto, linears, *, fuse: bool = True) -> onnx.ModelProto:
    """What the kernel variants run: sparse_linear_pass, then every fusion in order."""
    model = sparse_linear_pass(model, linears)
    for fusion in KERNEL_FUSIONS if fuse else ():
        model = fusion(model)
    return model


def _linear_model(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    """Y = Relu(X @ W^T + b), named like the exported graph (``lin.weight_t``, ``lin.bias``)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "lin.weight_t"], ["XW"], name="/lin/MatMul"),
         helper.make_node("Add", ["XW", "lin.bias"], ["H"], name="/lin/Add"),
         helper.make_node("Relu", ["H"], ["Y"], name="/Relu")],
        "tiny", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", w.shape[1]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", w.shape[0]])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(w.T), "lin.weight_t"),
                     numpy_helper.from_array(b, "lin.bias")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("spec", [KernelSpec(), KernelSpec("bsr", (2, 4))])
def test_pass_on_a_tiny_linear(spec):
    rng = np.random.default_rng(0)
    w = random_weight(rng, 24, 16, 0.2, spec.block_shape)
    b = rng.standard_normal(24).astype(np.float32)
    before = _linear_model(w, b)
    after = sparse_linear_pass(before, {"lin.weight": spec})
    onnx.checker.check_model(after)
    assert [n.op_type for n in before.graph.node] == ["MatMul", "Add", "Relu"]   # input untouched
    node = after.graph.node[0]
    assert [n.op_type for n in after.graph.node] == ["SparseLinear", "Relu"]
    assert node.domain == "ai.smp" and list(node.input) == ["X", "lin.crow_indices", "lin.col_indices",
                                                             "lin.values", "lin.bias"]
    assert list(node.output) == ["H"]
    attrs = {a.name: list(a.ints) for a in node.attribute}
    assert attrs == {"shape": [24, 16], "block_shape": list(spec.block_shape)}
    inits = {i.name: numpy_helper.to_array(i) for i in after.graph.initializer}
    assert "lin.weight_t" not in inits and inits["lin.crow_indices"].dtype == np.int32
    values = inits["lin.values"]
    assert values.ndim == (1 if spec.format == "csr" else 3)
    assert any(op.domain == "ai.smp" for op in after.opset_import)
    x = rng.standard_normal((5, 16)).astype(np.float32)
    assert_close(session(after).run(None, {"X": x})[0], np.maximum(x @ w.T + b, 0))


def _fusable_model(w: np.ndarray, b: np.ndarray, residual_shape: list) -> onnx.ModelProto:
    """Y = gelu(X @ W^T + b) (the graph builder's exact erf form), Z = Y @ W2^T + b2 + R."""
    out, inp = w.shape
    consts = {"const.sqrt2": np.sqrt(2.0), "const.one": 1.0, "const.half": 0.5}
    nodes = [helper.make_node("MatMul", ["X", "a.weight_t"], ["XA"]),
             helper.make_node("Add", ["XA", "a.bias"], ["H"]),
             helper.make_node("Div", ["H", "const.sqrt2"], ["D"]),
             helper.make_node("Erf", ["D"], ["E"]),
             helper.make_node("Add", ["E", "const.one"], ["E1"]),
             helper.make_node("Mul", ["H", "E1"], ["G0"]),
             helper.make_node("Mul", ["G0", "const.half"], ["G"]),
             helper.make_node("MatMul", ["G", "b.weight_t"], ["GB"]),
             helper.make_node("Add", ["GB", "b.bias"], ["Z0"]),
             helper.make_node("Add", ["Z0", "R"], ["Z"])]
    inits = [numpy_helper.from_array(np.ascontiguousarray(w.T), "a.weight_t"), numpy_helper.from_array(b, "a.bias"),
             numpy_helper.from_array(np.ascontiguousarray(w), "b.weight_t"),
             numpy_helper.from_array(np.zeros(inp, np.float32), "b.bias")]
    inits += [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in consts.items()]
    graph = helper.make_graph(nodes, "fuse", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", inp]),
                                              helper.make_tensor_value_info("R", TensorProto.FLOAT, residual_shape)],
                              [helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["n", inp])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_pass_fuses_gelu_and_residual():
    from scipy.special import erf

    rng = np.random.default_rng(1)
    w = random_weight(rng, 24, 16, 0.3)
    b = rng.standard_normal(24).astype(np.float32)
    model = _fusable_model(w, b, ["n", 16])
    fused = kernel_passes(model, ["a", "b"])
    assert [n.op_type for n in fused.graph.node] == ["SparseFFN"]   # the pair, then one node
    (node,) = fused.graph.node
    assert list(node.input) == ["X", "a.crow_indices", "a.col_indices", "a.values", "a.bias", "b.crow_indices",
                                "b.col_indices", "b.values", "b.bias", "R"] and list(node.output) == ["Z"]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"shape1": [24, 16], "block_shape1": [1, 1], "shape2": [16, 24], "block_shape2": [1, 1],
                     "activation": b"gelu"}
    x = rng.standard_normal((5, 16)).astype(np.float32)
    r = rng.standard_normal((5, 16)).astype(np.float32)
    h = x @ w.T + b
    want = (0.5 * h * (1 + erf(h / np.sqrt(2)))) @ w + r
    assert_close(session(fused).run(None, {"X": x, "R": r})[0], want)
    assert_close(session(kernel_passes(model, ["a", "b"], fuse=False)).run(None, {"X": x, "R": r})[0], want)
    # A residual that broadcasts (shape [16]) is not fused: the kernel adds same-shaped tensors only.
    broadcast = kernel_passes(_fusable_model(w, b, [16]), ["a", "b"])
    assert [n.op_type for n in broadcast.graph.node] == ["SparseFFN", "Add"]
    # The hidden activations wanted elsewhere (here: a graph output) keep the two linears apart.
    model.graph.output.append(helper.make_tensor_value_info("G", TensorProto.FLOAT, ["n", 24]))
    kept = kernel_passes(model, ["a", "b"])
    assert [n.op_type for n in kept.graph.node] == ["SparseLinear", "SparseLinear"]
    got = session(kept).run(None, {"X": x, "R": r})
    assert_close(got[0], want)
    assert_close(got[1], 0.5 * h * (1 + erf(h / np.sqrt(2))))


def test_pass_names_what_it_cannot_find():
    w = np.eye(4, dtype=np.float32)
    model = _linear_model(w, np.zeros(4, np.float32))
    with pytest.raises(ExportError, match="other.*no MatMul"):
        kernel_passes(model, ["other"])
    with pytest.raises(ExportError, match="cannot store as bsr"):
        kernel_passes(model, {"lin": KernelSpec("bsr", (3, 3))})


@pytest.mark.parametrize("head", ["none", "sequence-classification"])
def test_sparse_kernel_export_validates_and_loads(tmp_path, head):
    ckpt = tiny_checkpoint(head=head, keep=0.1, hidden_size=64, intermediate_size=128)
    out = tmp_path / "e"
    manifest = export_onnx(ckpt, out, options=ExportOptions(weights="sparse-kernel"))
    assert manifest.validation.passed and manifest.validation.max_abs_diff <= 1e-4
    on_disk = Manifest.read(out)
    assert on_disk.custom_op_domains == ["ai.smp"] and on_disk.weights == "sparse-kernel"
    assert {r.format for r in on_disk.layers} == {"csr"} and all(r.bytes > 0 for r in on_disk.layers)
    assert on_disk.totals["formats"] == {"csr": 12}
    model = onnx.load(str(out / "model.onnx"))
    kernels = [n for n in model.graph.node if n.op_type == "SparseLinear"]
    ffns = [n for n in model.graph.node if n.op_type == "SparseFFN"]
    assert len(kernels) == 4 and len(ffns) == 2                        # stacked QKV, O + one FFN per layer
    assert sum(n.input[1].endswith(".qkv.crow_indices") for n in kernels) == 2
    assert all(len(n.input) == 13 and n.input[9] == n.input[0] for n in ffns)   # residual X, post-LayerNorm
    assert sum(len(n.input) == 9 for n in kernels) == 2                # attention output: residual + LayerNorm
    assert sum(n.op_type == "LayerNormalization" for n in model.graph.node) == 1       # the embeddings' only
    assert not any(n.op_type in ("Erf", "Div") and "intermediate" in n.name for n in model.graph.node)
    assert not any(n.op_type == "MatMul" and n.input[1].endswith(".weight_t") and "encoder" in n.input[1]
                   for n in model.graph.node)
    dense = export_onnx(ckpt, tmp_path / "d", options=ExportOptions(weights="dense"))
    assert sum(r.bytes for r in on_disk.layers) < sum(r.bytes for r in dense.layers)
    loaded = ModelSession.load(out)           # the library is registered from the manifest
    ids = np.array([[2, 5, 9, 4, 0], [3, 8, 7, 6, 10]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    want = ModelSession.load(tmp_path / "d").run(feeds)
    for name, got in loaded.run(feeds).items():
        np.testing.assert_allclose(got, want[name], atol=1e-4)


def test_pass_drops_initializers_left_without_consumers():
    """After GELU fusion the constants sqrt2 / one / half and every W^T have no consumer left."""
    rng = np.random.default_rng(2)
    w = random_weight(rng, 24, 16, 0.3)
    model = _fusable_model(w, rng.standard_normal(24).astype(np.float32), ["n", 16])
    fused = kernel_passes(model, ["a", "b"])
    used = {name for node in fused.graph.node for name in node.input}
    assert {init.name for init in fused.graph.initializer} <= used
    assert not any(init.name.endswith(".weight_t") for init in fused.graph.initializer)


def test_kernel_export_fuses_attention_and_every_residual(tmp_path):
    """sparse-kernel exports use the ai.smp.Attention kernel by default; the residual after the
    attention output projection still folds into its kernel (the attention output shape is stated)."""
    ckpt = tiny_checkpoint(keep=0.2)
    manifest = export_onnx(ckpt, tmp_path / "k", options=ExportOptions(weights="sparse-kernel"))
    assert manifest.validation.passed and manifest.export_options == {"attention": "smp"}
    model = onnx.load(str(tmp_path / "k" / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Attention") == ckpt.config.num_hidden_layers and "Softmax" not in ops
    assert ("ai.smp", 1) in {(o.domain, o.version) for o in model.opset_import}
    kernels = [n for n in model.graph.node if n.op_type == "SparseLinear"]
    assert sum(len(n.input) == 9 for n in kernels) == ckpt.config.num_hidden_layers   # attention output
    assert sum(n.op_type == "SparseFFN" and len(n.input) == 13 for n in model.graph.node) == \
        ckpt.config.num_hidden_layers                                                  # FFN output
    assert "Add" not in ops[ops.index("Attention"):]   # mask, biases and residuals all folded
    for mode in ("onnx", "mha"):
        other = export_onnx(ckpt, tmp_path / mode, options=ExportOptions(
            weights="sparse-kernel", attention=mode))
        assert other.export_options == {"attention": mode} and other.validation.passed


def _with_layer_norm(model: onnx.ModelProto, width: int, rng, eps: float = 1e-6) -> onnx.ModelProto:
    """``model`` (output Z) followed by LayerNormalization(Z; γ, β, ε) -> N."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    graph.node.append(helper.make_node("LayerNormalization", ["Z", "ln.gamma", "ln.beta"], ["N"], axis=-1,
                                       epsilon=eps))
    graph.initializer.extend([numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "ln.gamma"),
                              numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "ln.beta")])
    graph.output[0].name = "N"
    return out


def test_pass_fuses_a_following_layer_norm():
    rng = np.random.default_rng(3)
    w = random_weight(rng, 24, 16, 0.3)
    b = rng.standard_normal(24).astype(np.float32)
    model = _with_layer_norm(_fusable_model(w, b, ["n", 16]), 16, rng)
    fused = kernel_passes(model, ["a", "b"])
    assert [n.op_type for n in fused.graph.node] == ["SparseFFN"]
    (node,) = fused.graph.node
    assert list(node.input)[9:12] == ["R", "ln.gamma", "ln.beta"] and list(node.output) == ["N"]
    eps = {i.name: numpy_helper.to_array(i) for i in fused.graph.initializer}[node.input[12]]
    assert eps.dtype == np.float32 and eps.tolist() == [np.float32(1e-6)]
    x = rng.standard_normal((7, 16)).astype(np.float32)
    r = rng.standard_normal((7, 16)).astype(np.float32)
    want = session(model).run(None, {"X": x, "R": r})[0]
    assert_close(session(fused).run(None, {"X": x, "R": r})[0], want)
    # The same fold into a lone SparseLinear (hidden activations kept as an output: no SparseFFN).
    model.graph.output.append(helper.make_tensor_value_info("G", TensorProto.FLOAT, ["n", 24]))
    apart = kernel_passes(model, ["a", "b"])
    second = apart.graph.node[1]
    assert [n.op_type for n in apart.graph.node] == ["SparseLinear", "SparseLinear"]
    assert list(second.input)[5:8] == ["R", "ln.gamma", "ln.beta"] and list(second.output) == ["N"]
    assert_close(session(apart).run(None, {"X": x, "R": r})[0], want)


def test_layer_norm_inputs_are_validated_in_the_session():
    rng = np.random.default_rng(4)
    w = random_weight(rng, 24, 16, 0.3)
    fused = kernel_passes(_with_layer_norm(_fusable_model(w, np.zeros(24, np.float32), ["n", 16]), 16, rng),
                               ["a", "b"])
    gamma = next(i for i in fused.graph.initializer if i.name == "ln.gamma")
    gamma.CopyFrom(numpy_helper.from_array(np.ones(5, np.float32), "ln.gamma"))
    x = rng.standard_normal((3, 16)).astype(np.float32)
    with pytest.raises(Exception, match="ln_gamma and ln_beta must be float32 \\[16\\]"):
        session(fused).run(None, {"X": x, "R": x})


def test_each_fusion_pass_on_its_own():
    """gelu, residual, layer_norm, ffn: each folds its own pattern and nothing else, and the
    graph computes the same after each step."""
    rng = np.random.default_rng(5)
    w = random_weight(rng, 24, 16, 0.3)
    b = rng.standard_normal(24).astype(np.float32)
    model = _with_layer_norm(_fusable_model(w, b, ["n", 16]), 16, rng)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    r = rng.standard_normal((4, 16)).astype(np.float32)
    want = session(model).run(None, {"X": x, "R": r})[0]
    steps = [(sparse_linear_pass, ["SparseLinear", "Div", "Erf", "Add", "Mul", "Mul", "SparseLinear", "Add",
                                   "LayerNormalization"]),
             (gelu_fusion_pass, ["SparseLinear", "SparseLinear", "Add", "LayerNormalization"]),
             (residual_fusion_pass, ["SparseLinear", "SparseLinear", "LayerNormalization"]),
             (layer_norm_fusion_pass, ["SparseLinear", "SparseLinear"]),
             (ffn_fusion_pass, ["SparseFFN"])]
    for rewrite, ops in steps:
        model = rewrite(model, ["a", "b"]) if rewrite is sparse_linear_pass else rewrite(model)
        onnx.checker.check_model(model)
        assert [n.op_type for n in model.graph.node] == ops, rewrite.__name__
        assert_close(session(model).run(None, {"X": x, "R": r})[0], want)
    # Run again, each finds nothing left to fold and returns an equal graph.
    for rewrite in (gelu_fusion_pass, residual_fusion_pass, layer_norm_fusion_pass, ffn_fusion_pass):
        assert rewrite(model).graph == model.graph


def test_mixed_storage_keeps_every_residual_fold():
    """As ``auto`` may choose: each FFN's second linear stays dense while the rest become kernels.
    The GELU fold renames the first linear's output; its shape must stay stated, or shape
    inference stops at the dense MatMul and no later layer's residual folds."""
    from smp_export.checkpoint import linear_weight_names, parse_linear_name
    from smp_export.graph import build_onnx_model
    from smp_export.passes import attention_fusion_pass

    ckpt = tiny_checkpoint(num_hidden_layers=3)
    model = attention_fusion_pass(build_onnx_model(ckpt.config, ckpt.masked_weights(), ckpt.head), "smp")
    kernels = [n for n in linear_weight_names(3) if parse_linear_name(n)[1] != "output"]
    fused = kernel_passes(model, kernels)
    outputs = [n for n in fused.graph.node if n.op_type == "SparseLinear" and "attention/output" in n.name]
    assert len(outputs) == 3 and all(len(n.input) == 9 for n in outputs)       # residual + LayerNorm, every layer
    assert sum(n.op_type == "MatMul" for n in fused.graph.node) == 3           # the dense second linears
