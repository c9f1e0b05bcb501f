"""A model directory read once (config, architecture, weights under canonical names), and the
one way every reader turns what it found into a ``PrunedCheckpoint``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig

from runtime.contract import CONFIG_FILE

from ..arch import Architecture, EncoderDims, architecture_of
from ..arch.limits import DEFAULT_LIMITS, ConfigLimits
from ..checkpoint import PrunedCheckpoint
from .base import ReadOptions
from .files import (canonicalize, load_config, load_tensors, primary_weight_file, require_linear_weights,
                    tokenizer_dir)
from .heads import build_head
from .tensors import check_tensors


@dataclass
class ModelDir:
    """What ``read_model_dir`` found. ``origin`` maps canonical names to the names in the file."""

    path: Path
    cfg: dict[str, Any]
    arch: Architecture
    config: PretrainedConfig
    weight_file: Path
    tensors: dict[str, torch.Tensor]
    origin: dict[str, str]

    @property
    def dims(self) -> EncoderDims:
        return self.arch.dims(self.config)

    def linear_names(self, weights: dict[str, torch.Tensor]) -> list[str]:
        """The pruned linears' weight names; CheckpointError naming the first one missing."""
        return require_linear_weights(weights, self.dims.layers, path=self.weight_file, arch=self.arch)


def read_model_dir(path: Path, *, weight_dir: Path | None = None,
                   limits: ConfigLimits = DEFAULT_LIMITS) -> ModelDir:
    """config.json (from ``weight_dir`` when it has one, else ``path``), checked against
    ``limits``, and every tensor, checked against it (``tensors.check_tensors``)."""
    weight_dir = weight_dir or path
    config_dir = weight_dir if (weight_dir / CONFIG_FILE).is_file() else path
    cfg = load_config(config_dir)
    arch = architecture_of(cfg, path=config_dir / CONFIG_FILE)
    config = arch.build_config(cfg, path=config_dir, limits=limits)
    file = primary_weight_file(weight_dir)
    state, file_of = load_tensors(weight_dir)
    tensors, origin = canonicalize(state, arch)
    model = ModelDir(path, cfg, arch, config, file, tensors, origin)
    check_tensors(tensors, origin, model.dims, arch=arch, weight_file=file, config_file=config_dir / CONFIG_FILE,
                  files={name: file_of[own] for name, own in origin.items()})
    return model


def assemble(model: ModelDir, weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
             options: ReadOptions, *, source_format: str, method: str, metadata: dict[str, Any] | None = None,
             keep_is_density: bool = False, require_label_words: bool = False,
             tokenizer: Path | None = None, head=None) -> PrunedCheckpoint:
    """The checkpoint of ``model`` with these weights and masks; the head found from the
    weight names unless given; ``metadata['density']`` (and ``keep``, when it is the density)."""
    tok = tokenizer if tokenizer is not None else tokenizer_dir(model.path)
    if head is None:
        head = build_head(weights, model.config, model.cfg, options, path=model.path, tokenizer=tok,
                          require_label_words=require_label_words)
    ckpt = PrunedCheckpoint(config=model.config, weights=weights, masks=masks, source_format=source_format,
                            method=method, source_path=model.path, head=head, tokenizer_dir=tok,
                            metadata=dict(metadata or {}), arch=model.arch)
    if keep_is_density:
        ckpt.metadata["keep"] = ckpt.density()
    ckpt.metadata["density"] = ckpt.density()
    return ckpt
