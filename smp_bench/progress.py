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
