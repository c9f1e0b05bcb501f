"""Hugging Face movement pruning (emmental ``masked_bert``) checkpoints.

Masks are what the emmental binarizers / ``bertarize.py`` compute from ``--threshold``:

- ``topK``: top ``int(threshold * numel)`` scores (threshold = fraction kept);
- ``sigmoied_threshold`` / ``threshold``: ``sigmoid(S) > t`` / ``S > t`` with the 0.5% minimum;
- ``magnitude``: top ``int(threshold * numel)`` weights by ``|W|`` (no scores);
- ``l0``: the real-valued ``clamp(sigmoid(S) * 1.2 - 0.1, 0, 1)`` folded into the weight;
  the boolean mask is ``soft > 0`` (no threshold needed, as in bertarize.py).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import PrunedCheckpoint
from ..errors import CheckpointError, MaskError
from ..masks import check_keep_ratio, l0_soft_mask, magnitude_mask, threshold_mask, topk_mask
from .base import ReadOptions, register
from .files import CONFIG_FILE, linear_scores, load_config, peek_config, split_scores
from .model_dir import assemble, read_model_dir

logger = logging.getLogger(__name__)

PRUNING_METHODS = ("topK", "threshold", "sigmoied_threshold", "magnitude", "l0")


def _threshold(method: str, options: ReadOptions, path: Path) -> float | None:
    value = options.threshold
    if value is None:
        if method == "l0":
            return None
        meaning = "the fraction of weights kept" if method in ("topK", "magnitude") else "the score threshold"
        raise MaskError(f"pruning_method {method!r} needs --threshold ({meaning}, the final_threshold "
                        "used in training)", path=path, field="--threshold")
    if method in ("topK", "magnitude"):
        return check_keep_ratio(value, path=path, field="--threshold")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MaskError(f"threshold must be a finite number, got {value!r}", path=path, field="--threshold")
    return float(value)


def movement_masks(method: str, weights: dict[str, torch.Tensor], scores: dict[str, torch.Tensor],
                   names: list[str], threshold: float | None) -> dict[str, torch.Tensor]:
    """Boolean masks of ``names``; for ``l0`` the soft mask is folded into ``weights`` in place."""
    masks: dict[str, torch.Tensor] = {}
    for name in names:
        if method == "topK":
            masks[name] = topk_mask(scores[name], threshold)
        elif method in ("threshold", "sigmoied_threshold"):
            masks[name] = threshold_mask(scores[name], threshold, sigmoid=method == "sigmoied_threshold")
        elif method == "magnitude":
            masks[name] = magnitude_mask(weights[name], threshold)
        else:  # l0
            soft = l0_soft_mask(scores[name])
            weights[name] = weights[name] * soft
            masks[name] = soft > 0
    return masks


class MovementReader:
    """emmental masked_bert checkpoints (topK, (sigmoied_)threshold, magnitude, l0)."""

    name = "movement"
    description = "Hugging Face movement pruning (emmental masked_bert) with *.mask_scores"

    def detect(self, path: Path, options: ReadOptions) -> bool:
        cfg = peek_config(path)
        return cfg is not None and cfg.get("model_type") == "masked_bert" \
            and cfg.get("pruning_method") in PRUNING_METHODS

    def read(self, path: Path, options: ReadOptions) -> PrunedCheckpoint:
        cfg = load_config(path)
        method = cfg.get("pruning_method")
        if method not in PRUNING_METHODS:
            raise CheckpointError(f"unsupported pruning_method {method!r}; known: {', '.join(PRUNING_METHODS)}",
                                  path=path / CONFIG_FILE, field="pruning_method")
        threshold = _threshold(method, options, path)
        model = read_model_dir(path, limits=options.limits)
        weights, scores = split_scores(model.tensors)
        names = model.linear_names(weights)
        if method == "magnitude":
            if scores:
                logger.warning("magnitude pruning ignores the %d mask_scores tensors", len(scores))
        else:
            scores = linear_scores(scores, weights, names, model.origin, path=model.weight_file)
        masks = movement_masks(method, weights, scores, names, threshold)
        metadata: dict[str, Any] = {"pruning_method": method, "threshold": threshold,
                                    "mask_init": cfg.get("mask_init"), "mask_scale": cfg.get("mask_scale")}
        if method in ("topK", "magnitude"):
            metadata["keep"] = threshold
        ckpt = assemble(model, weights, masks, options, source_format=self.name, method=f"movement-{method}",
                        metadata=metadata)
        logger.info("read movement-%s checkpoint %s: density %.4f", method, path, ckpt.metadata["density"])
        return ckpt


register(MovementReader())
