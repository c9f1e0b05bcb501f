"""--precision fp16: float16 weights and activations (LayerNorm and softmax in fp32), the graph's
inputs and outputs unchanged, validated against the masked fp32 model by row cosine and top-1;
refused before any work where a variant cannot have it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from runtime.manifest import Manifest
from runtime.session import ModelSession
from smp_export.errors import ExportError, ValidationError
from smp_export.export import ExportOptions, export_onnx
from smp_export.fp16 import KEEP_FP32
from smp_export.validate import QuantizedValidationConfig, ValidationConfig
from smp_export.variants import VARIANTS, check_precision
from tests.helpers import tiny_checkpoint

FLOAT, FLOAT16, INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64


def _producers(graph):
    return {out: node for node in graph.node for out in node.output}


@pytest.mark.parametrize("weights, head", [("compact", "sequence-classification"), ("dense", "none")])
def test_fp16_export(tmp_path, weights, head):
    ckpt = tiny_checkpoint(head=head)
    export_onnx(ckpt, tmp_path / "fp32", options=ExportOptions(weights=weights))
    manifest = export_onnx(ckpt, tmp_path / "fp16", options=ExportOptions(weights=weights, precision="fp16"))
    assert manifest.precision == "fp16" and manifest.export_options["conversion"]["keep_io_types"] is True
    v = manifest.validation
    assert v.passed and v.atol is None and v.min_cosine == 0.999 and v.cosine_min > 0.9999
    model = onnx.load(str(tmp_path / "fp16" / "model.onnx"))
    onnx.checker.check_model(model)                       # topologically sorted after the converter
    big = [t for t in model.graph.initializer if len(t.dims) == 2]
    assert big and all(t.data_type == FLOAT16 for t in big)
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {INT64}
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {FLOAT}
    producers = _producers(model.graph)
    kept = [n for n in model.graph.node if n.op_type in KEEP_FP32]
    assert kept and all(producers[n.input[0]].op_type == "Cast" for n in kept)
    assert all(a.i == FLOAT for n in kept for a in producers[n.input[0]].attribute if a.name == "to")
    fp32 = onnx.load(str(tmp_path / "fp32" / "model.onnx"))
    matrix_bytes = [sum(len(t.raw_data) for t in m.graph.initializer if len(t.dims) == 2) for m in (fp32, model)]
    assert matrix_bytes[1] * 2 == matrix_bytes[0]                             # every matrix in half the bytes
    assert manifest.files["model.onnx"] < Manifest.read(tmp_path / "fp32").files["model.onnx"]
    session = ModelSession.load(tmp_path / "fp16")
    ids = np.array([[2, 5, 9, 4]], np.int64)
    out = session.run({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    assert next(iter(out.values())).dtype == np.float32


@pytest.mark.parametrize("weights, reason", [("sparse-kernel", "ai.smp kernels run fp32 and int8"),
                                             ("auto", "the kernels have no fp16"),
                                             ("sparse-initializer", "neither quantize nor convert")])
def test_fp16_is_refused_where_a_variant_lacks_it(weights, reason):
    with pytest.raises(ExportError, match=reason) as info:
        check_precision(VARIANTS[weights], "fp16")
    assert info.value.field == "--precision" and "use --weights dense or compact" in str(info.value)


def test_a_threshold_it_misses_refuses_the_export_and_writes_nothing(tmp_path):
    strict = ValidationConfig(fp16=QuantizedValidationConfig(min_cosine=1.0))
    refused = r"worst row cosine .* < --min-cosine 1 \(fp16 vs the masked fp32"
    with pytest.raises(ValidationError, match=refused) as info:
        export_onnx(tiny_checkpoint(), tmp_path / "e",
                    options=ExportOptions(weights="compact", precision="fp16", validation=strict))
    assert info.value.field == "--min-cosine" and not (tmp_path / "e").exists()


def test_cli_fp16(tmp_path):
    from cli.export import main
    from tests.fixtures import write_dense_base

    written = write_dense_base(tmp_path / "bert", head="sequence-classification", tokenizer=True)
    result = CliRunner().invoke(main, [str(written.path), "--weights", "compact", "--precision", "fp16",
                                       "-o", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert "[compact, fp16]" in result.output and ">= 0.999" in result.output
    refused = CliRunner().invoke(main, [str(written.path), "--weights", "sparse-kernel", "--precision", "fp16",
                                        "-o", str(tmp_path / "k")])
    assert refused.exit_code == 2 and "--precision fp16 is not available" in refused.output
    assert not (tmp_path / "k").exists()


def test_fp16_with_the_smp_attention_kernel_is_refused_before_any_work(tmp_path):
    with pytest.raises(ExportError, match="ai.smp.Attention takes float32 only") as info:
        export_onnx(tiny_checkpoint(), tmp_path / "e",
                    options=ExportOptions(weights="compact", precision="fp16", attention="smp", validate=False))
    assert info.value.field == "--attention" and not (tmp_path / "e").exists()
    manifest = export_onnx(tiny_checkpoint(), tmp_path / "mha",
                           options=ExportOptions(weights="compact", precision="fp16", attention="mha"))
    assert manifest.validation.passed and manifest.validation.cosine_min > 0.999


def test_the_converters_own_block_list_is_kept():
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    from smp_export.fp16 import CONVERSION

    assert {"Max", "Min", "TopK", "Range"} <= set(DEFAULT_OP_BLOCK_LIST) <= set(CONVERSION["op_block_list"])
    assert set(KEEP_FP32) <= set(CONVERSION["op_block_list"])
