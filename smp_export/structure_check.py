"""What structure a set of masks has, and whether it is the structure a checkpoint claims.

Any reader's masks can be checked: smp-train's own (``smp.granularity``), packed-bit files and
plain zero-weight models given ``smp-export --granularity``. ``structure_report`` is recorded in
every manifest (units left per layer, whether every linear is 2:4), so a zero-weight model's
empty heads and neurons are visible before ``compact`` removes them.

Sketch (``check_structure(Granularity.parse("2:4"), masks, dims)``)::

    row of a mask   1 1 0 0 | 0 1 0 1 | 1 1 1 0      third group keeps 3 of 4
    -> MaskError: encoder.layer.0.attention.self.query.weight: 7 groups of 4 keep more than 2
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .arch import EncoderDims
from .checkpoint import MATRIX_TYPES, linear_module
from .errors import MaskError
from .structure import NEURON_SCORES, Granularity, head_key, neuron_key, weight_shapes


def _uniform(units: torch.Tensor) -> torch.Tensor:
    """Per unit (rows of ``units``): True where all its entries agree (all kept or all pruned)."""
    return units.all(dim=1) | ~units.any(dim=1)


def unit_masks(masks: Mapping[str, torch.Tensor], dims: EncoderDims) -> dict[str, torch.Tensor]:
    """Per layer, each neuron's and each head's entries of every linear it spans, one row per unit."""
    out = {}
    h, d = dims.hidden, dims.head_dim
    for layer in range(dims.layers):
        w = {t: masks[f"{linear_module(layer, t)}.weight"].bool() for t in MATRIX_TYPES}
        out[neuron_key(layer)] = torch.cat([w["intermediate"], w["output"].T], dim=1)
        rows = torch.cat([w["query"], w["key"], w["value"], w["attention_output"].T], dim=1)   # (hidden, 4 hidden)
        out[head_key(layer)] = rows.reshape(dims.heads, d * 4 * h)
    return out


def _failures(g: Granularity, masks: Mapping[str, torch.Tensor], dims: EncoderDims) -> list[str]:
    problems = []
    if g.kind == "nm":
        for name, mask in masks.items():
            rows, cols = mask.shape
            if cols % g.m:
                problems.append(f"{name}: {cols} columns are not groups of {g.m}")
                continue
            over = int((mask.reshape(rows, cols // g.m, g.m).sum(-1) > g.n).sum())
            if over:
                problems.append(f"{name}: {over} groups of {g.m} keep more than {g.n}")
    elif g.kind == "block":
        for name, mask in masks.items():
            rows, cols = mask.shape
            if rows % g.rows or cols % g.cols:
                problems.append(f"{name}: {g} does not divide the {rows} x {cols} matrix")
                continue
            blocks = mask.reshape(rows // g.rows, g.rows, cols // g.cols, g.cols).permute(0, 2, 1, 3)
            mixed = int((~_uniform(blocks.reshape(-1, g.rows * g.cols))).sum())
            if mixed:
                problems.append(f"{name}: {mixed} blocks of {g.rows}x{g.cols} are partly kept")
    else:
        for key, units in unit_masks(masks, dims).items():
            neuron = key.endswith(NEURON_SCORES)
            mixed = int((~_uniform(units)).sum()) if (g.neurons if neuron else g.heads) else 0
            if mixed:
                unit = "neurons" if neuron else "heads"
                problems.append(f"{key.rpartition('.')[0]}: {mixed} {unit} are partly kept")
    return problems


def check_structure(g: Granularity, masks: Mapping[str, torch.Tensor], dims: EncoderDims, *,
                    path: str | Path | None = None, field: str = "granularity") -> None:
    """MaskError (every failure, the first few named) unless ``masks`` have the structure ``g``."""
    if g.unstructured or g.kind == "hybrid":          # hybrid: unstructured inside the units
        return
    problems = _failures(g, masks, dims)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise MaskError(f"the masks are not {g}: {shown}", path=path, field=field)


def structure_report(masks: Mapping[str, torch.Tensor], dims: EncoderDims) -> dict[str, Any]:
    """Per layer: heads and FFN neurons with any weight left; and whether every linear is 2:4."""
    units = unit_masks(masks, dims)
    heads = [int(units[head_key(layer)].any(dim=1).sum()) for layer in range(dims.layers)]
    neurons = [int(units[neuron_key(layer)].any(dim=1).sum()) for layer in range(dims.layers)]
    two_four = not _failures(Granularity(kind="nm", n=2, m=4), {n: masks[n] for n in weight_shapes(dims)}, dims)
    return {"heads_with_weights": heads, "neurons_with_weights": neurons, "two_four": two_four}
