"""What the tensors of a model directory must agree on before anything is built from them.

Every floating tensor finite; the embeddings, each encoder layer's matrices and LayerNorms,
the pooler and the heads shaped as config.json's dimensions say; as many encoder layers in the
weights as config.json states. A violation is a CheckpointError naming the file the tensor
came from and the tensor (or the config field).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ..arch import Architecture, EncoderDims
from ..checkpoint import MATRIX_TYPES, linear_module
from ..errors import CheckpointError, MaskError

SCORE_SUFFIX = ".mask_scores"
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")


def expected_shapes(dims: EncoderDims) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of the embeddings, every encoder linear (weights and biases) and
    LayerNorm, the pooler and the MLM head's fixed-size tensors."""
    h, inner = dims.hidden, dims.intermediate
    shapes: dict[str, tuple[int, ...]] = {"embeddings.word_embeddings.weight": (dims.vocab_size, h),
                                          "embeddings.position_embeddings.weight": (dims.max_positions, h)}
    if dims.type_vocab_size:
        shapes["embeddings.token_type_embeddings.weight"] = (dims.type_vocab_size, h)
    linear = {"intermediate": (inner, h), "output": (h, inner)}
    norms = ["embeddings.LayerNorm", "cls.predictions.transform.LayerNorm"]
    for layer in range(dims.layers):
        for matrix_type in MATRIX_TYPES:
            out, inp = linear.get(matrix_type, (h, h))
            module = linear_module(layer, matrix_type)
            shapes[f"{module}.weight"] = (out, inp)
            shapes[f"{module}.bias"] = (out,)
        norms += [f"encoder.layer.{layer}.attention.output.LayerNorm", f"encoder.layer.{layer}.output.LayerNorm"]
    for norm in norms:
        shapes[f"{norm}.weight"] = shapes[f"{norm}.bias"] = (h,)
    for dense in ("pooler.dense", "cls.predictions.transform.dense"):
        shapes[f"{dense}.weight"], shapes[f"{dense}.bias"] = (h, h), (h,)
    shapes["cls.predictions.decoder.weight"] = (dims.vocab_size, h)
    shapes["cls.predictions.decoder.bias"] = shapes["cls.predictions.bias"] = (dims.vocab_size,)
    return shapes


def head_shapes(tensors: Mapping[str, torch.Tensor], hidden: int) -> dict[str, tuple[int, ...]]:
    """Expected shapes of the heads whose row count the checkpoint chooses (the classifier's
    labels, the prototypes' classes): ``[rows, hidden]`` and a bias of ``rows``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for matrix in ("classifier", "prototype"):
        weight = tensors.get(f"{matrix}.weight")
        rows = int(weight.shape[0]) if weight is not None and weight.ndim >= 1 else 0
        shapes[f"{matrix}.weight"], shapes[f"{matrix}.bias"] = (rows, hidden), (rows,)
    return shapes


def check_shapes(tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]], *,
                 file_of: Callable[[str], Path], origin: Mapping[str, str] | None = None) -> None:
    """CheckpointError naming the tensor and its file when one of ``shapes`` disagrees."""
    for name, shape in shapes.items():
        if name in tensors and tuple(tensors[name].shape) != shape:
            raise CheckpointError(f"shape {tuple(tensors[name].shape)} does not match config.json's dimensions "
                                  f"(expected {shape})", path=file_of(name), field=(origin or {}).get(name, name))


def check_finite_tensors(tensors: Mapping[str, torch.Tensor], *, path: Path,
                         origin: Mapping[str, str] | None = None,
                         files: Mapping[str, Path] | None = None) -> None:
    """CheckpointError naming the file (``files[name]``, else ``path``) and the first floating
    tensor holding NaN or +/-inf."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            error = MaskError if name.endswith(SCORE_SUFFIX) else CheckpointError   # scores are mask inputs
            raise error(f"{bad} non-finite values (NaN/inf) of {tensor.numel()}; weights and scores must be "
                        "finite", path=(files or {}).get(name, path), field=(origin or {}).get(name, name))


def check_tensors(tensors: Mapping[str, torch.Tensor], origin: Mapping[str, str], dims: EncoderDims, *,
                  arch: Architecture, weight_file: Path, config_file: Path,
                  files: Mapping[str, Path] | None = None) -> None:
    """Finite values, shapes that match ``dims``, and the layer count config.json states.
    ``files``: the file each (canonical) tensor came from, for sharded checkpoints."""
    check_finite_tensors(tensors, path=weight_file, origin=origin, files=files)
    shapes = {**expected_shapes(dims), **head_shapes(tensors, dims.hidden)}
    check_shapes(tensors, shapes, file_of=lambda name: (files or {}).get(name, weight_file), origin=origin)
    found = {int(m.group(1)) for name in tensors if (m := _LAYER.match(name))}
    if found and max(found) + 1 != dims.layers:
        key = arch.config_fields["layers"]
        raise CheckpointError(f"says {dims.layers} layers, the weights hold {max(found) + 1} "
                              f"(layers {min(found)}..{max(found)})", path=config_file, field=key)
