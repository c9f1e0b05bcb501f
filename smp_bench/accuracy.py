"""Accuracy of a variant against the dense model, on numpy outputs (no model code here).

Two kinds of output:

- ``embeddings`` (an encoder's pooled ``last_hidden_state``): agreement with the dense model is
  the cosine similarity of each text's embedding (mean and min over the eval set). An encoder
  has no classifier, so its "task accuracy" is a nearest-centroid classifier: one centroid per
  class from the *dense* model's embeddings of a training split, each test text predicted by
  cosine to the centroids. The same centroids serve every variant, so the number shows what
  pruning changed, not a retrained probe.
- ``logits``: argmax agreement with the dense model, max |logit diff|, and accuracy against the
  labels when the label names map onto the model's ``id2label``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Mean of ``hidden`` [B,S,H] over real tokens (sentence-transformers style), L2-normalised."""
    mask = attention_mask[..., None].astype(np.float32)
    pooled = (hidden.astype(np.float32) * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    if normalize:
        pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return pooled


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def cosine_agreement(reference: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """Row-wise cosine similarity of ``outputs`` to ``reference`` [n, H]: mean and min."""
    _check_pair(reference, outputs)
    cos = np.sum(_unit(reference) * _unit(outputs), axis=1)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}


def centroids(embeddings: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(class names sorted, unit centroid per class) of ``embeddings`` [n, H] grouped by label."""
    if len(labels) != len(embeddings) or len(labels) == 0:
        raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} labels")
    names = sorted(set(labels))
    labels_arr = np.asarray(labels)
    cents = np.stack([_unit(embeddings[labels_arr == n]).mean(axis=0) for n in names])
    return names, _unit(cents)


def nearest_centroid_predict(embeddings: np.ndarray, names: Sequence[str], cents: np.ndarray) -> list[str]:
    """Predict each row of ``embeddings`` as the class of its most cosine-similar centroid."""
    scores = _unit(embeddings) @ cents.T
    return [names[i] for i in scores.argmax(axis=1)]


def accuracy(predicted: Sequence[str], labels: Sequence[str]) -> float:
    if len(predicted) != len(labels) or not labels:
        raise ValueError(f"{len(predicted)} predictions but {len(labels)} labels")
    return float(np.mean([p == t for p, t in zip(predicted, labels)]))


def logits_agreement(reference: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """Argmax agreement and max |logit diff| of ``outputs`` against ``reference`` [n, k]."""
    _check_pair(reference, outputs)
    return {"argmax_agreement": float(np.mean(reference.argmax(axis=1) == outputs.argmax(axis=1))),
            "max_abs_logit_diff": float(np.max(np.abs(reference.astype(np.float64) - outputs)))}


def label_index(id2label: Mapping[int, str], label_names: Sequence[str]) -> dict[str, int] | None:
    """Map dataset label names to logit indices, or None when they do not map.

    Names match ``id2label`` values case-insensitively; integer labels (``0``, ``1``, ...) map to
    their index when the model has only generic ``LABEL_i`` names.
    """
    if not label_names:
        return None
    by_name = {str(v).lower(): int(k) for k, v in id2label.items()}
    if all(name.lower() in by_name for name in label_names):
        return {name: by_name[name.lower()] for name in label_names}
    n = len(id2label)
    generic = all(str(v).lower() == f"label_{k}" for k, v in id2label.items())
    if (generic or not id2label) and all(name.lstrip("-").isdigit() for name in label_names):
        mapping = {name: int(name) for name in label_names}
        if all(0 <= i and (n == 0 or i < n) for i in mapping.values()):
            return mapping
    return None


def logits_accuracy(outputs: np.ndarray, labels: Sequence[str], mapping: Mapping[str, int]) -> float:
    """Accuracy of argmax(``outputs``) against ``labels`` mapped through ``mapping``."""
    targets = np.asarray([mapping[label] for label in labels])
    return float(np.mean(outputs.argmax(axis=1) == targets))


def evaluate(kind: str, reference: np.ndarray, outputs: np.ndarray, *, labels: Sequence[str] | None = None,
             centroid_model: tuple[list[str], np.ndarray] | None = None,
             label_map: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Every metric that applies to ``kind`` ('embeddings' or 'logits'), as a flat dict."""
    out: dict[str, Any] = {"eval_output": kind, "eval_n": int(len(outputs))}
    if kind == "embeddings":
        out.update(cosine_agreement(reference, outputs))
        if labels is not None and centroid_model is not None:
            predicted = nearest_centroid_predict(outputs, *centroid_model)
            out["task_metric"] = "nearest-centroid accuracy (dense train centroids)"
            out["task_accuracy"] = accuracy(predicted, labels)
    elif kind == "logits":
        out.update(logits_agreement(reference, outputs))
        if labels is not None and label_map is not None:
            out["task_metric"] = "accuracy"
            out["task_accuracy"] = logits_accuracy(outputs, labels, label_map)
    else:
        raise ValueError(f"kind must be 'embeddings' or 'logits', got {kind!r}")
    return out


def _check_pair(reference: np.ndarray, outputs: np.ndarray) -> None:
    if reference.shape != outputs.shape or reference.ndim != 2 or reference.shape[0] == 0:
        raise ValueError(f"outputs {outputs.shape} and reference {reference.shape} must be equal, "
                         "non-empty [n, features] arrays")
