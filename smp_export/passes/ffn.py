"""Graph pass: a feed-forward pair of SparseLinear nodes becomes one ``ai.smp.SparseFFN``
(a pair of SparseLinearInt8 nodes one ``ai.smp.SparseFFNInt8``).

Before / after (H used by the second linear only; W2's epilogue carried over)::

    X ─ SparseLinear(W1; gelu) ─ H ─ SparseLinear(H, W2 arrays, b2, R[, γ, β, ε]) ─► Y
    X ─ ai.smp.SparseFFN(X, W1 arrays, b1, W2 arrays, b2, R[, γ, β, ε]; shape1, shape2) ─► Y

    X ─ SparseLinearInt8(W1; gelu) ─ H ─ SparseLinearInt8(H, W2 arrays, s2, b2, R[, γ, β, ε]) ─► Y
    X ─ ai.smp.SparseFFNInt8(X, W1 arrays, s1, b1, W2 arrays, s2, b2, R[, γ, β, ε]; shape1, shape2) ─► Y

The [.., inner] activations H are never stored: each thread's tile of them stays in cache
between the two products. The int8 node computes bit for bit what the two int8 nodes do (H is
quantized per token as the second node would). An fp32 node is never paired with an int8 one.
"""

from __future__ import annotations

import onnx
from onnx import helper

from runtime.kernels import FFN_INT8_OP, FFN_OP, INT8_OP, SPARSE_DOMAIN, SPARSE_OP

from .matcher import GraphView, fold_each, has_activation, linear_inputs, node_attrs

# Each sparse linear kernel -> the feed-forward kernel that chains two of them.
_FUSED = {SPARSE_OP: FFN_OP, INT8_OP: FFN_INT8_OP}


def _second(view: GraphView, first: onnx.NodeProto) -> onnx.NodeProto | None:
    """The linear of ``first``'s kind that alone reads its output, as X only, with no activation
    of its own; None when ``first`` has a residual or LayerNorm or there is no such node."""
    layout = linear_inputs(first)
    if layout is None or len(first.input) > layout.residual:
        return None
    second = view.only_consumer(first.output[0], first.op_type)
    if second is None or second.domain != SPARSE_DOMAIN or has_activation(second):
        return None
    if second.input[0] != first.output[0] or first.output[0] in second.input[1:]:
        return None
    return second


def _attributes(first: onnx.NodeProto, second: onnx.NodeProto) -> dict:
    a, b = node_attrs(first), node_attrs(second)
    attrs = {"shape1": a["shape"], "shape2": b["shape"], "activation": a.get("activation", b"")}
    if first.op_type == SPARSE_OP:
        attrs.update(block_shape1=a.get("block_shape", [1, 1]), block_shape2=b.get("block_shape", [1, 1]))
    return attrs


def _fuse(view: GraphView, first: onnx.NodeProto) -> bool:
    second = _second(view, first)
    if second is None:
        return False
    width = linear_inputs(first).residual                 # X, the first weight's arrays, its bias
    inputs = list(first.input) + [""] * (width - len(first.input)) + list(second.input[1:])
    op = _FUSED[first.op_type]
    node = helper.make_node(op, inputs, [second.output[0]], name=second.name.replace(first.op_type, op),
                            domain=SPARSE_DOMAIN, **_attributes(first, second))
    while node.input and not node.input[-1]:
        node.input.pop()
    view.replace([first, second], [node])
    return True


def ffn_fusion_pass(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every SparseLinear (or SparseLinearInt8) pair whose hidden tensor
    has one reader fused."""
    return fold_each(model, lambda n: linear_inputs(n) is not None, _fuse, "ffn_fusion_pass")
