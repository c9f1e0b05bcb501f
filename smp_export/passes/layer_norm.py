"""Graph pass: the LayerNorm after a SparseLinear (or SparseLinearInt8) node moves into it
(BERT's post-norm).

Before / after (γ, β constant [rows], normalised over the last axis)::

    SparseLinear(X, ..., R) ─ Y ─ LayerNormalization(Y, γ, β; axis -1, ε) ─► Z
    SparseLinear(X, ..., R, γ, β, ε) ─► Z          (inputs 6-8; ε a one-element initializer)

On SparseLinearInt8 γ, β, ε are inputs 7-9 (after its scale, bias and residual).

The kernel normalises each token's output row while it is still in cache.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .matcher import GraphView, fold_each, linear_inputs, node_attrs, pad_inputs


def _fold(view: GraphView, node: onnx.NodeProto) -> bool:
    rows = int(node_attrs(node)["shape"][0])
    ln = view.only_consumer(node.output[0], "LayerNormalization")
    if ln is None or len(ln.input) != 3 or len([o for o in ln.output if o]) != 1:
        return False
    attrs = node_attrs(ln)
    if attrs.get("axis", -1) != -1 or attrs.get("stash_type", 1) != 1:
        return False
    if any(view.initializer(name) is None or list(view.initializer(name).dims) != [rows] for name in ln.input[1:]):
        return False
    eps = numpy_helper.from_array(np.array([attrs.get("epsilon", 1e-5)], dtype=np.float32),
                                  f"{node.name.rsplit('/', 1)[0]}/ln_epsilon")
    view.graph.initializer.append(eps)
    pad_inputs(node, linear_inputs(node).layer_norm)
    node.input.extend([ln.input[1], ln.input[2], eps.name])
    node.output[0] = ln.output[0]
    view.graph.node.remove(ln)
    return True


def _without_layer_norm(node: onnx.NodeProto) -> bool:
    """A sparse linear (fp32 or int8) without a LayerNorm yet."""
    layout = linear_inputs(node)
    return layout is not None and len(node.input) <= layout.layer_norm


def layer_norm_fusion_pass(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with each LayerNorm after a SparseLinear or SparseLinearInt8 folded into it."""
    return fold_each(model, _without_layer_norm, _fold, "layer_norm_fusion_pass")
