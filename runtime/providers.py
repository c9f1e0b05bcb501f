"""Execution-provider selection for onnxruntime, with typed errors instead of silent fallbacks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import DeviceError

DEVICES = ("cpu", "cuda")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def import_onnxruntime() -> ModuleType:
    """Import onnxruntime or raise a DeviceError saying which extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise DeviceError("onnxruntime is not installed: install the cpu extra (onnxruntime) or the "
                          "gpu extra (onnxruntime-gpu), never both") from exc
    return onnxruntime


def select_providers(device: str) -> list[str]:
    """Providers for ``device`` ('cpu' or 'cuda'), in priority order.

    'cuda' is refused unless this onnxruntime build has the CUDA provider, rather than
    letting onnxruntime fall back to the CPU unnoticed.
    """
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; --device must be one of {', '.join(DEVICES)}",
                          field="--device")
    if device == "cpu":
        return [CPU]
    available = import_onnxruntime().get_available_providers()
    if CUDA not in available:
        raise DeviceError("CUDA requested but this onnxruntime build has no CUDAExecutionProvider "
                          f"(available: {', '.join(available)}); install the gpu extra "
                          "(onnxruntime-gpu) instead of onnxruntime — never both", field="--device")
    return [CUDA, CPU]


@dataclass(frozen=True)
class TensorRTOptions:
    """TensorRT in front of CUDA (``--tensorrt``): engines cached in ``cache_dir`` (the export
    directory's ``trt-cache/``, so a restart reuses them), fp16 tactics for an fp16 export and
    sparse tactics for weights that are 2:4 (TensorRT takes 2:4 from the dense weights)."""

    cache_dir: Path
    fp16: bool = False
    sparsity: bool = False

    def provider(self) -> tuple[str, dict[str, Any]]:
        return TENSORRT, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(self.cache_dir),
                          "trt_fp16_enable": self.fp16, "trt_sparsity_enable": self.sparsity}


def gpu_providers(tensorrt: TensorRTOptions | None = None) -> list[Any]:
    """``select_providers("cuda")``, with TensorRT first when asked for; DeviceError when this
    onnxruntime build has no TensorRT provider (never a silent run without it)."""
    providers: list[Any] = select_providers("cuda")
    if tensorrt is None:
        return providers
    available = import_onnxruntime().get_available_providers()
    if TENSORRT not in available:
        raise DeviceError(f"TensorRT requested but this onnxruntime build has no {TENSORRT} (available: "
                          f"{', '.join(available)}); install onnxruntime-gpu with TensorRT", field="--tensorrt")
    return [tensorrt.provider(), *providers]
