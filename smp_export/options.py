"""How to export (``ExportOptions``): the variant and the options of each stage, grouped."""

from __future__ import annotations

from dataclasses import dataclass, field

from .autotune import AutotuneConfig
from .formats.compact import CompactionConfig
from .graph import GraphOptions
from .validate import ValidationConfig

FP32, INT8, FP16 = "fp32", "int8", "fp16"
# int8: onnxruntime dynamic quantization or the int8 kernels (smp_export.int8); fp16: float16
# weights and activations for GPUs (smp_export.fp16).
PRECISIONS: tuple[str, ...] = (FP32, INT8, FP16)
CPU_PRECISIONS: tuple[str, ...] = (FP32, INT8)   # what is faster on a CPU (fp16 runs there, slowly)


@dataclass(frozen=True)
class ExportOptions:
    """How to export. ``weights`` names the variant (``smp_export.variants.VARIANTS``: dense,
    sparse-initializer, compact, sparse-kernel, auto); ``attention`` how each attention core
    is emitted (``onnx``, ``mha``, ``smp``; None: the variant's default); ``precision`` what the
    weights are stored as (``PRECISIONS``; the variant declares which it supports)."""

    weights: str = "sparse-initializer"
    attention: str | None = None
    precision: str = FP32
    validate: bool = True
    overwrite: bool = False
    tokenizer: bool = True                  # copy and round-trip the tokenizer files (False: leave them out)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    compaction: CompactionConfig = field(default_factory=CompactionConfig)
    graph: GraphOptions = field(default_factory=GraphOptions)
    autotune: AutotuneConfig = field(default_factory=AutotuneConfig)
