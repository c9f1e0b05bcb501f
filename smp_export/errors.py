"""Typed errors of the export stage. Each one names the file and the field it is about."""

from __future__ import annotations

from pathlib import Path

from runtime.errors import SmpError


class SmpExportError(SmpError):
    """The export stage: a message plus, where known, the file and the field at fault."""


class CheckpointError(SmpExportError):
    """The input checkpoint is missing, unreadable, corrupt or inconsistent."""


class UnknownFormatError(CheckpointError):
    """No reader recognises the input (or a forced format does not exist)."""


class MaskError(CheckpointError):
    """A mask or score tensor is invalid (shape, bit count, NaN/inf, keep ratio)."""


class ExportError(SmpExportError):
    """The export itself failed (graph construction, output directory, ...)."""


class OutputExistsError(ExportError):
    """The output directory exists and overwriting was not asked for."""


class ValidationError(ExportError):
    """The exported model disagrees with the masked PyTorch model.

    ``failures`` lists every problem found (names, then shapes, then values);
    ``max_abs_diff`` is the largest absolute difference seen over all compared outputs;
    ``field``: the threshold option an int8 export fell short of (``--min-cosine``, ...).
    """

    def __init__(self, failures: list[str], *, max_abs_diff: float | None = None,
                 path: str | Path | None = None, field: str | None = None):
        self.failures = list(failures)
        self.max_abs_diff = max_abs_diff
        detail = "; ".join(self.failures)
        diff = f" (max |diff| = {max_abs_diff:.3g})" if max_abs_diff is not None else ""
        super().__init__(f"validation failed{diff}: {detail}", path=path, field=field)
