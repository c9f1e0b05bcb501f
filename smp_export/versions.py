"""Versions of everything that shaped an export or a measurement, and the exporter's own digest."""

from __future__ import annotations

import hashlib
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from runtime.kernels import KernelLibraryError, custom_op_library_path

_PACKAGES = ("smp-export", "torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu",
             "numpy", "scipy", "optimum-onnx")
SOURCE_DIGEST_KEY = "smp-export-source"
_PACKAGE_DIR = Path(__file__).resolve().parent


def collect_versions() -> dict[str, str]:
    """Installed versions of the relevant packages (absent ones are left out) and Python."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@lru_cache(maxsize=1)
def source_digest() -> str:
    """sha1 (12 hex digits) of the exporter's Python sources and the kernel library's bytes.

    An editable install keeps the same version string while the code changes; this digest
    tells a cached export made by other code (``smp-bench``'s cache) from a current one.
    """
    digest = hashlib.sha1()
    for path in sorted(_PACKAGE_DIR.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE_DIR.parent)).encode())
        digest.update(path.read_bytes())
    try:
        digest.update(custom_op_library_path().read_bytes())
    except KernelLibraryError:
        digest.update(b"no-kernel-library")
    return digest.hexdigest()[:12]
