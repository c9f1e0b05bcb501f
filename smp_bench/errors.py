"""Typed errors of the measuring stage (``smp_bench``)."""

from __future__ import annotations

from runtime.errors import SmpError


class BenchmarkError(SmpError):
    """The benchmark cannot run as configured (option, missing baseline, unreadable source)."""


class DataError(SmpError):
    """A data file (evaluation or training: the trainer reads its data through ``smp_bench.data``)
    is missing, empty or malformed."""


class PlotError(BenchmarkError):
    """The plot cannot be drawn (matplotlib missing, nothing to plot)."""
