"""The SMP objective: task loss (optionally distilled) + the score regularizer."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F


def score_regularizer(scores: Iterable[torch.Tensor]) -> torch.Tensor:
    """R: the mean over score tensors of ``mean(sigmoid(S))``."""
    terms = [torch.sigmoid(s).mean() for s in scores]
    if not terms:
        raise ValueError("no score tensors")
    return torch.stack(terms).mean()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *,
                      temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * KL(teacher_T || student_T) * T^2 + (1 - alpha) * CE(student, labels)``."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1),
                  reduction="batchmean") * (t * t)
    return alpha * kl + (1.0 - alpha) * F.cross_entropy(student, labels)
