"""Execution-provider selection for onnxruntime, with typed errors instead of silent fallbacks."""

from __future__ import annotations

from types import ModuleType

from .errors import DeviceError

DEVICES = ("cpu", "cuda")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


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
