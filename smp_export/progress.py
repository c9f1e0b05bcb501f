"""Progress of long export work, for whoever listens: nothing by default (logs and CI stay
quiet); ``smp-bench`` draws bars on a terminal (``smp_bench.progress``).

::

    with listening(lambda task, done, total, detail: ...):
        export_onnx(...)        # ("export", 0..6, 6, "validating ..."), ("autotune", i, n, "<linear>")

The listener lives in a context variable, so no option or signature carries it and a thread
started elsewhere reports nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Listener = Callable[[str, int, int, str], None]
_LISTENER: ContextVar[Listener | None] = ContextVar("smp_export_progress", default=None)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send the progress of the work inside the block to ``listener(task, done, total, detail)``."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def report(task: str, done: int, total: int, detail: str = "") -> None:
    """``done`` of ``total`` steps of ``task`` are finished (``detail``: what comes next)."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(task, done, total, detail)


class Steps:
    """Numbered steps of one task: ``advance(detail)`` reports the previous one done."""

    def __init__(self, task: str, total: int):
        self.task, self.total, self.done = task, total, 0

    def advance(self, detail: str) -> None:
        report(self.task, self.done, self.total, detail)
        self.done += 1

    def finish(self) -> None:
        report(self.task, self.total, self.total, "done")
