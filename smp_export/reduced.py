"""Validation of a reduced-precision export (int8, fp16): it cannot meet an fp32 ``atol``, so
it is compared with the masked fp32 PyTorch model on the fp32 validation's inputs
(``validate.checkpoint_pairs``) by per-row cosine similarity and, for logits, top-1 agreement
over the rows that are not near ties, against the precision's ``QuantizedValidationConfig``
(``ValidationConfig.reduced(precision)``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from runtime.contract import LOGITS
from runtime.manifest import ValidationRecord

from .checkpoint import PrunedCheckpoint
from .errors import ValidationError
from .validate import OutputPair, QuantizedValidationConfig, ValidationConfig, checkpoint_pairs

logger = logging.getLogger(__name__)


def _row_cosines(got: np.ndarray, want: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Cosine similarity per output row: the last axis; hidden states of real tokens only."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    if got.ndim == 3:
        keep = mask.reshape(-1).astype(bool)
        got, want = got.reshape(-1, got.shape[-1])[keep], want.reshape(-1, want.shape[-1])[keep]
    got_norm, want_norm = np.linalg.norm(got, axis=-1), np.linalg.norm(want, axis=-1)
    cos = (got * want).sum(-1) / np.maximum(got_norm * want_norm, np.finfo(np.float64).tiny)
    cos[(got_norm == 0) & (want_norm == 0)] = 1.0          # both all-zero: the same row
    return np.nan_to_num(cos, nan=-1.0)                     # NaN outputs: as far apart as can be


def _top1(got: np.ndarray, want: np.ndarray, tie_margin: float) -> dict[str, float | int | None]:
    """Top-1 agreement of logits rows, over all rows and over the decisive ones. A row is set
    aside as a near tie when its fp32 top-2 margin is below ``tie_margin`` x the batch's logit
    scale (the median over rows of top logit minus the row's median logit: one outlier logit or
    row cannot inflate it) *and* the other model's argmax is the fp32 winner or runner-up: any
    rounding may swap two near-equal logits (with |error| <= d per logit, a swap needs a margin
    <= 2d), but a flip to a third label is never excused."""
    agree = got.argmax(-1) == want.argmax(-1)
    if want.shape[-1] < 2:
        aside = np.zeros(len(want), bool)
    else:
        w = want.astype(np.float64)
        order = np.argsort(-w, axis=-1, kind="stable")
        top = np.take_along_axis(w, order[:, :1], -1)[:, 0]
        second = np.take_along_axis(w, order[:, 1:2], -1)[:, 0]
        scale = float(np.median(w.max(-1) - np.median(w, axis=-1))) if len(w) else 0.0
        aside = (top - second < tie_margin * scale) & (agree | (got.argmax(-1) == order[:, 1]))
    decisive = ~aside
    return {"top1_agreement": float(agree.mean()) if agree.size else None,
            "top1_decisive": float(agree[decisive].mean()) if decisive.any() else None,
            "near_ties": int(aside.sum())}


def _metrics(pairs: Sequence[OutputPair], labels: bool,
             tie_margin: float) -> tuple[list[str], dict[str, float | int | None]]:
    """(failures that stop any comparison, the metrics over every shape's rows)."""
    failures: list[str] = []
    cosines, got_rows, want_rows, diffs = [], [], [], []
    for pair in pairs:
        if pair.got is None or pair.got.shape != pair.want.shape:
            failures.append(pair.error or f"{pair.where}: shape {list(pair.got.shape)} != reference "
                                          f"{list(pair.want.shape)}")
            continue
        cosines.append(_row_cosines(pair.got, pair.want, pair.inputs["attention_mask"]))
        if pair.got.size:
            diff = np.abs(pair.got.astype(np.float64) - pair.want.astype(np.float64)).max()
            diffs.append(float(np.inf if np.isnan(diff) else diff))
        if labels:
            got_rows.append(pair.got.reshape(-1, pair.got.shape[-1]))
            want_rows.append(pair.want.reshape(-1, pair.want.shape[-1]))
    rows = np.concatenate(cosines) if cosines else np.zeros(0)
    top1 = (_top1(np.concatenate(got_rows), np.concatenate(want_rows), tie_margin) if got_rows
            else {"top1_agreement": None, "top1_decisive": None, "near_ties": None})
    return failures, {
        "max_abs_diff": max(diffs) if diffs else None,
        "cosine_mean": float(rows.mean()) if rows.size else None,
        "cosine_min": float(rows.min()) if rows.size else None,
        **top1,
    }


def _shortfalls(metrics: Mapping[str, float | None], q: QuantizedValidationConfig,
                precision: str = "int8") -> tuple[list[str], str | None]:
    """What falls below the thresholds ``q``, and the option of the first one."""
    ties = f" ({metrics['near_ties']} near ties not counted, --tie-margin {q.tie_margin:g})" \
        if metrics.get("near_ties") else ""
    if metrics.get("near_ties") and metrics.get("top1_decisive") is None:
        return [f"top-1 cannot be held: all {metrics['near_ties']} validation rows are near ties (--tie-margin "
                f"{q.tie_margin:g}; 0 holds every row)"], "--tie-margin"
    checks = [("cosine_min", q.min_cosine, "--min-cosine", "worst row cosine", ""),
              ("top1_decisive", q.min_top1, "--min-top1", "top-1 agreement", ties)]
    failures, field = [], None
    for key, threshold, option, what, note in checks:
        value = metrics[key]
        if value is not None and value < threshold:
            failures.append(f"{what} {value:.6f} < {option} {threshold:g}{note} ({precision} vs the masked fp32 "
                            "model)")
            field = field or option
    return failures, field


def validate_reduced(model_path: Path, ckpt: PrunedCheckpoint, config: ValidationConfig = ValidationConfig(),
                     custom_op_libraries: Sequence[str] = (), *, precision: str = "int8") -> ValidationRecord:
    """``model_path`` (in ``precision``) against the masked fp32 model of ``ckpt`` on the fp32
    validation's inputs; per-row cosine (and top-1 agreement for logits) at least
    ``config.reduced(precision)``'s thresholds, else ValidationError naming the threshold option."""
    q = config.reduced(precision)
    shapes, pairs = checkpoint_pairs(model_path, ckpt, config, custom_op_libraries)
    output = ckpt.head.output_name
    labels = config.check_labels and output == LOGITS
    failures, metrics = _metrics(pairs, labels, q.tie_margin)
    field = None
    if not failures:
        failures, field = _shortfalls(metrics, q, precision)
    if failures:
        raise ValidationError(failures, max_abs_diff=metrics["max_abs_diff"], path=model_path, field=field)
    logger.info("validated %s %s: row cosine mean %.5f min %.5f, top-1 %s (decisive rows %s, %s near ties) "
                "over shapes %s", precision, model_path, metrics["cosine_mean"], metrics["cosine_min"],
                metrics["top1_agreement"], metrics["top1_decisive"], metrics["near_ties"], shapes)
    top1 = metrics["top1_agreement"]
    return ValidationRecord(passed=True, atol=None, max_abs_diff=metrics["max_abs_diff"], shapes=shapes,
                            labels_agree=None if top1 is None else top1 == 1.0,
                            cosine_mean=metrics["cosine_mean"], cosine_min=metrics["cosine_min"],
                            top1_agreement=top1, top1_decisive=metrics["top1_decisive"],
                            near_ties=metrics["near_ties"], min_cosine=q.min_cosine,
                            min_top1=q.min_top1 if labels else None, tie_margin=q.tie_margin if labels else None)


def validate_int8(model_path: Path, ckpt: PrunedCheckpoint, config: ValidationConfig = ValidationConfig(),
                  custom_op_libraries: Sequence[str] = ()) -> ValidationRecord:
    """The int8 validation (``config.quantized``)."""
    return validate_reduced(model_path, ckpt, config, custom_op_libraries, precision="int8")


def validate_fp16(model_path: Path, ckpt: PrunedCheckpoint, config: ValidationConfig = ValidationConfig(),
                  custom_op_libraries: Sequence[str] = ()) -> ValidationRecord:
    """The fp16 validation (``config.fp16``)."""
    return validate_reduced(model_path, ckpt, config, custom_op_libraries, precision="fp16")

