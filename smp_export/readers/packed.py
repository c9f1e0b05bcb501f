"""Official SMP release format: a packed-bit ``.npy`` mask plus a dense base BERT directory.

SMP's ``to_mask.py`` sorts the full score names (``bert.encoder.layer.{i}.<module>.mask_scores``)
lexicographically -- so ``layer.1, layer.10, layer.11, layer.2, ...`` -- flattens each
boolean mask row-major, concatenates them and stores ``np.packbits`` of the result (most
significant bit first, the last byte zero-padded).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..arch import BERT, Architecture
from ..checkpoint import PrunedCheckpoint
from ..errors import CheckpointError, MaskError
from .base import ReadOptions, register
from .files import SCORE_SUFFIX, split_scores
from .model_dir import assemble, read_model_dir

logger = logging.getLogger(__name__)


def official_mask_key(weight_name: str, arch: Architecture = BERT) -> str:
    """``encoder.layer.0.attention.self.query.weight`` -> ``bert.encoder...query.mask_scores``
    (another architecture: its own full name, e.g. ``distilbert.transformer...q_lin.mask_scores``)."""
    return arch.model_prefix + arch.own_name(weight_name).removesuffix(".weight") + SCORE_SUFFIX


def packed_order(weight_names: Sequence[str], arch: Architecture = BERT) -> list[str]:
    """Canonical weight names in the bit order of the packed file (sorted official keys)."""
    return sorted(weight_names, key=lambda name: official_mask_key(name, arch))


def pack_masks(masks: Mapping[str, torch.Tensor], arch: Architecture = BERT) -> np.ndarray:
    """The official packed-bit vector of boolean masks keyed by canonical linear weight names."""
    order = packed_order(list(masks), arch)
    bits = np.concatenate([masks[name].detach().flatten().bool().numpy() for name in order])
    return np.packbits(bits)


def load_packed_array(mask_file: Path) -> np.ndarray:
    """The packed uint8 vector of ``mask_file``; MaskError naming the file if unusable."""
    mask_file = Path(mask_file)
    if not mask_file.is_file():
        raise CheckpointError("mask file not found", path=mask_file, field="--mask")
    try:
        _check_npy_size(mask_file)
        packed = np.load(mask_file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise MaskError(f"cannot read the packed mask (corrupt .npy?): {exc}", path=mask_file,
                        field="--mask") from exc
    if not isinstance(packed, np.ndarray):
        packed.close()
        raise MaskError("expected a single .npy array, got an .npz archive", path=mask_file, field="--mask")
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise MaskError(f"expected a 1-D uint8 array of packed bits, got {packed.dtype} with shape "
                        f"{packed.shape}", path=mask_file, field="--mask")
    return packed


def _check_npy_size(path: Path) -> None:
    """MaskError when a ``.npy`` header claims more data than the file holds (checked before
    numpy allocates the array the header describes); .npz archives are left to ``np.load``."""
    with open(path, "rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            return
        handle.seek(0)
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(handle)
        claimed = math.prod(shape) * dtype.itemsize
        held = path.stat().st_size - handle.tell()
    if claimed > held:
        raise MaskError(f"the .npy header claims shape {shape} ({claimed} bytes of {dtype}), the file holds "
                        f"{held} bytes after its header", path=path, field="--mask")


def unpack_masks(packed: np.ndarray, shapes: Mapping[str, tuple[int, ...]], *, path: Path,
                 arch: Architecture = BERT) -> dict[str, torch.Tensor]:
    """Split packed bits into boolean masks, in ``packed_order`` of ``shapes``' names."""
    order = packed_order(list(shapes), arch)
    bits = sum(math.prod(shapes[name]) for name in order)
    need = (bits + 7) // 8
    if packed.size != need:
        raise MaskError(f"wrong bit count: the model's {len(order)} masked linears need {bits} bits "
                        f"({need} bytes), the file holds {packed.size * 8} bits ({packed.size} bytes)",
                        path=path, field="--mask")
    flat = np.unpackbits(packed)
    if flat[bits:].any():
        raise MaskError(f"padding bits after bit {bits} are not zero: the mask was packed for another "
                        "model shape or order", path=path, field="--mask")
    masks: dict[str, torch.Tensor] = {}
    start = 0
    for name in order:
        size = math.prod(shapes[name])
        chunk = flat[start:start + size].astype(bool)
        masks[name] = torch.from_numpy(chunk.copy()).view(shapes[name])
        start += size
    return masks


class PackedReader:
    """A dense base model directory plus SMP's packed-bit ``.npy`` mask (``--mask``)."""

    name = "packed"
    description = "official SMP release: dense base model + packed-bit .npy mask (--mask)"

    def detect(self, path: Path, options: ReadOptions) -> bool:
        return options.mask_file is not None

    def read(self, path: Path, options: ReadOptions) -> PrunedCheckpoint:
        if options.mask_file is None:
            raise CheckpointError("the packed format needs --mask (the .npy of packed mask bits)",
                                  path=path, field="--mask")
        mask_file = Path(options.mask_file)
        packed = load_packed_array(mask_file)
        model = read_model_dir(path, limits=options.limits)
        weights, scores = split_scores(model.tensors)
        if scores:
            logger.warning("base model holds %d mask_scores tensors; the packed mask replaces them", len(scores))
        names = model.linear_names(weights)
        masks = unpack_masks(packed, {n: tuple(weights[n].shape) for n in names}, path=mask_file, arch=model.arch)
        ckpt = assemble(model, weights, {name: masks[name] for name in names}, options, source_format=self.name,
                        method="packed-bits", metadata={"mask_file": str(mask_file)}, keep_is_density=True)
        logger.info("read packed mask %s for %s: density %.4f", mask_file, path, ckpt.density())
        return ckpt


register(PackedReader())
