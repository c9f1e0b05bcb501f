"""Mask granularities: which weights share one score, and how unit scores become weight masks.

One definition for training (``smp_train``) and export (the SMP reader), as ``masks`` is for
unstructured scores. A granularity names the *units* a score belongs to:

==============  =====================================================  ======================
granularity     one score per                                           score tensor (key)
==============  =====================================================  ======================
``weight``      weight (unstructured SMP)                               ``<linear>.weight``
``neuron``      FFN neuron: row j of the intermediate weight and       ``encoder.layer.L.
                column j of the output weight                           intermediate.neuron_scores``
``head``        attention head: its Q/K/V rows and ``W_o`` columns      ``encoder.layer.L.
                                                                        attention.head_scores``
``structured``  both of the above (FFN neurons + attention heads)
``hybrid``      ``structured``, and one score per weight: the           both, and
                units' masks times the TopK of ``inner_keep``           ``<linear>.weight``
``block:RxC``   R x C block of each of the 6 linears                    ``<linear>.weight``
``N:M``         weight; N of every M consecutive inputs are kept        ``<linear>.weight``
==============  =====================================================  ======================

Sketch (``neuron``, one layer, intermediate 4, keep 0.5)::

    neuron_scores  [0.3, -1.2, 2.0, 0.1]  -> top 2 -> [1, 0, 1, 0]
    W1 (4 x H) rows    1, 0, 1, 0           W2 (H x 4) columns 1, 0, 1, 0

A whole unit is masked at once, so ``compact`` removes it exactly and every execution
provider runs the smaller matrices. SMP-L keeps ``int(keep * units)`` units of each layer;
SMP-S gives each layer its own ratio from the mean sigmoid of its unit scores within the
unit type (neurons, heads, or a block matrix type), as ``masks.smp_s_keep_ratios`` does for
weights. N:M masks have a fixed density N/M: during the schedule, ``ceil(keep * M)`` (at least
N) of every M are kept.

A hybrid's ``inner_keep`` is the share of each *whole* matrix that its per-weight scores keep
(SMP-S: spread over the layers of each matrix type), intersected with the kept units; the share
inside the kept units is about ``inner_keep`` when the two selections are independent, higher
where they agree (the shipped hybrid 0.20 / 0.33 / 0.30: 0.34 of the weights its units keep).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .arch import EncoderDims
from .checkpoint import MATRIX_TYPES, linear_module, parse_linear_name
from .errors import MaskError
from .masks import smp_l_masks, smp_s_keep_ratios, smp_s_masks, smp_s_ratio_map, topk_mask

KINDS: tuple[str, ...] = ("weight", "neuron", "head", "structured", "hybrid", "block", "nm")
FFN_TYPES = ("intermediate", "output")
ATTENTION_TYPES = ("query", "key", "value", "attention_output")
NEURON_SCORES = "neuron_scores"
HEAD_SCORES = "head_scores"
BLOCK_SCORES = "block_scores"     # the parameter of each linear under block:RxC
_BLOCK = re.compile(r"block:(\d+)x(\d+)")
_NM = re.compile(r"(\d+):(\d+)")


@dataclass(frozen=True)
class Granularity:
    """A parsed granularity (``Granularity.parse("block:1x4")``); ``str()`` gives it back."""

    kind: str = "weight"
    rows: int = 1          # block shape
    cols: int = 1
    n: int = 0             # N:M
    m: int = 0

    @classmethod
    def parse(cls, text: str) -> Granularity:
        """``weight``, ``neuron``, ``head``, ``structured``, ``hybrid``, ``block:RxC`` or ``N:M``;
        MaskError otherwise."""
        text = str(text).strip().lower()
        if text in ("weight", "neuron", "head", "structured", "hybrid"):
            return cls(kind=text)
        if match := _BLOCK.fullmatch(text):
            rows, cols = int(match.group(1)), int(match.group(2))
            if rows < 1 or cols < 1:
                raise MaskError(f"block shape must be positive, got {text!r}", field="granularity")
            return cls(kind="block", rows=rows, cols=cols)
        if match := _NM.fullmatch(text):
            n, m = int(match.group(1)), int(match.group(2))
            if not 0 < n < m:
                raise MaskError(f"N:M needs 0 < N < M, got {text!r}", field="granularity")
            return cls(kind="nm", n=n, m=m)
        raise MaskError(f"unknown granularity {text!r}; choose weight, neuron, head, structured, hybrid, "
                        "block:RxC (e.g. block:32x32) or N:M (e.g. 2:4)", field="granularity")

    def __str__(self) -> str:
        if self.kind == "block":
            return f"block:{self.rows}x{self.cols}"
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        return self.kind

    @property
    def unstructured(self) -> bool:
        return self.kind == "weight"

    @property
    def per_weight_scores(self) -> bool:
        """Scores have their weight's shape (``*.mask_scores``): weight and N:M."""
        return self.kind in ("weight", "nm")

    @property
    def weight_scores(self) -> bool:
        """Whether a score per weight is trained (alone, or inside the units for ``hybrid``)."""
        return self.kind in ("weight", "nm", "hybrid")

    @property
    def neurons(self) -> bool:
        return self.kind in ("neuron", "structured", "hybrid")

    @property
    def heads(self) -> bool:
        return self.kind in ("head", "structured", "hybrid")

    def fixed_keep(self) -> float | None:
        """The density this granularity forces (N/M), or None."""
        return self.n / self.m if self.kind == "nm" else None


WEIGHT = Granularity()
STRUCTURED = Granularity(kind="structured")


def neuron_key(layer: int) -> str:
    return f"encoder.layer.{layer}.intermediate.{NEURON_SCORES}"


def head_key(layer: int) -> str:
    return f"encoder.layer.{layer}.attention.{HEAD_SCORES}"


def _weight(layer: int, matrix_type: str) -> str:
    return f"{linear_module(layer, matrix_type)}.weight"


def weight_shapes(dims: EncoderDims) -> dict[str, tuple[int, int]]:
    """(out, in) of every pruned linear of a BERT encoder with ``dims``."""
    h, i = dims.hidden, dims.intermediate
    shape = {"query": (h, h), "key": (h, h), "value": (h, h), "attention_output": (h, h),
             "intermediate": (i, h), "output": (h, i)}
    return {_weight(layer, t): shape[t] for layer in range(dims.layers) for t in MATRIX_TYPES}


def score_shapes(g: Granularity, dims: EncoderDims) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every score tensor that ``g`` trains; MaskError if ``g`` does not divide."""
    shapes = weight_shapes(dims)
    if g.per_weight_scores:
        if g.kind == "nm":
            for name, (_, cols) in shapes.items():
                if cols % g.m:
                    raise MaskError(f"{g} does not divide the {cols} input columns", field=name)
        return dict(shapes)
    if g.kind == "block":
        out: dict[str, tuple[int, ...]] = {}
        for name, (rows, cols) in shapes.items():
            if rows % g.rows or cols % g.cols:
                raise MaskError(f"{g} does not divide the {rows} x {cols} matrix", field=name)
            out[name] = (rows // g.rows, cols // g.cols)
        return out
    if g.heads and dims.hidden % dims.heads:
        raise MaskError(f"hidden size {dims.hidden} is not a multiple of {dims.heads} heads",
                        field="num_attention_heads")
    out = {}
    for layer in range(dims.layers):
        if g.heads:
            out[head_key(layer)] = (dims.heads,)
        if g.neurons:
            out[neuron_key(layer)] = (dims.intermediate,)
    if g.kind == "hybrid":
        out.update(shapes)
    return out


def check_scores(g: Granularity, scores: Mapping[str, torch.Tensor], dims: EncoderDims) -> None:
    """MaskError naming the first score tensor that is missing or has the wrong shape."""
    for key, shape in score_shapes(g, dims).items():
        if key not in scores:
            raise MaskError(f"{g} scores missing", field=key)
        if tuple(scores[key].shape) != shape:
            raise MaskError(f"shape {tuple(scores[key].shape)} does not match {g}'s {shape}", field=key)


def _unit_type(key: str) -> str:
    if key.endswith(NEURON_SCORES):
        return "neuron"
    if key.endswith(HEAD_SCORES):
        return "head"
    return parse_linear_name(key)[1]


def nm_mask(scores: torch.Tensor, n: int, m: int, keep: float = 0.0) -> torch.Tensor:
    """Keep the ``max(n, ceil(keep * m))`` largest of every ``m`` consecutive inputs (ties: first)."""
    rows, cols = scores.shape
    k = min(m, max(n, math.ceil(keep * m - 1e-9)))
    groups = scores.detach().reshape(rows, cols // m, m)
    order = torch.argsort(-groups, dim=-1, stable=True)[..., :k]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order, True)
    return mask.reshape(rows, cols)


def budget_at(keep: float, final_keep: float, final_other: float | None) -> float | None:
    """A second budget (``head_keep``, ``inner_keep``) on the schedule that takes ``keep`` from 1
    to ``final_keep``: the same fraction of the way from 1 to ``final_other`` (None stays None)."""
    if final_other is None:
        return None
    if final_keep >= 1.0:
        return final_other
    progress = min(max((1.0 - keep) / (1.0 - final_keep), 0.0), 1.0)
    return 1.0 - progress * (1.0 - final_other)


def _split_hybrid(scores: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """(unit scores, per-weight scores) of a hybrid score set."""
    weights = {k: s for k, s in scores.items() if k.endswith(".weight")}
    return {k: s for k, s in scores.items() if k not in weights}, weights


def select(g: Granularity, method: str, scores: Mapping[str, torch.Tensor], keep: float,
           temperature: float = 1.0, *, head_keep: float | None = None,
           inner_keep: float | None = None) -> dict[str, torch.Tensor]:
    """Boolean unit masks (same keys and shapes as ``scores``) at keep ratio ``keep`` (heads at
    ``head_keep`` when given; a hybrid's per-weight scores at ``inner_keep``, default 1).

    ``smp-s``: SMP-S ratios per unit type across layers; any other method: SMP-L (top
    ``int(keep * units)`` of each tensor). N:M ignores the method (the pattern is the budget).
    """
    if g.kind == "nm":
        return {k: nm_mask(s, g.n, g.m, keep) for k, s in scores.items()}
    if g.kind == "hybrid":
        units, weights = _split_hybrid(scores)
        out = select(STRUCTURED, method, units, keep, temperature, head_keep=head_keep)
        if inner_keep is None or inner_keep >= 1.0:                 # no inner pruning: the units alone
            out.update({k: torch.ones_like(s, dtype=torch.bool) for k, s in weights.items()})
        elif method == "smp-s":
            out.update(smp_s_masks(weights, inner_keep, temperature))
        else:
            out.update(smp_l_masks(weights, inner_keep))
        return out
    budget = {"head": keep if head_keep is None else head_keep}
    if method != "smp-s":
        return {k: topk_mask(s, budget.get(_unit_type(k), keep)) for k, s in scores.items()}
    if g.kind == "block":
        ratios = smp_s_ratio_map(scores, keep, temperature)
    else:
        ratios = {}
        for unit in ("neuron", "head"):
            keys = sorted((k for k in scores if _unit_type(k) == unit), key=lambda k: int(k.split(".")[2]))
            ratios.update(zip(keys, smp_s_keep_ratios([scores[k] for k in keys], budget.get(unit, keep),
                                                      temperature)))
    return {k: topk_mask(s, ratios[k]) for k, s in scores.items()}


def expand(g: Granularity, units: Mapping[str, torch.Tensor], dims: EncoderDims) -> dict[str, torch.Tensor]:
    """Weight-shaped masks of the linears ``g`` covers, from unit masks (bool or float).

    Only differentiable operations (indexing by repetition, broadcasting): a float unit mask
    from a straight-through estimator passes each weight's gradient back, summed per unit.
    Linears ``g`` does not cover (attention under ``neuron``, FFN under ``head``) are absent.
    """
    if g.per_weight_scores:
        return dict(units)
    if g.kind == "block":
        return {k: u.repeat_interleave(g.rows, 0).repeat_interleave(g.cols, 1) for k, u in units.items()}
    if g.kind == "hybrid":                       # the units' masks times the weights' own
        structure, weights = _split_hybrid(units)
        return {name: mask * weights[name] for name, mask in expand(STRUCTURED, structure, dims).items()}
    out: dict[str, torch.Tensor] = {}
    for layer in range(dims.layers):
        if g.neurons:
            u = units[neuron_key(layer)]
            out[_weight(layer, "intermediate")] = u[:, None].expand(dims.intermediate, dims.hidden)
            out[_weight(layer, "output")] = u[None, :].expand(dims.hidden, dims.intermediate)
        if g.heads:
            per_row = units[head_key(layer)].repeat_interleave(dims.head_dim)
            for t in ("query", "key", "value"):
                out[_weight(layer, t)] = per_row[:, None].expand(dims.hidden, dims.hidden)
            out[_weight(layer, "attention_output")] = per_row[None, :].expand(dims.hidden, dims.hidden)
    return out


def structured_masks(g: Granularity, method: str, scores: Mapping[str, torch.Tensor], keep: float,
                     dims: EncoderDims, temperature: float = 1.0, *, head_keep: float | None = None,
                     inner_keep: float | None = None) -> dict[str, torch.Tensor]:
    """Boolean masks of all 6 linears per layer (uncovered ones all True) from unit scores."""
    check_scores(g, scores, dims)
    units = select(g, method, scores, keep, temperature, head_keep=head_keep, inner_keep=inner_keep)
    covered = expand(g, units, dims)
    return {name: covered[name].contiguous() if name in covered else torch.ones(shape, dtype=torch.bool)
            for name, shape in weight_shapes(dims).items()}


def magnitude_scores(g: Granularity, weights: Mapping[str, torch.Tensor], dims: EncoderDims) -> dict[str, torch.Tensor]:
    """Unit scores of the magnitude baseline: the L2 norm of each unit's weights (|W| per weight)."""
    if g.per_weight_scores:
        return {name: weights[name].detach().abs() for name in weight_shapes(dims)}
    if g.kind == "hybrid":
        return {**magnitude_scores(STRUCTURED, weights, dims), **magnitude_scores(WEIGHT, weights, dims)}
    squares = {name: weights[name].detach().float().square() for name in weight_shapes(dims)}
    if g.kind == "block":
        out = {}
        for name, sq in squares.items():
            rows, cols = sq.shape
            out[name] = sq.reshape(rows // g.rows, g.rows, cols // g.cols, g.cols).sum((1, 3)).sqrt()
        return out
    out = {}
    for layer in range(dims.layers):
        if g.neurons:
            out[neuron_key(layer)] = (squares[_weight(layer, "intermediate")].sum(1)
                                      + squares[_weight(layer, "output")].sum(0)).sqrt()
        if g.heads:
            rows = sum(squares[_weight(layer, t)].sum(1) for t in ("query", "key", "value"))
            rows = rows + squares[_weight(layer, "attention_output")].sum(0)
            out[head_key(layer)] = rows.reshape(dims.heads, dims.head_dim).sum(1).sqrt()
    return out
