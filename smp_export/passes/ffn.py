"""Graph pass: a feed-forward pair of SparseLinear nodes becomes one ``ai.smp.SparseFFN``.

Before / after (H used by the second linear only; W2's epilogue carried over)::

    X ─ SparseLinear(W1; gelu) ─ H ─ SparseLinear(H, W2 arrays, b2, R[, γ, β, ε]) ─► Y
    X ─ ai.smp.SparseFFN(X, W1 arrays, b1, W2 arrays, b2, R[, γ, β, ε]; shape1, shape2) ─► Y

The [.., inner] activations H are never stored: each thread's tile of them stays in cache
between the two products.
"""

from __future__ import annotations

import onnx
from onnx import helper

from runtime.kernels import FFN_OP, SPARSE_DOMAIN, SPARSE_OP

from .matcher import GraphView, fold_each, has_activation, is_kernel, node_attrs


def _fuse(view: GraphView, first: onnx.NodeProto) -> bool:
    second = view.only_consumer(first.output[0], SPARSE_OP)
    if not is_kernel(second, SPARSE_OP) or second.input[0] != first.output[0] or len(first.input) > 5:
        return False
    if has_activation(second):
        return False
    a, b = node_attrs(first), node_attrs(second)
    inputs = list(first.input) + [""] * (5 - len(first.input)) + list(second.input[1:])
    inputs += [""] * (13 - len(inputs))
    node = helper.make_node(FFN_OP, inputs, [second.output[0]], name=second.name.replace(SPARSE_OP, FFN_OP),
                            domain=SPARSE_DOMAIN, shape1=a["shape"], block_shape1=a.get("block_shape", [1, 1]),
                            shape2=b["shape"], block_shape2=b.get("block_shape", [1, 1]),
                            activation=a.get("activation", b""))
    while node.input and not node.input[-1]:
        node.input.pop()
    view.replace([first, second], [node])
    return True


def ffn_fusion_pass(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every SparseLinear pair whose hidden tensor has one reader fused."""
    return fold_each(model, lambda n: is_kernel(n, SPARSE_OP), _fuse, "ffn_fusion_pass")
