"""How scores become masks: the one definition that training and export share.

SMP-L keeps the top ``int(keep * numel)`` scores of each matrix (``topk_mask``). SMP-S
(``smp_s_keep_ratios``) gives each matrix its own keep ratio, proportional to the mean
sigmoid of its scores within its matrix type across layers, as the official ``to_mask.py``
computes it. The Hugging Face movement-pruning (emmental) binarizers are here too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .checkpoint import parse_linear_name
from .errors import MaskError


def check_keep_ratio(keep: float, *, path: str | Path | None = None, field: str = "keep") -> float:
    """Return ``keep`` if it lies in (0, 1], else raise MaskError naming the field."""
    if not isinstance(keep, (int, float)) or math.isnan(keep) or not 0.0 < keep <= 1.0:
        raise MaskError(f"keep ratio must be in (0, 1], got {keep!r}", path=path, field=field)
    return float(keep)


def check_finite(tensor: torch.Tensor, *, path: str | Path | None, field: str) -> None:
    """Raise MaskError if ``tensor`` holds NaN or inf."""
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise MaskError(f"{bad} non-finite values (NaN/inf)", path=path, field=field)


def topk_mask(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """Boolean mask keeping exactly ``min(int(keep * numel), numel)`` largest scores.

    Ties are broken by position (earlier index wins), so the result is deterministic.
    ``keep`` above 1 keeps everything, as the official TopKBinarizer does.
    It selects (``kthvalue``) instead of sorting, on the scores' own device: SMP recomputes
    every mask at every training step, and a full stable sort of MiniLM's 10.6M scores costs
    ~5x more.
    """
    flat = scores.detach().flatten()
    n = flat.numel()
    k = min(int(keep * n), n)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    kth = flat.kthvalue(n - k + 1).values          # the k-th largest value
    mask = flat > kth
    missing = k - int(mask.sum())
    if missing > 0:                                 # ties at the threshold: earlier index first
        mask[torch.nonzero(flat == kth).flatten()[:missing]] = True
    return mask.view_as(scores)


def global_topk_masks(scores: Mapping[str, torch.Tensor], keep: float) -> dict[str, torch.Tensor]:
    """One TopK over all matrices together, concatenated in ``scores``' order, split back."""
    names = list(scores)
    joined = topk_mask(torch.cat([scores[n].detach().flatten() for n in names]), keep)
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name in names:
        size = scores[name].numel()
        out[name] = joined[start:start + size].view_as(scores[name])
        start += size
    return out


def magnitude_mask(weight: torch.Tensor, keep: float) -> torch.Tensor:
    """Top ``int(keep * numel)`` entries by absolute value (emmental's MagnitudeBinarizer)."""
    return topk_mask(weight.detach().abs(), keep)


def threshold_mask(scores: torch.Tensor, threshold: float, *, sigmoid: bool) -> torch.Tensor:
    """emmental's ThresholdBinarizer: ``(sigmoid(S) if sigmoid else S) > threshold``.

    If fewer than ``int(0.005 * numel) + 1`` entries survive, it keeps those above the
    k-th smallest score with ``k = max(numel - nb_min, 1)``, as the original does.
    """
    flat = scores.detach().flatten()
    nb_min = int(0.005 * flat.numel()) + 1
    values = torch.sigmoid(flat) if sigmoid else flat
    mask = values > threshold
    if int(mask.sum()) < nb_min:
        k_threshold = flat.kthvalue(max(flat.numel() - nb_min, 1)).values
        mask = flat > k_threshold
    return mask.view_as(scores)


def l0_soft_mask(scores: torch.Tensor) -> torch.Tensor:
    """emmental's ``l0`` mask at inference: ``clamp(sigmoid(S) * 1.2 - 0.1, 0, 1)`` (real-valued)."""
    s = torch.sigmoid(scores.detach())
    return (s * (1.1 - (-0.1)) + (-0.1)).clamp(min=0.0, max=1.0)


def smp_s_keep_ratios(scores: Sequence[torch.Tensor], keep: float, temperature: float = 1.0) -> list[float]:
    """Per-layer keep ratios of one matrix type (SMP-S).

    ``v_l = R_l / sum_j R_j * (keep * L)`` with ``R_l = mean(sigmoid((1 / temperature) * S_l))``;
    a zero total gives 0 for every layer, as the official code does. Ratios above 1 are
    returned as is (``topk_mask`` then keeps the whole matrix). The float operations are
    ordered exactly as in the official ``to_mask.py`` (``p * S`` with ``p = 1 / temperature``;
    ``t = keep * L`` computed first), so ``int(v_l * numel)`` agrees with it bit for bit.
    """
    p = 1 / temperature
    r = [(p * s.detach().float()).sigmoid().mean().item() for s in scores]
    total = sum(r)
    if total == 0:
        return [0.0 for _ in r]
    t = keep * len(r)
    return [ri / total * t for ri in r]


def smp_s_ratio_map(scores: Mapping[str, torch.Tensor], keep: float,
                    temperature: float = 1.0) -> dict[str, float]:
    """SMP-S keep ratio of every canonical linear weight name, normalised per matrix type."""
    by_type: dict[str, list[str]] = {}
    for name in scores:
        _, matrix_type = parse_linear_name(name)
        by_type.setdefault(matrix_type, []).append(name)
    ratios: dict[str, float] = {}
    for names in by_type.values():
        names.sort(key=lambda n: parse_linear_name(n)[0])
        values = smp_s_keep_ratios([scores[n] for n in names], keep, temperature)
        ratios.update(zip(names, values))
    return ratios


def smp_s_masks(scores: Mapping[str, torch.Tensor], keep: float, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """SMP-S masks for canonical linear weight names: ratios normalised per matrix type."""
    ratios = smp_s_ratio_map(scores, keep, temperature)
    return {name: topk_mask(scores[name], ratios[name]) for name in scores}


def smp_l_masks(scores: Mapping[str, torch.Tensor], keep: float) -> dict[str, torch.Tensor]:
    """SMP-L masks: per-matrix TopK at the same keep ratio."""
    return {name: topk_mask(s, keep) for name, s in scores.items()}
