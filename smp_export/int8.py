"""The int8 precision (``--precision int8``): onnxruntime's own dynamic quantization of the
saved fp32 model, and the validation fit for it.

``quantize_int8`` runs ``onnxruntime.quantization.quantize_dynamic`` on ``model.onnx`` in the
export's temporary directory (the final ``model.onnx`` is the quantized one): every MatMul with a
constant weight becomes ``DynamicQuantizeLinear`` + ``MatMulInteger`` (int8 weights, a scale and
zero point per output channel, uint8 activations quantized per call); the embeddings ``Gather``
and the attention MatMuls of two activations stay fp32. Settings (``QUANTIZATION``), measured
on the shipped SMP-S MiniLM (``checkpoints/minilm-bbc-smp-s-keep0.10``, dense and compact
exports), batch 32 x 128 of BBC News test texts, 2 intra-op threads, onnxruntime 1.32, on
this sandbox's 2 shared cores of a Xeon that *has* AVX512-VNNI / AVX-VNNI (15 timed runs after
3 warm-up, p50, not interleaved: +-15% noise); cosine and top-1 against the masked fp32
PyTorch model on 256 BBC test texts:

    setting                      p50 ms   row cosine mean / min   top-1
    fp32 (dense)                 1216     1.00000 / 1.00000       100%
    per-tensor                    638     0.99765 / 0.97532       98.4%
    per-tensor, reduce_range      622     0.99247 / 0.94324       96.9%
    per-channel                   614     0.99972 / 0.99789       99.2%   <- chosen
    per-channel, reduce_range     643     0.99976 / 0.99747       99.6%

(compact: the same within noise; this checkpoint has no dead heads or neurons). Per-channel
costs nothing in speed and is what keeps the worst row near 0.998; ``reduce_range`` (7-bit
weights, against u8*s8 saturation on AVX2 without VNNI) bought nothing here, where VNNI does
not saturate, and costs a bit of precision, so it is off. A machine without VNNI was not
available to measure; there, ``reduce_range`` is what onnxruntime suggests trying.

``validate_int8`` compares with the masked fp32 model on the inputs the fp32 validation uses
(``validate.checkpoint_pairs``) and holds the export to ``QuantizedValidationConfig``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from runtime.contract import LOGITS
from runtime.manifest import ValidationRecord

from .checkpoint import PrunedCheckpoint
from .errors import ExportError, ValidationError
from .validate import OutputPair, ValidationConfig, checkpoint_pairs

logger = logging.getLogger(__name__)

#: What ``quantize_int8`` asks of ``quantize_dynamic`` (recorded in the manifest's export_options).
QUANTIZATION: dict[str, Any] = {"method": "onnxruntime.quantize_dynamic", "weight_type": "QInt8",
                                "per_channel": True, "reduce_range": False, "op_types": ["MatMul"]}
#: What the kernel variants' int8 (``ai.smp.SparseLinearInt8``) does instead, for the manifest.
KERNEL_QUANTIZATION: dict[str, Any] = {"method": "ai.smp.SparseLinearInt8", "weights": "int8, symmetric per output row",
                                       "activations": "int8, symmetric per token, inside the node",
                                       "accumulation": "int32",
                                       "attention": "ai.smp.Attention precision=int8: Q, K per row, V per column, "
                                                    "7-bit softmax weights, int32 sums, softmax fp32",
                                       "other_ops": "fp32"}
#: The initializers quantize_dynamic writes for a weight ``W``: ``W_quantized``, its scale and zero point.
_PARTS = ("_quantized", "_scale", "_zero_point")


class _DropPreprocessHint(logging.Filter):
    """quantize_dynamic warns on the root logger to run its pre-processing (shape inference for
    static quantization); dynamic MatMul quantization does not need it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _quiet_root() -> Iterator[None]:
    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(hint)


def quantize_int8(path: Path) -> onnx.ModelProto:
    """Quantize the fp32 model at ``path`` in place (``QUANTIZATION``); returns the new model.
    ExportError naming ``--precision`` when onnxruntime cannot quantize it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = Path(path)
    staged = path.with_name(f".int8-{path.name}")
    try:
        with _quiet_root():
            quantize_dynamic(path, staged, weight_type=QuantType.QInt8, per_channel=QUANTIZATION["per_channel"],
                             reduce_range=QUANTIZATION["reduce_range"],
                             op_types_to_quantize=list(QUANTIZATION["op_types"]),
                             extra_options={"MatMulConstBOnly": True})
        os.replace(staged, path)
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path))
    except (OSError, ValueError, RuntimeError, KeyError, onnx.checker.ValidationError) as exc:
        raise ExportError(f"onnxruntime cannot quantize the model to int8: {type(exc).__name__}: {exc}",
                          path=path, field="--precision") from exc
    finally:
        staged.unlink(missing_ok=True)
    ops = {n.op_type for n in model.graph.node}
    logger.info("quantized %s to int8 (%d MatMulInteger)", path, sum(n.op_type == "MatMulInteger"
                                                                     for n in model.graph.node))
    if "MatMulInteger" not in ops:
        raise ExportError("int8 quantization left no MatMul quantized", path=path, field="--precision")
    return model


def fold_quantized_sizes(sizes: Mapping[str, int]) -> dict[str, int]:
    """Initializer bytes with each quantized weight's parts (int8 values, scales, zero points)
    summed under the fp32 weight's name, as the manifest's per-layer ``bytes`` look them up."""
    out = dict(sizes)
    for name in [n for n in sizes if n.endswith(_PARTS[0])]:
        base = name.removesuffix(_PARTS[0])
        out[base] = sum(out.pop(base + part, 0) for part in _PARTS)
    return out


def _row_cosines(got: np.ndarray, want: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Cosine similarity per output row: the last axis; hidden states of real tokens only."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    if got.ndim == 3:
        keep = mask.reshape(-1).astype(bool)
        got, want = got.reshape(-1, got.shape[-1])[keep], want.reshape(-1, want.shape[-1])[keep]
    got_norm, want_norm = np.linalg.norm(got, axis=-1), np.linalg.norm(want, axis=-1)
    cos = (got * want).sum(-1) / np.maximum(got_norm * want_norm, np.finfo(np.float64).tiny)
    cos[(got_norm == 0) & (want_norm == 0)] = 1.0          # both all-zero: the same row
    return np.nan_to_num(cos, nan=-1.0)                     # NaN outputs: as far apart as can be


def _top1(got: np.ndarray, want: np.ndarray, tie_margin: float) -> dict[str, float | int | None]:
    """Top-1 agreement of logits rows, over all rows and over the decisive ones: a row whose
    fp32 top-2 margin is below ``tie_margin`` x its logits' standard deviation is a near tie,
    which any rounding may swap (with |int8 - fp32| <= d per logit, a flip needs a margin <= 2d)."""
    agree = got.argmax(-1) == want.argmax(-1)
    if want.shape[-1] < 2:
        decisive = np.ones(len(want), bool)
    else:
        top2 = np.sort(want.astype(np.float64), -1)[:, -2:]
        decisive = top2[:, 1] - top2[:, 0] >= tie_margin * want.astype(np.float64).std(-1)
    return {"top1_agreement": float(agree.mean()) if agree.size else None,
            "top1_decisive": float(agree[decisive].mean()) if decisive.any() else None,
            "near_ties": int((~decisive).sum())}


def _metrics(pairs: Sequence[OutputPair], labels: bool,
             tie_margin: float) -> tuple[list[str], dict[str, float | int | None]]:
    """(failures that stop any comparison, the metrics over every shape's rows)."""
    failures: list[str] = []
    cosines, got_rows, want_rows, diffs = [], [], [], []
    for pair in pairs:
        if pair.got is None or pair.got.shape != pair.want.shape:
            failures.append(pair.error or f"{pair.where}: shape {list(pair.got.shape)} != reference "
                                          f"{list(pair.want.shape)}")
            continue
        cosines.append(_row_cosines(pair.got, pair.want, pair.inputs["attention_mask"]))
        if pair.got.size:
            diff = np.abs(pair.got.astype(np.float64) - pair.want.astype(np.float64)).max()
            diffs.append(float(np.inf if np.isnan(diff) else diff))
        if labels:
            got_rows.append(pair.got.reshape(-1, pair.got.shape[-1]))
            want_rows.append(pair.want.reshape(-1, pair.want.shape[-1]))
    rows = np.concatenate(cosines) if cosines else np.zeros(0)
    top1 = (_top1(np.concatenate(got_rows), np.concatenate(want_rows), tie_margin) if got_rows
            else {"top1_agreement": None, "top1_decisive": None, "near_ties": None})
    return failures, {
        "max_abs_diff": max(diffs) if diffs else None,
        "cosine_mean": float(rows.mean()) if rows.size else None,
        "cosine_min": float(rows.min()) if rows.size else None,
        **top1,
    }


def _shortfalls(metrics: Mapping[str, float | None], config: ValidationConfig) -> tuple[list[str], str | None]:
    """What falls below the thresholds, and the option of the first one."""
    q = config.quantized
    ties = f" ({metrics['near_ties']} near ties not counted, --tie-margin {q.tie_margin:g})" \
        if metrics.get("near_ties") else ""
    checks = [("cosine_min", q.min_cosine, "--min-cosine", "worst row cosine", ""),
              ("top1_decisive", q.min_top1, "--min-top1", "top-1 agreement", ties)]
    failures, field = [], None
    for key, threshold, option, what, note in checks:
        value = metrics[key]
        if value is not None and value < threshold:
            failures.append(f"{what} {value:.6f} < {option} {threshold:g}{note} (int8 vs the masked fp32 model)")
            field = field or option
    return failures, field


def validate_int8(model_path: Path, ckpt: PrunedCheckpoint, config: ValidationConfig = ValidationConfig(),
                  custom_op_libraries: Sequence[str] = ()) -> ValidationRecord:
    """The int8 validation: ``model_path`` against the masked fp32 model of ``ckpt`` on the fp32
    validation's inputs; per-row cosine (and top-1 agreement for logits) at least
    ``config.quantized``'s thresholds, else ValidationError naming the threshold option."""
    shapes, pairs = checkpoint_pairs(model_path, ckpt, config, custom_op_libraries)
    output = ckpt.head.output_name
    labels = config.check_labels and output == LOGITS
    failures, metrics = _metrics(pairs, labels, config.quantized.tie_margin)
    field = None
    if not failures:
        failures, field = _shortfalls(metrics, config)
    if failures:
        raise ValidationError(failures, max_abs_diff=metrics["max_abs_diff"], path=model_path, field=field)
    logger.info("validated int8 %s: row cosine mean %.5f min %.5f, top-1 %s (decisive rows %s, %s near ties) "
                "over shapes %s", model_path, metrics["cosine_mean"], metrics["cosine_min"],
                metrics["top1_agreement"], metrics["top1_decisive"], metrics["near_ties"], shapes)
    top1 = metrics["top1_agreement"]
    return ValidationRecord(passed=True, atol=None, max_abs_diff=metrics["max_abs_diff"], shapes=shapes,
                            labels_agree=None if top1 is None else top1 == 1.0,
                            cosine_mean=metrics["cosine_mean"], cosine_min=metrics["cosine_min"],
                            top1_agreement=top1, top1_decisive=metrics["top1_decisive"],
                            near_ties=metrics["near_ties"], min_cosine=config.quantized.min_cosine,
                            min_top1=config.quantized.min_top1 if labels else None,
                            tie_margin=config.quantized.tie_margin if labels else None)

