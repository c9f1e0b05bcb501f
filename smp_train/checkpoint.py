"""Writing what smp-export reads, and reading it back (resume, shipped checkpoints).

A training directory holds ``config.json`` (the BERT config plus an ``smp`` dict: method,
final keep, SMP-S temperature, head, classes, label words), ``model.safetensors`` (every
weight under canonical names, the ``*.mask_scores`` of the 6 encoder linears per layer, the
head's tensors) and the tokenizer files: ``smp-export DIR`` reads it with no extra flags.

A *shipped* checkpoint is small: the final masks in SMP's packed-bit ``.npy`` release format
over a named base model, the head's tensors (``head.safetensors``) and ``smp_train.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from smp_export.checkpoint import PrunedCheckpoint
from smp_export.default_model import DEFAULT_MODEL_PACKAGE
from smp_export.readers import read_checkpoint
from smp_export.readers.packed import pack_masks
from smp_export.readers.shipped import META_FILE as SHIPPED_META

from . import __version__
from .errors import ResumeError
from .modeling import SmpModel

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SHIPPED_MASKS = "masks.npy"
SHIPPED_HEAD = "head.safetensors"
ARCHITECTURE = "SmpPrunedBertModel"


def checkpoint_config(model: SmpModel, smp: dict[str, Any]) -> dict[str, Any]:
    """config.json: the encoder's BERT config, ``id2label`` of the classes and the ``smp`` dict."""
    config = model.config.to_dict()
    for key in ("_name_or_path", "_attn_implementation_autoset", "torch_dtype", "dtype"):
        config.pop(key, None)
    classes = smp.get("classes") or []
    config.update(architectures=[ARCHITECTURE], model_type="bert",
                  id2label={str(i): c for i, c in enumerate(classes)},
                  label2id={c: i for i, c in enumerate(classes)}, smp=smp)
    return config


def _tensors_to_save(model: SmpModel) -> dict[str, torch.Tensor]:
    state = model.canonical_state()
    word = state["embeddings.word_embeddings.weight"]
    decoder = state.get("cls.predictions.decoder.weight")
    if decoder is not None and decoder.data_ptr() == word.data_ptr():
        del state["cls.predictions.decoder.weight"]        # tied: the reader falls back to the embedding
    return {name: t.detach().cpu().contiguous().clone() for name, t in state.items()}


def write_checkpoint(model: SmpModel, directory: Path, smp: dict[str, Any], tokenizer=None) -> Path:
    """Write an smp-export-readable directory (weights, scores, head, config, tokenizer)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(_tensors_to_save(model), str(directory / WEIGHTS_FILE),
              metadata={"format": "pt", "producer": f"smp-train {__version__}"})
    text = json.dumps(checkpoint_config(model, smp), indent=2, sort_keys=True, default=str)
    (directory / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    logger.info("wrote checkpoint %s", directory)
    return directory


def load_trainable(model: SmpModel, directory: Path) -> list[str]:
    """Copy the trained tensors (scores, trained head / weights) of ``directory`` into ``model``."""
    file = Path(directory) / WEIGHTS_FILE
    try:
        saved = load_file(str(file))
    except (OSError, SafetensorError) as exc:
        raise ResumeError(f"cannot read the checkpoint weights: {exc}", path=file) from exc
    trainable = {p.data_ptr() for p in model.parameters() if p.requires_grad}
    loaded = []
    with torch.no_grad():
        for name, tensor in model.canonical_state().items():
            if tensor.data_ptr() not in trainable and name != "prototype.weight":
                continue
            if name not in saved:
                raise ResumeError("tensor missing from the checkpoint", path=file, field=name)
            if tuple(saved[name].shape) != tuple(tensor.shape):
                raise ResumeError(f"shape {tuple(saved[name].shape)} != model's {tuple(tensor.shape)}",
                                  path=file, field=name)
            tensor.copy_(saved[name].to(tensor.dtype))
            loaded.append(name)
    logger.info("restored %d trained tensors from %s", len(loaded), directory)
    return loaded


# --------------------------------------------------------------------------- shipped checkpoints


def write_shipped(train_dir: Path, dest: Path, *, base_model: str = DEFAULT_MODEL_PACKAGE,
                  extra: dict[str, Any] | None = None) -> Path:
    """Pack a finished training directory into ``dest``: masks.npy + head.safetensors + smp_train.json.

    The masks are the ones smp-export computes from the directory (the SMP reader), so the
    shipped model is exactly the exported one.
    """
    train_dir, dest = Path(train_dir), Path(dest)
    ckpt = read_checkpoint(train_dir, input_format="smp")
    smp = json.loads((train_dir / CONFIG_FILE).read_text(encoding="utf-8"))["smp"]
    smp["base_model"] = base_model          # not this machine's path
    dest.mkdir(parents=True, exist_ok=True)
    np.save(dest / SHIPPED_MASKS, pack_masks(ckpt.masks))
    head = _head_tensors(ckpt)
    if head:
        save_file({k: v.contiguous() for k, v in head.items()}, str(dest / SHIPPED_HEAD))
    meta = {"format": "smp-train shipped checkpoint", "producer": f"smp-train {__version__}",
            "base_model": base_model, "masks": SHIPPED_MASKS, "mask_format": "packed-bits (SMP release)",
            "head_file": SHIPPED_HEAD if head else None, "head_kind": ckpt.head.kind,
            "method": ckpt.method, "keep": ckpt.metadata.get("keep"), "density": ckpt.density(),
            "smp": smp, **(extra or {})}
    (dest / SHIPPED_META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n",
                                     encoding="utf-8")
    logger.info("shipped %s -> %s (density %.4f)", train_dir, dest, ckpt.density())
    return dest


def _head_tensors(ckpt: PrunedCheckpoint) -> dict[str, torch.Tensor]:
    if ckpt.head.kind == "prototype":
        return {"prototype.weight": ckpt.weights["prototype.weight"]}
    if ckpt.head.kind == "sequence-classification":
        return {k: ckpt.weights[k] for k in ("classifier.weight", "classifier.bias")}
    return {}


def load_shipped(dest: Path) -> PrunedCheckpoint:
    """A ``PrunedCheckpoint`` (packed masks over the base model, plus the trained head) ready
    for ``smp_export.export.export_onnx``: smp-export's ``shipped`` reader."""
    return read_checkpoint(dest, input_format="shipped")
