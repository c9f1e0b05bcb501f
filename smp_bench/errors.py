"""Typed errors of the measuring stage (``smp_bench``)."""

from __future__ import annotations

from runtime.errors import SmpError


class BenchmarkError(SmpError):
    """The benchmark cannot run as configured (option, missing baseline, unreadable source)."""


class DataError(BenchmarkError):
    """An evaluation or training data file is missing, empty or malformed."""


class PlotError(BenchmarkError):
    """The plot cannot be drawn (matplotlib missing, nothing to plot)."""
