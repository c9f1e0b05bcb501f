"""Graph pass: the residual Add after a SparseLinear (or SparseLinearInt8) node moves into it.

Before / after (R a computed tensor of Y's statically inferred shape)::

    SparseLinear(X, ...) ─ Y ─ Add(Y, R) ─► Z
    SparseLinear(X, ..., R) ─► Z          (input 5: the residual; 6 on SparseLinearInt8)

The kernel adds R while each output row is still in cache, instead of a second pass over the
whole tensor. Constants (a bias) are not residuals: they stay where they are.
"""

from __future__ import annotations

import onnx

from .matcher import GraphView, fold_each, inferred_shapes, linear_inputs, pad_inputs


def _known_same(shapes: dict[str, list], a: str, b: str) -> bool:
    return a in shapes and b in shapes and shapes[a] == shapes[b] and all(d is not None for d in shapes[a])


def _fold(view: GraphView, node: onnx.NodeProto, shapes: dict[str, list]) -> bool:
    add = view.only_consumer(node.output[0], "Add")
    if add is None or len(add.input) != 2:
        return False
    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    if view.initializer(other) is not None or other == node.output[0] or not _known_same(shapes, add.output[0], other):
        return False
    pad_inputs(node, linear_inputs(node).residual)
    node.input.append(other)
    node.output[0] = add.output[0]
    view.graph.node.remove(add)
    return True


def _plain(node: onnx.NodeProto) -> bool:
    """A sparse linear (fp32 or int8) without a residual or LayerNorm yet."""
    layout = linear_inputs(node)
    return layout is not None and len(node.input) <= layout.residual


def residual_fusion_pass(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with each residual Add after a plain SparseLinear or SparseLinearInt8
    folded into it."""
    shapes = inferred_shapes(model)
    return fold_each(model, _plain, lambda view, node: _fold(view, node, shapes), "residual_fusion_pass")
