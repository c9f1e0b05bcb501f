"""What the tensors of a model directory must agree on before anything is built from them.

Every floating tensor finite; the embeddings and each encoder layer's matrices shaped as
config.json's dimensions say; as many encoder layers in the weights as config.json states.
A violation is a CheckpointError naming the file and the tensor (or the config field).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..arch import Architecture, EncoderDims
from ..checkpoint import MATRIX_TYPES, linear_module
from ..errors import CheckpointError, MaskError

SCORE_SUFFIX = ".mask_scores"
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")


def expected_shapes(dims: EncoderDims) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of the embeddings and every encoder linear (weights and biases)."""
    h, inner = dims.hidden, dims.intermediate
    shapes: dict[str, tuple[int, ...]] = {"embeddings.word_embeddings.weight": (dims.vocab_size, h),
                                          "embeddings.position_embeddings.weight": (dims.max_positions, h)}
    if dims.type_vocab_size:
        shapes["embeddings.token_type_embeddings.weight"] = (dims.type_vocab_size, h)
    linear = {"intermediate": (inner, h), "output": (h, inner)}
    for layer in range(dims.layers):
        for matrix_type in MATRIX_TYPES:
            out, inp = linear.get(matrix_type, (h, h))
            module = linear_module(layer, matrix_type)
            shapes[f"{module}.weight"] = (out, inp)
            shapes[f"{module}.bias"] = (out,)
    return shapes


def check_finite_tensors(tensors: Mapping[str, torch.Tensor], *, path: Path,
                         origin: Mapping[str, str] | None = None) -> None:
    """CheckpointError naming the file and the first floating tensor holding NaN or +/-inf."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            error = MaskError if name.endswith(SCORE_SUFFIX) else CheckpointError   # scores are mask inputs
            raise error(f"{bad} non-finite values (NaN/inf) of {tensor.numel()}; weights and scores must be "
                        "finite", path=path, field=(origin or {}).get(name, name))


def check_tensors(tensors: Mapping[str, torch.Tensor], origin: Mapping[str, str], dims: EncoderDims, *,
                  arch: Architecture, weight_file: Path, config_file: Path) -> None:
    """Finite values, shapes that match ``dims``, and the layer count config.json states."""
    check_finite_tensors(tensors, path=weight_file, origin=origin)
    for name, shape in expected_shapes(dims).items():
        if name in tensors and tuple(tensors[name].shape) != shape:
            raise CheckpointError(f"shape {tuple(tensors[name].shape)} does not match config.json's dimensions "
                                  f"(expected {shape})", path=weight_file, field=origin.get(name, name))
    found = {int(m.group(1)) for name in tensors if (m := _LAYER.match(name))}
    if found and max(found) + 1 != dims.layers:
        key = arch.config_fields["layers"]
        raise CheckpointError(f"says {dims.layers} layers, the weights hold {max(found) + 1} "
                              f"(layers {min(found)}..{max(found)})", path=config_file, field=key)
