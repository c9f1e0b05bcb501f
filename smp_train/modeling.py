"""The pruned model: a frozen BERT whose 6 encoder linears per layer carry mask scores.

``MaskedLinear`` replaces each ``nn.Linear`` in place, keeping its ``weight`` / ``bias``
parameters and adding ``mask_scores`` (same shape as the weight). ``SmpModel.forward``
turns the scores into masks at the keep ratio it is given (``smp_train.masking``, rules of
``smp_export.masks``), applies them with a straight-through estimator and runs the head.
State-dict names are canonical (``bert.encoder.layer.0.attention.self.query.mask_scores``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel

from smp_export.arch import BERT
from smp_export.checkpoint import linear_weight_names
from smp_export.structure import (BLOCK_SCORES, WEIGHT, Granularity, budget_at, expand, magnitude_scores,
                                  score_shapes, select, structured_masks)

from .config import SCORE_METHODS
from .masking import StraightThroughMask, masks_for

logger = logging.getLogger(__name__)


class MaskedLinear(nn.Module):
    """``y = x @ (W * M)^T + b``; ``M`` is set from outside for each forward (None: dense)."""

    def __init__(self, linear: nn.Linear, *, score_init: float | None, train_weight: bool):
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight.requires_grad_(train_weight)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        if score_init is not None:
            self.mask_scores = nn.Parameter(torch.full_like(self.weight, float(score_init), requires_grad=True))
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.mask is None else self.weight * self.mask
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        scored = hasattr(self, "mask_scores")
        return f"in_features={self.in_features}, out_features={self.out_features}, scored={scored}"


def _replace_linears(bert: BertModel, names: list[str], *, score_init: float | None,
                     train_weight: bool) -> None:
    for name in names:
        module_path = name.removesuffix(".weight")
        parent_path, _, child = module_path.rpartition(".")
        parent = bert.get_submodule(parent_path)
        linear = getattr(parent, child)
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{module_path} is {type(linear).__name__}, expected nn.Linear")
        setattr(parent, child, MaskedLinear(linear, score_init=score_init, train_weight=train_weight))


def _score_owner(key: str, granularity: Granularity) -> tuple[str, str]:
    """(module path, parameter name) of a score key: a linear's ``mask_scores`` (per-weight scores)
    or ``block_scores``; ``encoder.layer.0.intermediate.neuron_scores`` is itself a parameter path."""
    if key.endswith(".weight"):
        return key.removesuffix(".weight"), "mask_scores" if granularity.weight_scores else BLOCK_SCORES
    module_path, _, attr = key.rpartition(".")
    return module_path, attr


class SmpModel(nn.Module):
    """Frozen encoder + head; ``forward(..., keep=v)`` prunes every scored linear to ``keep``.

    ``method``: ``smp-s`` / ``smp-l`` / ``global-topk`` (scores trained), ``movement``
    (scores and weights trained), ``magnitude`` (fixed masks from ``set_fixed_masks``),
    ``dense`` (no masks).
    """

    accepts_loss_kwargs = False    # tells the HF Trainer to average the loss over accumulation

    def __init__(self, bert: BertModel, head: nn.Module, *, method: str, temperature: float = 1.0,
                 score_init: float = 0.0, score_init_mode: str = "constant", granularity: Granularity = WEIGHT,
                 final_keep: float = 1.0, head_keep: float | None = None, inner_keep: float | None = None):
        super().__init__()
        self.bert = bert
        self.head = head
        self.method = method
        self.temperature = float(temperature)
        self.granularity = granularity
        self.final_keep, self.head_keep, self.inner_keep = float(final_keep), head_keep, inner_keep
        self.dims = BERT.dims(bert.config)
        self.linear_names = linear_weight_names(bert.config.num_hidden_layers)
        for param in self.bert.parameters():
            param.requires_grad_(False)
        scored = method in SCORE_METHODS
        _replace_linears(bert, self.linear_names, score_init=score_init if scored and granularity.weight_scores
                         else None, train_weight=method == "movement")
        if scored and not granularity.per_weight_scores:
            self._add_unit_scores(score_init)
        if scored and score_init_mode == "magnitude":
            self._init_scores_from_magnitude()
        self._fixed_masks: dict[str, torch.Tensor] | None = None
        self._cache: tuple[tuple, dict[str, torch.Tensor]] | None = None

    def _add_unit_scores(self, score_init: float) -> None:
        """One score parameter per unit (``smp_export.structure``), on the module its key names."""
        for key, shape in score_shapes(self.granularity, self.dims).items():
            if self.granularity.weight_scores and key.endswith(".weight"):
                continue                                     # the linear's own mask_scores
            module_path, attr = _score_owner(key, self.granularity)
            param = nn.Parameter(torch.full(shape, float(score_init)), requires_grad=True)
            self.bert.get_submodule(module_path).register_parameter(attr, param)

    @torch.no_grad()
    def _init_scores_from_magnitude(self) -> None:
        """``S_0 = m / mean(m)`` per score tensor, with ``m`` the magnitude of each unit (|W| per
        weight, the L2 norm of a neuron / head / block): the first masks are magnitude masks."""
        weights = {n: mod.weight for n, mod in self.masked_linears().items()}
        for key, magnitude in magnitude_scores(self.granularity, weights, self.dims).items():
            self.scores()[key].copy_(magnitude / magnitude.mean().clamp(min=1e-12))

    # ------------------------------------------------------------------ access

    @property
    def config(self):
        return self.bert.config

    def masked_linears(self) -> dict[str, MaskedLinear]:
        """Canonical weight name -> its MaskedLinear, layer by layer in MATRIX_TYPES order."""
        return {name: self.bert.get_submodule(name.removesuffix(".weight")) for name in self.linear_names}

    def scores(self) -> dict[str, torch.Tensor]:
        """Score key -> parameter (empty without scores): the canonical weight name for per-weight
        and block scores, ``encoder.layer.L.intermediate.neuron_scores`` / ``...attention.head_scores``
        for neurons and heads (``smp_export.structure``)."""
        if self.method not in SCORE_METHODS:
            return {}
        if self.granularity.per_weight_scores:
            return {name: mod.mask_scores for name, mod in self.masked_linears().items()}
        out = {}
        for key in score_shapes(self.granularity, self.dims):
            module_path, attr = _score_owner(key, self.granularity)
            out[key] = getattr(self.bert.get_submodule(module_path), attr)
        return out

    def set_fixed_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Use these boolean masks for every forward (magnitude pruning baseline)."""
        missing = [n for n in self.linear_names if n not in masks]
        if missing:
            raise KeyError(f"fixed masks missing for {missing[0]}")
        self._fixed_masks = {n: masks[n].bool() for n in self.linear_names}

    def masks(self, keep: float) -> dict[str, torch.Tensor] | None:
        """Boolean masks at ``keep`` (None: the dense model)."""
        if self._fixed_masks is not None:
            return self._fixed_masks
        if self.method not in SCORE_METHODS:
            return None
        if self.granularity.unstructured:
            return masks_for(self.method, self.scores(), keep, self.temperature)
        return structured_masks(self.granularity, self.method, self.scores(), keep, self.dims, self.temperature,
                                **self._budgets(keep))

    def _budgets(self, keep: float) -> dict[str, float | None]:
        """The heads' and a hybrid's inner budgets at ``keep`` (on the same schedule)."""
        return {"head_keep": budget_at(keep, self.final_keep, self.head_keep),
                "inner_keep": budget_at(keep, self.final_keep, self.inner_keep)}

    def _unit_masks(self, keep: float, *, straight_through: bool) -> dict[str, torch.Tensor]:
        """Weight-shaped masks of the linears the granularity covers (absent ones stay dense);
        with ``straight_through`` the unit scores receive the gradient of their weights' masks."""
        scores = self.scores()
        units = select(self.granularity, self.method, scores, keep, self.temperature, **self._budgets(keep))
        if straight_through:
            units = {k: StraightThroughMask.apply(scores[k], u) for k, u in units.items()}
        else:
            units = {k: u.to(scores[k].dtype) for k, u in units.items()}
        return expand(self.granularity, units, self.dims)

    # ------------------------------------------------------------------ forward

    def _apply_masks(self, keep: float | None, dense: bool) -> None:
        linears = self.masked_linears()
        no_masks = self._fixed_masks is None and (keep is None or self.method not in SCORE_METHODS)
        if dense or no_masks:
            for mod in linears.values():
                mod.mask = None
            return
        if self._fixed_masks is not None:
            for name, mod in linears.items():
                mod.mask = self._fixed_masks[name].to(device=mod.weight.device, dtype=mod.weight.dtype)
            return
        scores = self.scores()
        straight_through = torch.is_grad_enabled() and any(s.requires_grad for s in scores.values())
        if straight_through and self.granularity.unstructured:
            masks = self.masks(keep)
            for name, mod in linears.items():
                mod.mask = StraightThroughMask.apply(scores[name], masks[name])
            return
        if straight_through:
            masks = self._unit_masks(keep, straight_through=True)
            for name, mod in linears.items():
                mod.mask = masks.get(name)
            return
        key = (keep, tuple(s._version for s in scores.values()), tuple(s.data_ptr() for s in scores.values()))
        if self._cache is None or self._cache[0] != key:
            if self.granularity.unstructured:
                masks = {n: m.to(scores[n].dtype) for n, m in self.masks(keep).items()}
            else:
                masks = self._unit_masks(keep, straight_through=False)
            self._cache = (key, masks)
        for name, mod in linears.items():
            mod.mask = self._cache[1].get(name)

    def _clear_masks(self) -> None:
        for mod in self.masked_linears().values():
            mod.mask = None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, keep: float | None = None,
                dense: bool = False) -> dict[str, torch.Tensor]:
        """Logits of the model pruned to ``keep`` (``dense=True``: no masks, the teacher)."""
        self._apply_masks(keep, dense)
        try:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            return {"logits": self.head(hidden, attention_mask)}
        finally:
            self._clear_masks()

    # ------------------------------------------------------------------ state

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The tensors training changes (scores, head, movement weights), by state-dict name."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {n: t for n, t in self.state_dict().items() if n in names}

    def canonical_state(self) -> dict[str, torch.Tensor]:
        """Every tensor under the names smp-export reads (no ``bert.`` prefix)."""
        state = {name: t for name, t in self.bert.state_dict().items()
                 if not name.endswith(("position_ids", "token_type_ids"))}
        state.update(self.head.canonical_state())
        return state


def checkpoint_has_mlm_head(model_dir: Path) -> bool:
    """Whether the weight files of ``model_dir`` hold an MLM head (``cls.predictions.*``)."""
    from smp_export.readers.files import weight_keys

    return any(k.removeprefix("bert.").startswith("cls.predictions.") for k in weight_keys(model_dir))
