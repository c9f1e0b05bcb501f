"""Graph pass: the LayerNorm after a SparseLinear node moves into it (BERT's post-norm).

Before / after (γ, β constant [rows], normalised over the last axis)::

    SparseLinear(X, ..., R) ─ Y ─ LayerNormalization(Y, γ, β; axis -1, ε) ─► Z
    SparseLinear(X, ..., R, γ, β, ε) ─► Z          (inputs 6-8; ε a one-element initializer)

The kernel normalises each token's output row while it is still in cache.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from runtime.kernels import SPARSE_OP

from .matcher import GraphView, fold_each, is_kernel, node_attrs, pad_inputs

LN_INPUT = 6


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
    pad_inputs(node, LN_INPUT)
    node.input.extend([ln.input[1], ln.input[2], eps.name])
    node.output[0] = ln.output[0]
    view.graph.node.remove(ln)
    return True


def layer_norm_fusion_pass(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with each LayerNorm after a SparseLinear folded into it."""
    return fold_each(model, lambda n: is_kernel(n, SPARSE_OP) and len(n.input) <= LN_INPUT, _fold,
                     "layer_norm_fusion_pass")
