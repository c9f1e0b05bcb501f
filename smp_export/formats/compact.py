"""Structural compaction: drop attention heads and FFN neurons that provably do nothing.

Input are *masked* canonical weights (``PrunedCheckpoint.masked_weights()``) of a BERT
encoder; output are smaller matrices under the same names that compute exactly the same
function (up to float rounding) at inference, where dropout is off.

Attention head ``h`` (``d = hidden / heads``; rows ``h*d:(h+1)*d`` of Q/K/V, the same
columns of the attention-output weight ``W_o``) is removed iff

- its ``W_o`` columns are all zero: its context never reaches the output; or
- its value rows are all zero: its value vectors are the constant ``b_v[h]``, and as every
  softmax row sums to 1 (padding included) its context is ``b_v[h]`` too. The constant
  ``W_o[:, h] @ b_v[h]`` is folded into the attention-output bias.

All-zero Q or K rows do **not** make a head removable: the scores then come from the biases
(``b_q . k_j`` or ``q_i . b_k``) and still weight the input-dependent values; with both Q
and K empty the head averages the values over the unmasked positions, which still depends
on the input. Such heads are kept.

FFN neuron ``j`` (row ``j`` of the intermediate weight and bias, column ``j`` of the output
weight ``W2``) is removed iff its ``W2`` column is all zero, or its intermediate row is all
zero: then ``h_j = act(b1[j])`` is constant and ``W2[:, j] * act(b1[j])`` is folded into
the output bias.

If every head (every neuron) of a layer is removable, the first one (index 0) is kept as a
placeholder with all its weights and biases (Q/K/V rows, ``W_o`` columns; intermediate row,
``W2`` column) zeroed after folding, so the graph has no zero-sized tensors and the sparse
formats store nothing for it. Placeholders are not counted as removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers.activations import ACT2FN

from ..arch import EncoderDims
from ..checkpoint import linear_module, linear_weight_names
from ..errors import CheckpointError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompactionConfig:
    """Which structures ``compact`` may remove."""

    remove_heads: bool = True
    remove_neurons: bool = True


@dataclass
class CompactionResult:
    """Compacted weights and, per layer, the original indices of the units kept."""

    weights: dict[str, torch.Tensor]
    heads_kept: list[list[int]]
    neurons_kept: list[list[int]]
    heads_removed: int
    neurons_removed: int

    def num_heads(self, layer: int) -> int:
        """Attention heads left in ``layer``."""
        return len(self.heads_kept[layer])

    def intermediate_size(self, layer: int) -> int:
        """FFN neurons left in ``layer``."""
        return len(self.neurons_kept[layer])


def _get(weights: dict[str, torch.Tensor], name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """``weights[name]``, checked against ``shape``; CheckpointError if missing or misshapen."""
    if name not in weights:
        raise CheckpointError("weight missing, cannot compact", field=name)
    tensor = weights[name]
    if tuple(tensor.shape) != shape:
        raise CheckpointError(f"shape {tuple(tensor.shape)} does not match the config's {shape}", field=name)
    return tensor


def _head_index(heads: list[int], d: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * d, (h + 1) * d) for h in heads])


def _compact_heads(w: dict[str, torch.Tensor], layer: int, dims: EncoderDims) -> list[int]:
    """Remove the removable heads of ``layer`` in ``w`` (in place); return the heads kept."""
    hidden, n, d = dims.hidden, dims.heads, dims.head_dim
    mods = {t: linear_module(layer, t) for t in ("query", "key", "value", "attention_output")}
    for m in mods.values():
        _get(w, f"{m}.weight", (hidden, hidden))
        _get(w, f"{m}.bias", (hidden,))
    wv, bv = w[f"{mods['value']}.weight"], w[f"{mods['value']}.bias"]
    wo_name, bo_name = f"{mods['attention_output']}.weight", f"{mods['attention_output']}.bias"
    wo, bo = w[wo_name], w[bo_name]
    out_live = (wo != 0).reshape(hidden, n, d).any(dim=2).any(dim=0)
    value_live = (wv != 0).reshape(n, d, hidden).any(dim=2).any(dim=1)
    kept = [h for h in range(n) if out_live[h] and value_live[h]]
    folded = [h for h in range(n) if out_live[h] and not value_live[h]]
    if len(kept) == n:
        return kept
    if folded:
        idx = _head_index(folded, d)
        bo = (bo.double() + wo[:, idx].double() @ bv[idx].double()).to(bo.dtype)
    placeholder = not kept
    kept = kept or [0]
    idx = _head_index(kept, d)
    for t in ("query", "key", "value"):
        w[f"{mods[t]}.weight"] = w[f"{mods[t]}.weight"][idx].clone()
        w[f"{mods[t]}.bias"] = w[f"{mods[t]}.bias"][idx].clone()
    w[wo_name] = wo[:, idx].clone()
    if placeholder:
        for t in mods.values():
            w[f"{t}.weight"].zero_()
        for t in ("query", "key", "value"):
            w[f"{mods[t]}.bias"].zero_()
    w[bo_name] = bo
    return kept


def _compact_neurons(w: dict[str, torch.Tensor], layer: int, dims: EncoderDims) -> list[int]:
    """Remove the removable FFN neurons of ``layer`` in ``w`` (in place); return those kept."""
    hidden, inter = dims.hidden, dims.intermediate
    m1, m2 = linear_module(layer, "intermediate"), linear_module(layer, "output")
    w1, b1 = _get(w, f"{m1}.weight", (inter, hidden)), _get(w, f"{m1}.bias", (inter,))
    w2, b2 = _get(w, f"{m2}.weight", (hidden, inter)), _get(w, f"{m2}.bias", (hidden,))
    out_live = (w2 != 0).any(dim=0)
    in_live = (w1 != 0).any(dim=1)
    kept = torch.nonzero(out_live & in_live).flatten().tolist()
    folded = torch.nonzero(out_live & ~in_live).flatten()
    if len(kept) == inter:
        return kept
    if folded.numel():
        constant = ACT2FN[dims.activation](b1[folded]).double()
        b2 = (b2.double() + w2[:, folded].double() @ constant).to(b2.dtype)
    placeholder = not kept
    kept = kept or [0]
    idx = torch.tensor(kept)
    w[f"{m1}.weight"], w[f"{m1}.bias"] = w1[idx].clone(), b1[idx].clone()
    w[f"{m2}.weight"], w[f"{m2}.bias"] = w2[:, idx].clone(), b2
    if placeholder:
        for tensor in (w[f"{m1}.weight"], w[f"{m1}.bias"], w[f"{m2}.weight"]):
            tensor.zero_()
    return kept


def compact(weights: dict[str, torch.Tensor], dims: EncoderDims,
            compaction_config: CompactionConfig = CompactionConfig()) -> CompactionResult:
    """Remove every exactly-removable head and FFN neuron (see the module docstring).

    ``weights`` are masked canonical weights; they are not modified. Names other than the
    encoder's linears (and their biases) are passed through as the same tensors.
    """
    w = dict(weights)
    heads_kept, neurons_kept = [], []
    for layer in range(dims.layers):
        heads_kept.append(_compact_heads(w, layer, dims) if compaction_config.remove_heads
                          else list(range(dims.heads)))
        neurons_kept.append(_compact_neurons(w, layer, dims) if compaction_config.remove_neurons
                            else list(range(dims.intermediate)))
    total_heads, total_neurons = dims.layers * dims.heads, dims.layers * dims.intermediate
    result = CompactionResult(weights=w, heads_kept=heads_kept, neurons_kept=neurons_kept,
                              heads_removed=total_heads - sum(map(len, heads_kept)),
                              neurons_removed=total_neurons - sum(map(len, neurons_kept)))
    logger.info("compaction: removed %d/%d attention heads and %d/%d FFN neurons",
                result.heads_removed, total_heads, result.neurons_removed, total_neurons)
    return result


def layer_shapes(result: CompactionResult) -> dict[str, tuple[int, int]]:
    """``(out, in)`` of every encoder linear weight after compaction, by canonical name."""
    names = linear_weight_names(len(result.heads_kept))
    return {name: (int(result.weights[name].shape[0]), int(result.weights[name].shape[1])) for name in names}

