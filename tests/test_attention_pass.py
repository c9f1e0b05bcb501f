"""attention_fusion_pass: the builder's plain attention cores as MultiHeadAttention or
ai.smp.Attention, the same function; near misses left alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from smp_export.errors import ExportError
from smp_export.graph import build_onnx_model
from smp_export.passes import attention_fusion_pass
from tests.helpers import tiny_checkpoint
from tests.test_graph import _validate


def _fused(ckpt, mode, weights=None):
    plain = build_onnx_model(ckpt.config, weights or ckpt.masked_weights(), ckpt.head)
    return attention_fusion_pass(plain, mode)


@pytest.mark.parametrize("head", ["none", "sequence-classification"])
@pytest.mark.parametrize("mode, op, domain", [("mha", "MultiHeadAttention", "com.microsoft"),
                                              ("smp", "Attention", "ai.smp")])
def test_fused_attention_graph_matches_reference(tmp_path, head, mode, op, domain):
    """One attention node per layer, same function (padded batches included)."""
    ckpt = tiny_checkpoint(head=head)
    model = _fused(ckpt, mode)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count(op) == ckpt.config.num_hidden_layers
    assert "Softmax" not in ops and "Transpose" not in ops
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17), (domain, 1)}
    node = next(n for n in model.graph.node if n.op_type == op)
    assert node.domain == domain
    if mode == "smp":
        assert list(node.input)[3] == "attention_mask"
        head_dim = ckpt.config.hidden_size // ckpt.config.num_attention_heads
        assert [list(a.ints) for a in node.attribute] == [[ckpt.config.num_attention_heads, head_dim]]
    record = _validate(tmp_path, model, ckpt)
    assert record.passed and record.max_abs_diff < 1e-5


def test_unknown_attention_mode_is_refused():
    ckpt = tiny_checkpoint()
    with pytest.raises(ExportError, match="unknown attention 'flash'"):
        _fused(ckpt, "flash")


@pytest.mark.parametrize("mode", ["mha", "smp"])
def test_fused_attention_states_shapes_for_the_passes(mode):
    """The attention output and the embeddings carry [batch_size, sequence_length, width] value
    infos, so shape inference (which has no contrib-op schemas) keeps the sequence symbol; the
    additive mask's nodes are gone with the last layer that read them."""
    ckpt = tiny_checkpoint()
    model = _fused(ckpt, mode)
    infos = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
             for v in model.graph.value_info}
    outputs = [n.output[0] for n in model.graph.node if n.op_type in ("MultiHeadAttention", "Attention")]
    assert len(outputs) == ckpt.config.num_hidden_layers
    assert all(infos[o] == ["batch_size", "sequence_length", ckpt.config.hidden_size] for o in outputs)
    embeddings = "/embeddings/LayerNorm/LayerNormalization_output_0"
    assert infos[embeddings] == ["batch_size", "sequence_length", ckpt.config.hidden_size]
    assert not any(n.name.startswith("/mask/") and n.op_type in ("Sub", "Mul", "Unsqueeze") for n in model.graph.node)


@pytest.mark.parametrize("mode", ["mha", "smp"])
def test_fused_attention_with_a_layer_without_heads(mode):
    """A compacted layer whose heads all went keeps only the output bias, fused or not."""
    ckpt = tiny_checkpoint()
    weights = {k: v.clone() for k, v in ckpt.masked_weights().items()}
    p = "encoder.layer.1.attention"
    for m in ("query", "key", "value"):
        weights[f"{p}.self.{m}.weight"] = weights[f"{p}.self.{m}.weight"][:0]
        weights[f"{p}.self.{m}.bias"] = weights[f"{p}.self.{m}.bias"][:0]
    weights[f"{p}.output.dense.weight"] = weights[f"{p}.output.dense.weight"][:, :0]
    plain = build_onnx_model(ckpt.config, weights, ckpt.head)
    fused = _fused(ckpt, mode, weights)
    assert sum(n.op_type in ("MultiHeadAttention", "Attention") for n in fused.graph.node) == \
        ckpt.config.num_hidden_layers - 1
    import onnxruntime as ort

    from runtime.kernels import custom_op_library_path

    ids = np.array([[2, 5, 9, 4, 0, 0], [3, 8, 7, 6, 10, 11]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    outs = []
    for m in (plain, fused):
        opts = ort.SessionOptions()
        opts.register_custom_ops_library(str(custom_op_library_path()))
        outs.append(ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
                    .run(None, feeds)[0])
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-5, rtol=1e-5)


def test_onnx_mode_and_near_misses_are_left_alone():
    """``onnx`` returns the graph unchanged; a core whose scale is not 1/sqrt(d), or whose
    intermediate scores are read elsewhere, is not fused (the rewrite would change the function
    or drop a value something reads)."""
    ckpt = tiny_checkpoint()
    plain = build_onnx_model(ckpt.config, ckpt.masked_weights(), ckpt.head)
    assert attention_fusion_pass(plain, "onnx") is plain
    scaled = onnx.ModelProto()
    scaled.CopyFrom(plain)
    div = next(n for n in scaled.graph.node if n.op_type == "Div" and "/attention/self/" in n.name)
    scaled.graph.initializer.append(onnx.numpy_helper.from_array(np.array(3.0, np.float32), "const.three_scale"))
    div.input[1] = "const.three_scale"
    got = attention_fusion_pass(scaled, "smp")
    assert sum(n.op_type == "Attention" for n in got.graph.node) == ckpt.config.num_hidden_layers - 1
    shared = onnx.ModelProto()
    shared.CopyFrom(plain)
    softmax = next(n for n in shared.graph.node if n.op_type == "Softmax")
    shared.graph.output.append(helper.make_tensor_value_info(softmax.output[0], onnx.TensorProto.FLOAT,
                                                             ["batch_size", 4, "sequence_length", "sequence_length"]))
    got = attention_fusion_pass(shared, "mha")
    assert sum(n.op_type == "MultiHeadAttention" for n in got.graph.node) == ckpt.config.num_hidden_layers - 1
    onnx.checker.check_model(got)
