"""Magnitude pruning of a dense model into SMP's packed-bit mask file (the lab's baselines)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .checkpoint import linear_weight_names
from .masks import check_keep_ratio, magnitude_mask
from .readers import read_checkpoint
from .readers.packed import pack_masks

logger = logging.getLogger(__name__)


def write_magnitude_mask_file(model_dir: str | Path, keep: float, out_path: str | Path) -> Path:
    """Magnitude-prune every encoder linear of ``model_dir`` to ``keep`` (per matrix) and
    save the masks in the official SMP packed-bit ``.npy`` release format."""
    keep = check_keep_ratio(keep)
    ckpt = read_checkpoint(model_dir, input_format="dense")
    names = linear_weight_names(ckpt.dims.layers)
    masks = {name: magnitude_mask(ckpt.weights[name], keep) for name in names}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(out_path, pack_masks(masks, ckpt.arch))
    logger.info("wrote magnitude masks (keep %.3f) of %s to %s", keep, model_dir, out_path)
    return out_path
