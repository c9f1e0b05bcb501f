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

``validate_int8`` (``smp_export.reduced``) compares with the masked fp32 model on the inputs the
fp32 validation uses (``validate.checkpoint_pairs``) and holds the export to
``QuantizedValidationConfig``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx

from .errors import ExportError

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
