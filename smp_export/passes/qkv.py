"""Graph pass: the query, key and value SparseLinear (or SparseLinearInt8) nodes of each
ai.smp.Attention become one.

Before / after (W_q, W_k, W_v [width, hidden] in the same format, all three fp32 or all int8)::

    X ─ SparseLinear(W_q) ─ Q ─┐
    X ─ SparseLinear(W_k) ─ K ─┼─ ai.smp.Attention(Q, K, V, mask)
    X ─ SparseLinear(W_v) ─ V ─┘

    X ─ SparseLinear([W_q; W_k; W_v]) ─ QKV [.., 3 * width] ─ ai.smp.Attention(QKV, , , mask)

The stacked weight is the three CSR (or BSR) arrays one after the other (row pointers
shifted); the attention kernel reads q, k and v from the three parts of each QKV row. One
node instead of three: X is packed into tiles once, and one call instead of three is
dispatched (at batch 1 each call costs about as much as its arithmetic). The results are
bit for bit those of the three nodes. Int8 weights stack the same way, their per-row scales
concatenated (``values_int8`` and ``scale`` after ``col_indices``); X is quantized per token,
so the one node sees the same int8 activations as the three did. Run it after
``sparse_linear_pass`` (or ``sparse_linear_int8_pass``) and ``attention_fusion_pass``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime.kernels import ATTENTION_OP, INT8_OP, SPARSE_DOMAIN, SPARSE_OP

from ..graph import node_path
from .matcher import GraphView, fold_each, has_activation, is_kernel, linear_inputs, node_attrs

# What each linear kernel's inputs 1.. hold, bias last: the stacked node's initializers' suffixes.
_KEYS = {SPARSE_OP: ("crow_indices", "col_indices", "values", "bias"),
         INT8_OP: ("crow_indices", "col_indices", "values_int8", "scale", "bias")}


def _plain(node: onnx.NodeProto | None) -> bool:
    """A sparse linear without activation, residual or LayerNorm."""
    layout = linear_inputs(node)
    return layout is not None and len(node.input) <= layout.residual and not has_activation(node)


def _producers(view: GraphView, attention: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """The three plain sparse linears of one kind feeding q, k, v (same X, same block shape and
    rows, no epilogue, outputs read by this attention only, arrays constant), else None."""
    if len(attention.input) < 3 or not all(attention.input[:3]):
        return None
    nodes = [view.producer(name) for name in attention.input[:3]]
    if not all(_plain(n) for n in nodes) or len({n.op_type for n in nodes}) != 1:
        return None
    attrs = [node_attrs(n) for n in nodes]
    if len({n.input[0] for n in nodes}) != 1 or len({tuple(a.get("block_shape", [1, 1])) for a in attrs}) != 1:
        return None
    if len({tuple(a["shape"]) for a in attrs}) != 1:
        return None
    if any(view.only_consumer(n.output[0]) is None for n in nodes):
        return None
    arrays = linear_inputs(nodes[0]).bias
    if any(view.initializer(name) is None for n in nodes for name in n.input[1:arrays]):
        return None
    if any(name and view.initializer(name) is None for n in nodes for name in n.input[arrays:]):
        return None
    return nodes


def _stacked(arrays: list[dict[str, np.ndarray]], keys: tuple[str, ...], rows: int) -> dict[str, np.ndarray]:
    """[W_q; W_k; W_v] from the three weights' arrays (bias zeros where one has none)."""
    crows, offset = [arrays[0]["crow_indices"]], int(arrays[0]["crow_indices"][-1])
    for a in arrays[1:]:
        crows.append(a["crow_indices"][1:] + offset)
        offset += int(a["crow_indices"][-1])
    stacked = {key: np.concatenate([a[key] for a in arrays]) for key in keys if key not in ("crow_indices", "bias")}
    stacked["crow_indices"] = np.concatenate(crows).astype(arrays[0]["crow_indices"].dtype)
    stacked["bias"] = np.concatenate([a.get("bias", np.zeros(rows, np.float32)) for a in arrays])
    return stacked


def _stack(view: GraphView, attention: onnx.NodeProto) -> bool:
    nodes = _producers(view, attention)
    if nodes is None:
        return False
    op, keys = nodes[0].op_type, _KEYS[nodes[0].op_type]
    first = nodes[0].input[1].rsplit(".", 2)[0]          # encoder.layer.N.attention.self
    names = [f"{first}.qkv.{key}" for key in keys]
    if any(view.initializer(name) is not None for name in names):
        return False
    arrays = [{key: view.array(name) for key, name in zip(keys, n.input[1:]) if name} for n in nodes]
    attrs = node_attrs(nodes[0])
    shape = [int(d) for d in attrs["shape"]]
    stacked = _stacked(arrays, keys, shape[0])
    view.graph.initializer.extend(numpy_helper.from_array(stacked[key], name) for name, key in zip(names, keys))
    output = f"{node_path(first)}/qkv/output_0"
    extra = {"block_shape": list(attrs.get("block_shape", [1, 1]))} if op == SPARSE_OP else {}
    node = helper.make_node(op, [nodes[0].input[0], *names], [output], name=f"{node_path(first)}/qkv/{op}",
                            domain=SPARSE_DOMAIN, shape=[3 * shape[0], shape[1]], **extra)
    view.replace(nodes, [node])
    attention.input[0], attention.input[1], attention.input[2] = output, "", ""
    return True


def qkv_fusion_pass(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with the Q, K, V SparseLinear (or SparseLinearInt8) nodes of each
    ai.smp.Attention stacked into one; attention nodes whose inputs do not fit (other formats,
    fp32 and int8 mixed, epilogues, shared outputs) are left as they are."""
    return fold_each(model, lambda n: is_kernel(n, ATTENTION_OP), _stack, "qkv_fusion_pass")
