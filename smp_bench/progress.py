"""tqdm progress bars on stderr when it is a terminal, or silent stand-ins (``--no-progress``,
no tqdm, output to a file or pipe)."""

from __future__ import annotations

import sys
from typing import Any, Iterator, Sequence


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int, desc: str, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


def bar_iter(items: Sequence[Any], desc: str, enabled: bool) -> Iterator[Any]:
    progress = bar(len(items), desc, enabled)
    for item in items:
        yield item
        progress.update()
    progress.close()


class TaskBars:
    """A ``smp_export.progress`` listener: one bar per task (export steps, autotune's linears),
    opened at its first report and closed when it is done; silent where ``bar`` is."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars: dict[str, Any] = {}
        self.done: dict[str, int] = {}

    def __call__(self, task: str, done: int, total: int, detail: str) -> None:
        if task not in self.bars:
            self.bars[task], self.done[task] = bar(total, task, self.enabled), 0
        progress = self.bars[task]
        if hasattr(progress, "set_postfix_str"):
            progress.set_postfix_str(detail, refresh=False)
        progress.update(done - self.done[task])
        self.done[task] = done
        if done >= total:
            self.bars.pop(task).close()
            self.done.pop(task)

    def close(self) -> None:
        for progress in self.bars.values():
            progress.close()
        self.bars.clear()
        self.done.clear()
