"""The one error root of the project, and the errors of the runtime stage.

``SmpError`` is the root: every error the project raises on purpose derives from it, names the
file and the field where known, and carries the exit code every CLI maps it to. Each stage has
its subclass: ``RuntimeStageError`` here (loading, running and serving an export),
``smp_export.errors.SmpExportError``, ``smp_train.errors.SmpTrainError`` and
``smp_bench.errors.BenchmarkError``. It lives in ``runtime`` because every other package may
import ``runtime`` and ``runtime`` imports none of them.
"""

from __future__ import annotations

from pathlib import Path


class SmpError(Exception):
    """Root: a message plus, where known, the file and the field at fault."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = field
        where = [w for w in (self.path, f"field '{field}'" if field else None) if w]
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class RuntimeStageError(SmpError):
    """The runtime stage: an export cannot be loaded, run or served."""


class ManifestError(RuntimeStageError):
    """manifest.json is missing, unreadable or does not follow the schema."""


class DeviceError(RuntimeStageError):
    """The requested device cannot be served by the installed onnxruntime build."""


class TokenizerError(RuntimeStageError):
    """The export directory has no usable tokenizer files."""


class SessionError(RuntimeStageError):
    """An export directory or its model cannot be loaded or run."""


class CustomOpError(SessionError):
    """The model uses an operator domain that no registered custom-op library provides."""


class ServeConfigError(RuntimeStageError):
    """smp-serve was configured with values it cannot serve (limits, model name, API key file)."""


class TritonRepositoryError(RuntimeStageError):
    """A Triton model repository cannot be written for this export."""


class RequestError(RuntimeStageError):
    """An inference request is invalid; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 400, field: str | None = None):
        super().__init__(message, field=field)
        self.status = status


class QueueFullError(RequestError):
    """The batching queue is full: answer 503 with Retry-After."""

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message, status=503)
        self.retry_after_s = retry_after_s


class ModelOutputError(RuntimeStageError):
    """The model produced an output the server cannot answer with (NaN or infinity): HTTP 500."""

    status = 500
