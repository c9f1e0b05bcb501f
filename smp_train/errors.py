"""Typed errors of smp_train. Each one names the file and the field it is about, when known."""

from __future__ import annotations

from pathlib import Path


class SmpTrainError(Exception):
    """Base class: a message plus, where known, the file and the field at fault."""

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = field
        where = [w for w in (self.path, f"field '{field}'" if field else None) if w]
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class TrainConfigError(SmpTrainError):
    """An option is out of range or options contradict each other."""


class TrainDataError(SmpTrainError):
    """Training / evaluation data are empty, or hold labels the head does not know."""


class HeadError(SmpTrainError):
    """The requested head cannot be built on this checkpoint (no MLM head, bad label words)."""


class ResumeError(SmpTrainError):
    """The output directory cannot be resumed from, or would be overwritten."""
