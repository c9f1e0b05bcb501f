"""Files every reader shares: config, weight files, canonical names, shape checks, directories.

Weight files are looked up in Hugging Face's order: ``model.safetensors`` (or its sharded
index), then ``pytorch_model.bin`` (or its index). Every failure is a typed error naming
the file and, where there is one, the field.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from runtime.contract import CONFIG_FILE, has_tokenizer

from ..arch import BERT, Architecture
from ..checkpoint import linear_weight_names
from ..errors import CheckpointError, MaskError

logger = logging.getLogger(__name__)

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
SCORE_SUFFIX = ".mask_scores"
_DROPPED_BUFFERS = ("position_ids", "token_type_ids")
_LOAD_ERRORS = (SafetensorError, OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError)
_CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")


# --------------------------------------------------------------------------- config


def peek_config(model_dir: Path) -> dict[str, Any] | None:
    """The parsed config.json, or None when there is none (for cheap ``detect`` calls)."""
    if not (Path(model_dir) / CONFIG_FILE).is_file():
        return None
    return load_config(model_dir)


def load_config(model_dir: Path) -> dict[str, Any]:
    """Parse ``config.json``; CheckpointError naming the file (and field) when it is unusable."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError("config.json not found", path=path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot parse config.json: {exc}", path=path) from exc
    if not isinstance(cfg, dict):
        raise CheckpointError("config.json must hold a JSON object", path=path)
    return cfg


# --------------------------------------------------------------------------- weight files


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of ``model_dir`` in load order; [] when there are none."""
    model_dir = Path(model_dir)
    for single, index in ((SAFETENSORS_FILE, SAFETENSORS_INDEX), (BIN_FILE, BIN_INDEX)):
        if (model_dir / single).is_file():
            return [model_dir / single]
        if (model_dir / index).is_file():
            return _shards(model_dir / index)
    return []


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot parse shard index: {exc}", path=index) from exc
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError("must map tensor names to shard file names", path=index, field="weight_map")
    for tensor, name in weight_map.items():
        if not isinstance(name, str):
            raise CheckpointError(f"shard of {tensor!r} is not a file name: {name!r}", path=index, field="weight_map")
    return [inside_dir(index.parent, name, index=index, field=f"weight_map: {name}")
            for name in sorted(set(weight_map.values()))]


def inside_dir(directory: Path, name: object, *, index: Path, field: str) -> Path:
    """``directory / name`` when it stays inside ``directory`` (no absolute path, no ``..``, no
    symlink out); else CheckpointError naming ``index`` (the file that referenced it) and ``field``."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise CheckpointError(f"not a file name: {name!r}", path=index, field=field)
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise CheckpointError(f"{name!r} points outside the checkpoint directory", path=index, field=field)
    target = Path(directory) / relative
    root = Path(directory).resolve()
    if not target.resolve().is_relative_to(root):
        raise CheckpointError(f"{name!r} resolves outside the checkpoint directory (a symlink?)", path=index,
                              field=field)
    return target


def primary_weight_file(model_dir: Path) -> Path:
    """The file to name in messages: the single weight file or the first shard."""
    files = weight_files(model_dir)
    if not files:
        raise CheckpointError(f"no weight file ({SAFETENSORS_FILE} or {BIN_FILE}) found", path=model_dir)
    return files[0]


def weight_keys(model_dir: Path) -> list[str]:
    """Tensor names of ``model_dir`` without reading the tensors where the format allows."""
    keys: list[str] = []
    for file in weight_files(model_dir):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as handle:
                    keys.extend(handle.keys())
            else:
                keys.extend(_bin_keys(file))
        except _LOAD_ERRORS as exc:
            raise _corrupt(file, exc) from exc
    return keys


def _bin_keys(file: Path) -> list[str]:
    if zipfile.is_zipfile(file):  # torch.save's default format can be memory-mapped
        return list(torch.load(file, map_location="cpu", weights_only=True, mmap=True))
    return list(_load_file(file))  # legacy (pre-1.6) format: a full load


def load_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model_dir`` (safetensors preferred); CheckpointError naming a bad file."""
    return load_tensors(model_dir)[0]


def load_tensors(model_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """``load_state_dict`` plus the file each tensor came from (a shard of a sharded checkpoint)."""
    files = weight_files(model_dir)
    if not files:
        raise CheckpointError(f"no weight file ({SAFETENSORS_FILE} or {BIN_FILE}) found", path=model_dir)
    state: dict[str, torch.Tensor] = {}
    file_of: dict[str, Path] = {}
    for file in files:
        if not file.is_file():
            raise CheckpointError("weight shard listed in the index is missing", path=file)
        shard = _load_file(file)
        state.update(shard)
        file_of.update(dict.fromkeys(shard, file))
    return state, file_of


def _load_file(file: Path) -> dict[str, torch.Tensor]:
    try:
        if file.suffix == ".safetensors":
            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as exc:
        raise _corrupt(file, exc) from exc
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError("weight file does not hold a flat name -> tensor state dict", path=file)
    return state


def _corrupt(file: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(f"cannot read weight file (truncated or corrupt?): {type(exc).__name__}: {exc}",
                           path=file)


# --------------------------------------------------------------------------- names


def canonicalize(state: Mapping[str, torch.Tensor],
                 arch: Architecture = BERT) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Canonical names (``arch.canonical_name``), floating tensors as float32, index buffers dropped.

    Returns the tensors and a map canonical name -> name in the file (for messages).
    """
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for name, tensor in state.items():
        if name.endswith(_DROPPED_BUFFERS):
            continue
        canon = arch.canonical_name(name)
        if canon in tensors:
            logger.warning("duplicate tensor %s (as %s and %s); keeping the first", canon, origin[canon], name)
            continue
        tensors[canon] = tensor.float() if tensor.is_floating_point() else tensor
        origin[canon] = name
    return tensors, origin


def split_scores(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split off ``*.mask_scores``: (weights, scores keyed by the matching ``.weight`` name)."""
    weights: dict[str, torch.Tensor] = {}
    scores: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name.endswith(SCORE_SUFFIX):
            scores[name.removesuffix(SCORE_SUFFIX) + ".weight"] = tensor
        else:
            weights[name] = tensor
    return weights, scores


def require_linear_weights(weights: Mapping[str, torch.Tensor], num_layers: int, *, path: Path,
                           arch: Architecture = BERT) -> list[str]:
    """``linear_weight_names(num_layers)``; CheckpointError naming the first missing one as the
    architecture's files name it."""
    names = linear_weight_names(num_layers)
    missing = [n for n in names if n not in weights]
    if missing:
        raise CheckpointError(f"{len(missing)} encoder linear weights missing "
                              f"(config.json says {num_layers} layers)", path=path, field=arch.own_name(missing[0]))
    return names


def check_same_shape(tensor: torch.Tensor, weight: torch.Tensor, *, path: Path, field: str) -> None:
    """MaskError naming file and tensor when a mask / score does not have its weight's shape."""
    if tuple(tensor.shape) != tuple(weight.shape):
        raise MaskError(f"shape {tuple(tensor.shape)} does not match its weight's {tuple(weight.shape)}",
                        path=path, field=field)


def linear_scores(scores: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor],
                  names: Iterable[str], origin: Mapping[str, str], *, path: Path) -> dict[str, torch.Tensor]:
    """The score tensor of every pruned linear, checked for presence and shape (``read_model_dir``
    has checked every tensor's values: ``tensors.check_tensors``)."""
    names = list(names)
    out: dict[str, torch.Tensor] = {}
    for name in names:
        score_name = name.removesuffix(".weight") + SCORE_SUFFIX
        field = origin.get(score_name) or origin.get(name, name).removesuffix(".weight") + SCORE_SUFFIX
        if name not in scores:
            raise MaskError("mask scores missing for a pruned linear", path=path, field=field)
        check_same_shape(scores[name], weights[name], path=path, field=field)
        out[name] = scores[name]
    extra = sorted(set(scores) - set(names))
    if extra:
        logger.warning("ignoring %d score tensors outside the encoder linears (e.g. %s); only the "
                       "6 linears of each layer are pruned", len(extra), extra[0])
    return out


# --------------------------------------------------------------------------- directories


def find_checkpoint_dir(model_dir: Path) -> Path | None:
    """The ``checkpoint-N`` subdirectory with weights and the smallest N, or None."""
    found = []
    for child in Path(model_dir).iterdir():
        match = _CHECKPOINT_DIR.fullmatch(child.name)
        if match and child.is_dir() and weight_files(child):
            found.append((int(match.group(1)), child))
    return min(found)[1] if found else None


def tokenizer_dir(*dirs: Path) -> Path | None:
    """The first of ``dirs`` holding tokenizer files, else None."""
    return next((Path(d) for d in dirs if has_tokenizer(d)), None)
