"""Graph pass: the residual Add after a SparseLinear node moves into it.

Before / after (R a computed tensor of Y's statically inferred shape)::

    SparseLinear(X, ...) ─ Y ─ Add(Y, R) ─► Z
    SparseLinear(X, ..., R) ─► Z          (input 5: the residual)

The kernel adds R while each output row is still in cache, instead of a second pass over the
whole tensor. Constants (a bias) are not residuals: they stay where they are.
"""

from __future__ import annotations

import logging

import onnx

from runtime.kernels import SPARSE_OP

from .matcher import GraphView, copy_model, inferred_shapes, is_kernel, pad_inputs, remove_unused

logger = logging.getLogger(__name__)

RESIDUAL_INPUT = 5


def _known_same(shapes: dict[str, list], a: str, b: str) -> bool:
    return a in shapes and b in shapes and shapes[a] == shapes[b] and all(d is not None for d in shapes[a])


def residual_fusion_pass(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with each residual Add after a plain SparseLinear folded into it."""
    out = copy_model(model)
    view = GraphView(out.graph)
    shapes = inferred_shapes(out)
    fused = 0
    for node in [n for n in out.graph.node if is_kernel(n, SPARSE_OP) and len(n.input) <= RESIDUAL_INPUT]:
        add = view.only_consumer(node.output[0], "Add")
        if add is None or len(add.input) != 2:
            continue
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        if view.initializer(other) is not None or other == node.output[0]:
            continue
        if not _known_same(shapes, add.output[0], other):
            continue
        pad_inputs(node, RESIDUAL_INPUT)
        node.input.append(other)
        node.output[0] = add.output[0]
        out.graph.node.remove(add)
        view.invalidate()
        fused += 1
    remove_unused(out.graph)
    logger.info("residual_fusion_pass: %d residual adds folded", fused)
    return out
