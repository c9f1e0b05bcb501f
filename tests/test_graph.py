"""The hand-built ONNX graph against the masked Hugging Face reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from smp_export.checkpoint import HeadSpec, linear_weight_names
from smp_export.errors import CheckpointError, ExportError
from smp_export.graph import build_onnx_model, linear_initializer_name, node_path
from smp_export.reference import build_reference_model
from smp_export.validate import ValidationConfig, validate_export
from tests.helpers import tiny_checkpoint

HEADS = ["none", "sequence-classification", "smp-label-words"]


def _validate(tmp_path, model, ckpt, config=ValidationConfig()):
    from runtime.kernels import SPARSE_DOMAIN, custom_op_library_path

    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    libraries = [str(custom_op_library_path())] if any(n.domain == SPARSE_DOMAIN for n in model.graph.node) else []
    return validate_export(path, build_reference_model(ckpt), vocab_size=ckpt.config.vocab_size,
                           type_vocab_size=ckpt.config.type_vocab_size, output_name=ckpt.head.output_name,
                           config=config, custom_op_libraries=libraries)


@pytest.mark.parametrize("act", ["gelu", "relu", "gelu_new", "gelu_pytorch_tanh"])
@pytest.mark.parametrize("head", HEADS)
def test_graph_matches_reference(tmp_path, head, act):
    ckpt = tiny_checkpoint(head=head, hidden_act=act)
    model = build_onnx_model(ckpt.config, ckpt.masked_weights(), ckpt.head)
    record = _validate(tmp_path, model, ckpt)
    assert record.passed and record.max_abs_diff < 1e-5
    assert record.shapes == [[1, 8], [2, 16], [3, 37]]
    assert record.labels_agree is (None if head == "none" else True)


def test_io_names_and_dynamic_dims():
    ckpt = tiny_checkpoint(head="sequence-classification")
    graph = build_onnx_model(ckpt.config, ckpt.masked_weights(), ckpt.head).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    for value in graph.input:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch_size", "sequence_length"]
    (out,) = graph.output
    assert out.name == "logits"
    dims = out.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch_size" and dims[1].dim_value == 3


def test_linear_naming_convention():
    ckpt = tiny_checkpoint()
    weights = ckpt.masked_weights()
    graph = build_onnx_model(ckpt.config, weights, ckpt.head).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers = {inp: n for n in graph.node for inp in n.input}
    for name in linear_weight_names(ckpt.config.num_hidden_layers):
        module = name.removesuffix(".weight")
        wt = linear_initializer_name(name)
        np.testing.assert_array_equal(inits[wt], weights[name].numpy().T)
        matmul = consumers[wt]
        assert matmul.op_type == "MatMul" and matmul.name == f"{node_path(module)}/MatMul"
        add = consumers[matmul.output[0]]
        assert add.op_type == "Add" and f"{module}.bias" in add.input
    assert node_path("encoder.layer.0.attention.self.query") == "/encoder/layer.0/attention/self/query"
    assert linear_initializer_name("encoder.layer.1.output.dense.weight") == "encoder.layer.1.output.dense.weight_t"
    with pytest.raises(ValueError):
        linear_initializer_name("encoder.layer.1.output.dense.bias")


def test_no_weight_is_stored_twice():
    ckpt = tiny_checkpoint(head="smp-label-words")
    graph = build_onnx_model(ckpt.config, ckpt.masked_weights(), ckpt.head).graph
    names = [i.name for i in graph.initializer]
    assert len(names) == len(set(names))
    large = [i.raw_data for i in graph.initializer if len(i.raw_data) > 256]
    assert len(large) == len(set(large))
    # The decoder keeps only the label words' rows.
    label_w = next(i for i in graph.initializer if i.name == "cls.predictions.decoder.label_weight_t")
    assert list(label_w.dims) == [32, 3]


def test_tied_decoder_falls_back_to_word_embeddings(tmp_path):
    ckpt = tiny_checkpoint(head="smp-label-words")
    del ckpt.weights["cls.predictions.decoder.weight"]
    model = build_onnx_model(ckpt.config, ckpt.masked_weights(), ckpt.head)
    assert _validate(tmp_path, model, ckpt).passed


def _compact(ckpt, drop_heads: dict[int, list[int]], drop_neurons: dict[int, list[int]]):
    """Zero the outgoing weights of the dropped heads / neurons in ``ckpt`` (function then
    unchanged by removing them) and return the compacted masked weights."""
    d = ckpt.config.hidden_size // ckpt.config.num_attention_heads
    for layer, heads in drop_heads.items():
        for h in heads:
            ckpt.weights[f"encoder.layer.{layer}.attention.output.dense.weight"][:, h * d:(h + 1) * d] = 0
    for layer, neurons in drop_neurons.items():
        ckpt.weights[f"encoder.layer.{layer}.output.dense.weight"][:, neurons] = 0
    weights = ckpt.masked_weights()
    for layer, heads in drop_heads.items():
        p = f"encoder.layer.{layer}.attention"
        keep = [i for i in range(ckpt.config.hidden_size) if i // d not in heads]
        for m in ("query", "key", "value"):
            weights[f"{p}.self.{m}.weight"] = weights[f"{p}.self.{m}.weight"][keep]
            weights[f"{p}.self.{m}.bias"] = weights[f"{p}.self.{m}.bias"][keep]
        weights[f"{p}.output.dense.weight"] = weights[f"{p}.output.dense.weight"][:, keep]
    for layer, neurons in drop_neurons.items():
        p = f"encoder.layer.{layer}"
        keep = [i for i in range(ckpt.config.intermediate_size) if i not in neurons]
        weights[f"{p}.intermediate.dense.weight"] = weights[f"{p}.intermediate.dense.weight"][keep]
        weights[f"{p}.intermediate.dense.bias"] = weights[f"{p}.intermediate.dense.bias"][keep]
        weights[f"{p}.output.dense.weight"] = weights[f"{p}.output.dense.weight"][:, keep]
    return weights


def test_compacted_weights_build_and_match_uncompacted_reference(tmp_path):
    ckpt = tiny_checkpoint(head="sequence-classification")
    weights = _compact(ckpt, {0: [1], 1: [0, 3]}, {0: list(range(0, 64, 3)), 1: [5, 6]})
    model = build_onnx_model(ckpt.config, weights, ckpt.head)
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    assert inits["encoder.layer.0.attention.self.query.weight_t"] == [32, 24]
    assert inits["encoder.layer.1.attention.output.dense.weight_t"] == [16, 32]
    assert inits["encoder.layer.0.intermediate.dense.weight_t"] == [32, 64 - 22]
    record = _validate(tmp_path, model, ckpt)
    assert record.passed and record.max_abs_diff < 1e-5


def test_layer_with_every_head_and_neuron_removed(tmp_path):
    ckpt = tiny_checkpoint()
    weights = _compact(ckpt, {1: [0, 1, 2, 3]}, {0: list(range(64))})
    model = build_onnx_model(ckpt.config, weights, ckpt.head)
    names = {i.name for i in model.graph.initializer}
    assert "encoder.layer.1.attention.self.query.weight_t" not in names
    assert "encoder.layer.0.intermediate.dense.weight_t" not in names
    assert _validate(tmp_path, model, ckpt).passed


def test_missing_or_misshapen_weight_is_named():
    ckpt = tiny_checkpoint()
    weights = ckpt.masked_weights()
    del weights["encoder.layer.1.attention.self.key.weight"]
    with pytest.raises(ExportError, match=r"encoder\.layer\.1\.attention\.self\.key\.weight"):
        build_onnx_model(ckpt.config, weights, ckpt.head)
    weights = ckpt.masked_weights()
    weights["encoder.layer.0.attention.self.value.weight"] = weights["encoder.layer.0.attention.self.value.weight"][:8]
    with pytest.raises(ExportError, match=r"layer\.0\.attention\.self\.value\.weight"):
        build_onnx_model(ckpt.config, weights, ckpt.head)


def test_unsupported_activation_and_bad_labels():
    ckpt = tiny_checkpoint(hidden_act="silu")
    with pytest.raises(CheckpointError, match="unsupported activation 'silu'") as info:
        build_onnx_model(ckpt.config, ckpt.masked_weights(), ckpt.head)
    assert info.value.field == "hidden_act"
    ckpt = tiny_checkpoint(head="smp-label-words")
    with pytest.raises(ExportError, match="label_token_ids"):
        build_onnx_model(ckpt.config, ckpt.masked_weights(), HeadSpec("smp-label-words", (1, 999)))


def test_reference_names_a_missing_weight():
    ckpt = tiny_checkpoint(head="sequence-classification")
    del ckpt.weights["pooler.dense.bias"]
    with pytest.raises(CheckpointError, match=r"pooler\.dense\.bias"):
        build_reference_model(ckpt)


def test_reference_label_words_are_mlm_scores_at_cls():
    ckpt = tiny_checkpoint(head="smp-label-words")
    ref = build_reference_model(ckpt)
    ids = torch.randint(1, 120, (2, 6))
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    with torch.no_grad():
        got = ref(ids, mask, types)
        scores = ref.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(got, scores[:, 0, [5, 7, 11]])
    assert not ref.training
