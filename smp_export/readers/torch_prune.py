"""State dicts of models pruned with ``torch.nn.utils.prune``.

A pruned parameter ``p`` of a module is saved as ``<module>.p_orig`` (the dense values) and
``<module>.p_mask`` (0/1). For the 6 encoder linears of each layer the weight is
``weight_orig`` and the mask ``weight_mask``; any other pruned tensor (pooler, classifier,
embeddings, biases) is folded to ``orig * mask`` and stays dense.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..checkpoint import PrunedCheckpoint, linear_weight_names
from ..errors import CheckpointError, MaskError
from .base import ReadOptions, register
from .files import check_same_shape, peek_config, weight_files, weight_keys
from .model_dir import assemble, read_model_dir

logger = logging.getLogger(__name__)

_ORIG, _MASK = "_orig", "_mask"


def _check_binary(mask: torch.Tensor, *, path: Path, field: str) -> None:
    if not ((mask == 0) | (mask == 1)).all():
        bad = int((~((mask == 0) | (mask == 1))).sum())
        raise MaskError(f"pruning mask must hold only 0 and 1; {bad} other values", path=path, field=field)


def split_pruned(tensors: dict[str, torch.Tensor], origin: dict[str, str], linear_names: set[str], *,
                 path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights, masks): encoder linears keep ``*_orig`` + boolean mask; others are folded."""
    weights: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name.endswith(_MASK) and name.removesuffix(_MASK) + _ORIG in tensors:
            continue
        if not name.endswith(_ORIG):
            weights[name] = tensor
            continue
        base = name.removesuffix(_ORIG)
        mask_name = base + _MASK
        if mask_name not in tensors:
            raise CheckpointError("pruned tensor without its mask", path=path, field=origin[name])
        mask = tensors[mask_name]
        check_same_shape(mask, tensor, path=path, field=origin[mask_name])
        _check_binary(mask, path=path, field=origin[mask_name])
        if base in linear_names:
            weights[base] = tensor
            masks[base] = mask.bool()
        else:
            weights[base] = tensor * mask.to(tensor.dtype)
            logger.info("folded the pruning mask of %s into a dense tensor", base)
    return weights, masks


def _has_pruned_keys(keys: list[str]) -> bool:
    return any(key.endswith(".weight_orig") for key in keys)


class TorchPruneReader:
    """``<module>.weight_orig`` + ``<module>.weight_mask`` state dicts (torch.nn.utils.prune)."""

    name = "torch_prune"
    description = "torch.nn.utils.prune state dict: *.weight_orig + *.weight_mask"

    def detect(self, path: Path, options: ReadOptions) -> bool:
        return peek_config(path) is not None and bool(weight_files(path)) \
            and _has_pruned_keys(weight_keys(path))

    def read(self, path: Path, options: ReadOptions) -> PrunedCheckpoint:
        model = read_model_dir(path, limits=options.limits)
        if not _has_pruned_keys(list(model.tensors)):
            raise CheckpointError("no '*.weight_orig' tensors: not a torch.nn.utils.prune state dict",
                                  path=model.weight_file)
        linear = set(linear_weight_names(model.dims.layers))
        weights, masks = split_pruned(model.tensors, model.origin, linear, path=model.weight_file)
        names = model.linear_names(weights)
        unpruned = [n for n in names if n not in masks]
        if unpruned:
            logger.info("%d encoder linears were not pruned (all-ones masks), e.g. %s", len(unpruned), unpruned[0])
        masks = {n: masks.get(n, torch.ones_like(weights[n], dtype=torch.bool)) for n in names}
        return assemble(model, weights, masks, options, source_format=self.name, method="torch-prune",
                        metadata={"unpruned_linears": len(unpruned)}, keep_is_density=True)


register(TorchPruneReader())
