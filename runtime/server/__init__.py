"""smp-serve: the exported model behind the Open Inference Protocol (KServe v2 REST).

``ServeConfig`` says how; ``serve`` runs in the foreground, ``BackgroundServer`` in a thread;
``create_app`` is the aiohttp application; ``write_model_repository`` hands off to Triton.
Names are imported lazily, so the Triton writer works without aiohttp / prometheus_client.
Never imports smp_export or smp_train.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"create_app": "app", "ServeConfig": "config", "read_api_key": "config",
            "BackgroundServer": "runner", "load_session": "runner", "serve": "runner",
            "TritonOptions": "triton", "write_model_repository": "triton", "KServeOptions": "kserve"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
