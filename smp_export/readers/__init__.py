"""Checkpoint readers: one module per input format behind one small interface.

A reader answers two questions: ``detect(path, options)`` (is this mine?) and
``read(path, options)`` (-> ``PrunedCheckpoint``). Format detection walks the registry in
priority order; ``--input-format`` picks a reader by name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..checkpoint import PrunedCheckpoint
from ..errors import CheckpointError, UnknownFormatError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadOptions:
    """Everything a reader may need beyond the path. ``None`` means 'not given'."""

    keep: float | None = None               # final keep ratio (SMP); 1 - sparsity
    smp_s: bool | None = None               # force SMP-S (True) / SMP-L (False); None: auto
    smp_s_temperature: float | None = None  # p in sigmoid(S / p); None: checkpoint's, else 1
    threshold: float | None = None          # movement pruning threshold / keep ratio
    mask_file: Path | None = None           # packed-bit .npy mask (official SMP release)
    label_words: tuple[str, ...] | None = None  # SMP head label words or token ids


class Reader(Protocol):
    name: str
    description: str

    def detect(self, path: Path, options: ReadOptions) -> bool: ...

    def read(self, path: Path, options: ReadOptions) -> PrunedCheckpoint: ...


_REGISTRY: dict[str, Reader] = {}
# Detection priority of the built-in readers (the specific before the general; ``dense`` is
# the fallback). Readers registered by others follow, in registration order.
_BUILTIN_ORDER = ("shipped", "packed", "smp", "movement", "torch_prune", "dense")


def register(reader: Reader) -> Reader:
    """Add a reader (built-ins are tried first, in ``_BUILTIN_ORDER``; others after, in order)."""
    if reader.name in _REGISTRY:
        raise ValueError(f"reader {reader.name!r} registered twice")
    _REGISTRY[reader.name] = reader
    return reader


def available_formats() -> list[str]:
    """Reader names in detection priority order."""
    _load_builtin_readers()
    builtin = [name for name in _BUILTIN_ORDER if name in _REGISTRY]
    return builtin + [name for name in _REGISTRY if name not in _BUILTIN_ORDER]


def get_reader(name: str) -> Reader:
    _load_builtin_readers()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownFormatError(
            f"unknown input format {name!r}; known: {', '.join(available_formats())}", field="--input-format"
        ) from None


def detect_format(path: Path, options: ReadOptions = ReadOptions()) -> str:
    """Name of the first registered reader that recognises ``path``."""
    _load_builtin_readers()
    path = Path(path)
    if not path.exists():
        raise CheckpointError("model directory does not exist", path=path)
    if not path.is_dir():
        raise CheckpointError("model path is not a directory", path=path)
    for name in available_formats():
        if _REGISTRY[name].detect(path, options):
            logger.info("detected input format %s for %s", name, path)
            return name
    hint = "" if (path / "config.json").is_file() else " (it has no config.json)"
    raise UnknownFormatError(
        f"no reader recognises this directory{hint}; known formats: {', '.join(available_formats())}; "
        "use --input-format to force one",
        path=path,
    )


def read_checkpoint(path: str | Path, options: ReadOptions = ReadOptions(), *,
                    input_format: str | None = None) -> PrunedCheckpoint:
    """Detect (or take) the format of ``path`` and read it."""
    path = Path(path)
    name = input_format or detect_format(path, options)
    reader = get_reader(name)
    if not path.is_dir():
        raise CheckpointError("model directory does not exist", path=path)
    return reader.read(path, options)


def _load_builtin_readers() -> None:
    # Import for the side effect of registration.
    from . import dense, movement, packed, shipped, smp, torch_prune  # noqa: F401
