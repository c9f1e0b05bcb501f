"""Typed errors of the training stage. Each one names the file and the field it is about, when known."""

from __future__ import annotations

from runtime.errors import SmpError


class SmpTrainError(SmpError):
    """The training stage: a message plus, where known, the file and the field at fault."""


class TrainConfigError(SmpTrainError):
    """An option is out of range or options contradict each other."""


class TrainDataError(SmpTrainError):
    """Training / evaluation data are empty, or hold labels the head does not know."""


class HeadError(SmpTrainError):
    """The requested head cannot be built on this checkpoint (no MLM head, bad label words)."""


class ResumeError(SmpTrainError):
    """The output directory cannot be resumed from, or would be overwritten."""
