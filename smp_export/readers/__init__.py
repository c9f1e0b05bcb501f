"""Checkpoint readers: one module per input format behind one small interface (``base``).

A reader answers two questions: ``detect(path, options)`` (is this mine?) and
``read(path, options)`` (-> ``PrunedCheckpoint``). Format detection walks the registry in
priority order; ``--input-format`` picks a reader by name.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..checkpoint import PrunedCheckpoint
from ..errors import CheckpointError, MaskError, UnknownFormatError
from ..structure import Granularity
from ..structure_check import check_structure, structure_report
from . import dense, movement, packed, shipped, smp, torch_prune  # noqa: F401  (each registers itself)
from .base import BUILTIN_ORDER, REGISTRY, Reader, ReadOptions, register

logger = logging.getLogger(__name__)

__all__ = ["ReadOptions", "Reader", "available_formats", "detect_format", "get_reader", "read_checkpoint",
           "register"]


def available_formats() -> list[str]:
    """Reader names in detection priority order."""
    builtin = [name for name in BUILTIN_ORDER if name in REGISTRY]
    return builtin + [name for name in REGISTRY if name not in BUILTIN_ORDER]


def get_reader(name: str) -> Reader:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownFormatError(
            f"unknown input format {name!r}; known: {', '.join(available_formats())}", field="--input-format"
        ) from None


def _check_dir(path: Path) -> None:
    if not path.exists():
        raise CheckpointError("model directory does not exist", path=path)
    if not path.is_dir():
        raise CheckpointError("model path is not a directory", path=path)


def detect_format(path: Path, options: ReadOptions = ReadOptions()) -> str:
    """Name of the first registered reader that recognises ``path``."""
    path = Path(path)
    _check_dir(path)
    for name in available_formats():
        if REGISTRY[name].detect(path, options):
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
    reader = get_reader(input_format) if input_format else get_reader(detect_format(path, options))
    _check_dir(path)
    ckpt = reader.read(path, options)
    _check_claimed_structure(ckpt, path, options)
    return ckpt


def _check_claimed_structure(ckpt: PrunedCheckpoint, path: Path, options: ReadOptions) -> None:
    """The masks have the structure the checkpoint records and the one ``--granularity`` claims
    (the two must agree); record it and the units left per layer in the metadata."""
    claims = {}
    for field, claimed in (("smp.granularity", ckpt.metadata.get("granularity")),
                           ("--granularity", options.granularity)):
        if claimed is None:
            continue
        try:
            claims[field] = Granularity.parse(claimed)
        except MaskError as exc:
            raise MaskError(exc.message, path=path, field=field) from exc
    if len(set(claims.values())) > 1:
        raise MaskError(f"--granularity {claims['--granularity']} contradicts the checkpoint's recorded "
                        f"{claims['smp.granularity']}", path=path, field="--granularity")
    for field, g in claims.items():
        check_structure(g, ckpt.masks, ckpt.dims, path=path, field=field)
        ckpt.metadata["granularity"] = str(g)
    ckpt.metadata["structure"] = structure_report(ckpt.masks, ckpt.dims)
