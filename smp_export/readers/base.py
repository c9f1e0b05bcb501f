"""What a reader is (``Reader``), what it may be told (``ReadOptions``), and the registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..arch.limits import DEFAULT_LIMITS, ConfigLimits
from ..checkpoint import PrunedCheckpoint


@dataclass(frozen=True)
class ReadOptions:
    """Everything a reader may need beyond the path. ``None`` means 'not given'."""

    keep: float | None = None               # final keep ratio (SMP); 1 - sparsity
    smp_s: bool | None = None               # force SMP-S (True) / SMP-L (False); None: auto
    smp_s_temperature: float | None = None  # p in sigmoid(S / p); None: checkpoint's, else 1
    threshold: float | None = None          # movement pruning threshold / keep ratio
    mask_file: Path | None = None           # packed-bit .npy mask (official SMP release)
    label_words: tuple[str, ...] | None = None  # SMP head label words or token ids
    limits: ConfigLimits = DEFAULT_LIMITS   # largest config.json sizes accepted
    granularity: str | None = None          # claimed mask structure, checked (smp_export.structure)


class Reader(Protocol):
    """``detect``: is this directory mine? ``read``: the ``PrunedCheckpoint`` it holds."""

    name: str
    description: str

    def detect(self, path: Path, options: ReadOptions) -> bool: ...

    def read(self, path: Path, options: ReadOptions) -> PrunedCheckpoint: ...


REGISTRY: dict[str, Reader] = {}
# Detection priority of the built-in readers (the specific before the general; ``dense`` is
# the fallback). Readers registered by others follow, in registration order.
BUILTIN_ORDER = ("shipped", "packed", "smp", "movement", "torch_prune", "dense")


def register(reader: Reader) -> Reader:
    """Add a reader (built-ins are tried first, in ``BUILTIN_ORDER``; others after, in order)."""
    if reader.name in REGISTRY:
        raise ValueError(f"reader {reader.name!r} registered twice")
    REGISTRY[reader.name] = reader
    return reader
