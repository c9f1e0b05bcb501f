"""Scores -> masks during training: ``smp_export.masks`` itself (one definition for
training and export), plus the straight-through estimator."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from smp_export.masks import global_topk_masks, smp_l_masks, smp_s_masks

from .errors import TrainConfigError


def masks_for(method: str, scores: Mapping[str, torch.Tensor], keep: float,
              temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """Boolean masks of every scored linear for ``method`` at keep ratio ``keep``.

    ``smp-l`` and ``movement``: per-matrix TopK; ``smp-s``: per-matrix TopK at the SMP-S
    ratio of ``smp_s_ratio_map`` (normalised per matrix type across layers);
    ``global-topk``: one TopK over all matrices.
    """
    if method in ("smp-l", "movement"):
        return smp_l_masks(scores, keep)
    if method == "smp-s":
        return smp_s_masks(scores, keep, temperature)
    if method == "global-topk":
        return global_topk_masks(scores, keep)
    raise TrainConfigError(f"method {method!r} has no score masks", field="method")


class StraightThroughMask(torch.autograd.Function):
    """Forward: the binary mask as the scores' dtype. Backward: the gradient, unchanged (STE)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return mask.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None
