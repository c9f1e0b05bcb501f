"""The fp16 precision (``--precision fp16``): float16 weights and activations for GPUs, where
tensor cores run fp16 and compacted fp16 matrices are what gets faster.

``convert_fp16`` rewrites ``model.onnx`` in the export's temporary directory with
onnxruntime's own converter (``onnxruntime.transformers.float16``): every float initializer and
activation becomes float16, except the ops in ``KEEP_FP32``, which get Casts around them:

    MatMul(fp16) -> Add(fp16) -> [Cast fp32] LayerNormalization [Cast fp16] -> ...
    scores(fp16) -> [Cast fp32] Softmax [Cast fp16] -> MatMul(fp16)

LayerNormalization's mean and variance over 384 values and softmax's exponentials are where
fp16 loses accuracy; everything else keeps about three decimal digits. The graph's inputs and
outputs stay as they were (``keep_io_types``: int64 ids in, float32 logits or hidden states
out), so the runtime contract, smp-serve and Triton see the same model. onnxruntime's CPU
provider runs fp16 graphs (slowly), so the export is validated here like int8: per-row cosine
and top-1 against the masked fp32 model (``smp_export.reduced``, ``ValidationConfig.fp16``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import onnx
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

from .errors import ExportError

logger = logging.getLogger(__name__)

KEEP_FP32 = ("LayerNormalization", "SkipLayerNormalization", "Softmax")
#: The converter's own list (Max, Min, Range, TopK, ...: the prototype head's norm clamp is a Max
#: with a 1e-12 floor, which fp16 would flush) plus ours: passing a list replaces the default.
BLOCK_LIST: tuple[str, ...] = (*DEFAULT_OP_BLOCK_LIST, *KEEP_FP32)
#: What ``convert_fp16`` does (recorded in the manifest's export_options).
CONVERSION: dict[str, Any] = {"method": "onnxruntime.transformers.float16.convert_float_to_float16",
                              "keep_io_types": True, "op_block_list": list(BLOCK_LIST)}


def convert_fp16(path: Path) -> onnx.ModelProto:
    """Convert the fp32 model at ``path`` to fp16 in place (``CONVERSION``); returns the new model.
    ExportError naming ``--precision`` when the converter fails or leaves no fp16 weight."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    path = Path(path)
    staged = path.with_name(f".fp16-{path.name}")
    try:
        model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True, op_block_list=list(BLOCK_LIST),
                                         disable_shape_infer=False)
        OnnxModel(model).topological_sort()     # the converter appends its Casts at the end of the graph
        onnx.save(model, str(staged))
        onnx.checker.check_model(str(staged))
        os.replace(staged, path)
    except (OSError, ValueError, RuntimeError, KeyError, onnx.checker.ValidationError) as exc:
        raise ExportError(f"cannot convert the model to fp16: {type(exc).__name__}: {exc}", path=path,
                          field="--precision") from exc
    finally:
        staged.unlink(missing_ok=True)
    halves = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    if halves == 0:
        raise ExportError("fp16 conversion left no float16 weight", path=path, field="--precision")
    logger.info("converted %s to fp16 (%d float16 initializers)", path, halves)
    return model
