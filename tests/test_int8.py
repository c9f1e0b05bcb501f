"""--precision int8: onnxruntime dynamic quantization of dense / compact exports, validated by
per-row cosine and top-1 agreement against the masked fp32 model; refused before any work elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from cli.export import main as export_main
from runtime.manifest import Manifest
from smp_export.errors import ExportError, ValidationError
from smp_export.export import ExportOptions, export_onnx
from smp_export.int8 import fold_quantized_sizes
from smp_export.reduced import _row_cosines
from smp_export.validate import QuantizedValidationConfig, ValidationConfig
from smp_export.variants import VARIANTS, check_precision
from tests.fixtures import write_dense_zero_checkpoint
from tests.helpers import tiny_checkpoint


def _int8(ckpt, out: Path, weights: str = "dense", **thresholds) -> Manifest:
    validation = ValidationConfig(quantized=QuantizedValidationConfig(**thresholds))
    return export_onnx(ckpt, out, options=ExportOptions(weights=weights, precision="int8", validation=validation))


@pytest.mark.parametrize("weights, head", [("dense", "sequence-classification"), ("compact", "none")])
def test_int8_export_validates_and_records_precision_and_metrics(tmp_path, weights, head):
    ckpt = tiny_checkpoint(head=head, keep=0.3)
    fp32 = export_onnx(ckpt, tmp_path / "fp32", options=ExportOptions(weights=weights))
    _int8(ckpt, tmp_path / "int8", weights)

    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8" / "model.onnx")).graph.node]
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= set(ops)
    assert ops.count("MatMulInteger") >= 6 * ckpt.config.num_hidden_layers     # every pruned linear
    assert sorted(p.name for p in (tmp_path / "int8").iterdir()) == ["config.json", "manifest.json", "model.onnx"]
    model = onnx.load(str(tmp_path / "int8" / "model.onnx"))
    embeddings = next(i for i in model.graph.initializer if i.name.endswith("word_embeddings.weight"))
    assert embeddings.data_type == onnx.TensorProto.FLOAT                       # the Gather stays fp32

    on_disk = Manifest.read(tmp_path / "int8")
    assert on_disk.precision == "int8" and fp32.precision == "fp32" and on_disk.weights == weights
    assert on_disk.export_options["quantization"]["per_channel"] is True
    v = on_disk.validation
    assert v.passed and v.atol is None and v.max_abs_diff > 0
    assert 0.99 <= v.cosine_min <= v.cosine_mean <= 1.0 + 1e-9 and v.min_cosine == 0.99
    if head == "none":
        assert v.top1_agreement is None and v.min_top1 is None and v.labels_agree is None
    else:
        assert v.top1_agreement == 1.0 and v.min_top1 == 0.95 and v.labels_agree is True
    # int8 values + a scale and zero point per output channel: well under the fp32 bytes.
    assert on_disk.totals["linear_bytes"] < 0.5 * fp32.totals["linear_bytes"]
    assert all(r.bytes > 0 for r in on_disk.layers)
    assert on_disk.files["model.onnx"] < fp32.files["model.onnx"]


def test_an_impossible_threshold_refuses_the_export_and_writes_nothing(tmp_path):
    ckpt = tiny_checkpoint(head="sequence-classification", keep=0.3)
    out = tmp_path / "never"
    with pytest.raises(ValidationError, match="worst row cosine .* < --min-cosine 1") as info:
        _int8(ckpt, out, min_cosine=1.0)
    assert info.value.field == "--min-cosine" and info.value.max_abs_diff > 0
    assert list(tmp_path.iterdir()) == []                                      # no output, no temporary
    model = write_dense_zero_checkpoint(tmp_path / "m").path
    result = CliRunner().invoke(export_main, [
        str(model), "--weights", "compact", "--precision", "int8", "--min-cosine", "1", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--min-cosine" in result.output and not (tmp_path / "o").exists()


def test_int8_is_offered_by_dense_compact_and_sparse_kernel_and_refused_before_any_work(tmp_path):
    assert [n for n, v in VARIANTS.items() if "int8" in v.precisions] == ["dense", "compact", "sparse-kernel"]
    assert all("fp32" in v.precisions for v in VARIANTS.values())
    for weights, why in (("auto", "no export pass writes the int8 kernel"),
                         ("sparse-initializer", "densifies sparse initializers")):
        with pytest.raises(ExportError, match=why) as info:
            check_precision(VARIANTS[weights], "int8")
        assert info.value.field == "--precision"
        assert "use --weights dense or compact or sparse-kernel" in str(info.value)
    with pytest.raises(ExportError, match="unknown precision 'bf16'"):
        export_onnx(tiny_checkpoint(), tmp_path / "x", options=ExportOptions(weights="dense", precision="bf16"))
    # The model directory does not exist: refused on the option, not on the checkpoint.
    result = CliRunner().invoke(export_main, [str(tmp_path / "missing"), "--precision", "int8", "--weights",
                                       "auto", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--precision" in result.output and "no export pass writes" in result.output
    assert "missing" not in result.output.split("--precision")[0] and not (tmp_path / "out").exists()


def test_row_cosines_and_folded_sizes():
    want = np.array([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])
    got = np.array([[[1.0, 0.1], [0.0, -2.0], [-5.0, 5.0]]])
    mask = np.array([[1, 1, 0]])                         # the padded token is not a row
    cos = _row_cosines(got, want, mask)
    assert cos.shape == (2,) and cos[0] == pytest.approx(0.995, abs=1e-3) and cos[1] == pytest.approx(-1.0)
    logits = _row_cosines(np.zeros((2, 3)), np.array([[0.0, 0, 0], [1, 0, 0]]), np.ones((2, 4)))
    assert logits.tolist() == [1.0, 0.0]                 # both zero: the same; one zero: orthogonal
    assert _row_cosines(np.full((1, 2), np.nan), np.ones((1, 2)), np.ones((1, 1))).tolist() == [-1.0]
    sizes = {"w_t_quantized": 64, "w_t_scale": 16, "w_t_zero_point": 4, "bias": 32}
    assert fold_quantized_sizes(sizes) == {"w_t": 84, "bias": 32}
    with pytest.raises(ValueError, match="min_cosine"):
        QuantizedValidationConfig(min_cosine=1.5)
    with pytest.raises(TypeError):
        QuantizedValidationConfig(0.9)                   # keyword-only


def _pair(got, want):
    from smp_export.validate import OutputPair

    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    return OutputPair("logits at [n, 4]", {"attention_mask": np.ones((len(want), 4), np.int64)}, got, want)


def test_a_swapped_near_tie_does_not_refuse_but_a_decisive_flip_does():
    from smp_export.reduced import _metrics, _shortfalls
    from smp_export.validate import QuantizedValidationConfig, ValidationConfig

    want = [[2.0, 1.99, -1.0], [3.0, 0.0, -3.0], [0.0, 2.0, -2.0]]        # row 0: a near tie (margin 0.01)
    tie_swapped = [[1.99, 2.0, -1.0], [3.0, 0.0, -3.0], [0.0, 2.0, -2.0]]
    config = ValidationConfig(quantized=QuantizedValidationConfig(min_top1=0.95, min_cosine=0.0))
    _, metrics = _metrics([_pair(tie_swapped, want)], True, config.quantized.tie_margin)
    assert metrics["top1_agreement"] == pytest.approx(2 / 3) and metrics["top1_decisive"] == 1.0
    assert metrics["near_ties"] == 1 and _shortfalls(metrics, config.quantized) == ([], None)
    decisive_flip = [[2.0, 1.99, -1.0], [0.0, 3.0, -3.0], [0.0, 2.0, -2.0]]
    _, metrics = _metrics([_pair(decisive_flip, want)], True, config.quantized.tie_margin)
    failures, field = _shortfalls(metrics, config.quantized)
    assert field == "--min-top1"
    assert "top-1 agreement 0.500000 < --min-top1 0.95 (1 near ties not counted" in failures[0]
    # tie_margin 0: every row counts, as before near ties were set apart.
    _, strict = _metrics([_pair(tie_swapped, want)], True, 0.0)
    assert strict["near_ties"] == 0 and _shortfalls(strict, config.quantized)[1] == "--min-top1"


def test_an_outlier_logit_does_not_excuse_a_flip_and_a_third_label_never_is():
    from smp_export.reduced import _metrics, _shortfalls
    from smp_export.validate import QuantizedValidationConfig

    q = QuantizedValidationConfig(min_top1=0.95, min_cosine=0.0)
    # One very low logit inflates a standard deviation, not the top-minus-median scale: a margin of 1 counts.
    _, m = _metrics([_pair([[4.0, 5.0, -100.0]], [[5.0, 4.0, -100.0]])], True, q.tie_margin)
    assert m["near_ties"] == 0 and m["top1_decisive"] == 0.0 and _shortfalls(m, q)[1] == "--min-top1"
    # A near tie in fp32 whose int8 argmax is a third label is a real flip.
    want = [[2.0, 1.99, -1.0], [3.0, 0.0, -3.0], [0.0, 2.0, -2.0]]
    third = [[1.0, 1.0, 2.5], [3.0, 0.0, -3.0], [0.0, 2.0, -2.0]]
    _, m = _metrics([_pair(third, want)], True, q.tie_margin)
    assert m["near_ties"] == 0 and m["top1_decisive"] == pytest.approx(2 / 3)


def test_all_rows_near_ties_is_a_failure_not_a_pass():
    from smp_export.reduced import _metrics, _shortfalls
    from smp_export.validate import QuantizedValidationConfig

    q = QuantizedValidationConfig(min_cosine=0.0, tie_margin=2.0)
    _, m = _metrics([_pair([[1.0, 1.2, 0.0]], [[1.2, 1.0, 0.0]])], True, q.tie_margin)
    failures, field = _shortfalls(m, q)
    assert field == "--tie-margin" and "all 1 validation rows are near ties" in failures[0]
