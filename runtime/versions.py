"""Versions of everything that shaped an export or a measurement."""

from __future__ import annotations

import platform
from importlib import metadata

_PACKAGES = ("smp-export", "torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu",
             "numpy", "scipy", "optimum-onnx")


def collect_versions() -> dict[str, str]:
    """Installed versions of the relevant packages (absent ones are left out) and Python."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
