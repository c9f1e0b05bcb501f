"""Typed errors of the runtime package."""

from __future__ import annotations

from pathlib import Path


class RuntimeErrorBase(Exception):
    """Base class; names the file and the field when known."""

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.field = field
        where = [w for w in (self.path, f"field '{field}'" if field else None) if w]
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class ManifestError(RuntimeErrorBase):
    """manifest.json is missing, unreadable or does not follow the schema."""


class DeviceError(RuntimeErrorBase):
    """The requested device cannot be served by the installed onnxruntime build."""


class TokenizerError(RuntimeErrorBase):
    """The export directory has no usable tokenizer files."""


class SessionError(RuntimeErrorBase):
    """An export directory or its model cannot be loaded or run."""


class CustomOpError(SessionError):
    """The model uses an operator domain that no registered custom-op library provides."""


class DataError(RuntimeErrorBase):
    """An evaluation data file is missing, empty or malformed."""


class ServeConfigError(RuntimeErrorBase):
    """smp-serve was configured with values it cannot serve (limits, model name, API key file)."""


class TritonRepositoryError(RuntimeErrorBase):
    """A Triton model repository cannot be written for this export."""


class RequestError(RuntimeErrorBase):
    """An inference request is invalid; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 400, field: str | None = None):
        super().__init__(message, field=field)
        self.status = status


class QueueFullError(RequestError):
    """The batching queue is full: answer 503 with Retry-After."""

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message, status=503)
        self.retry_after_s = retry_after_s
