"""Graph pass: the query, key and value SparseLinear nodes of each ai.smp.Attention become one.

Before / after (W_q, W_k, W_v [width, hidden] in the same format)::

    X ─ SparseLinear(W_q) ─ Q ─┐
    X ─ SparseLinear(W_k) ─ K ─┼─ ai.smp.Attention(Q, K, V, mask)
    X ─ SparseLinear(W_v) ─ V ─┘

    X ─ SparseLinear([W_q; W_k; W_v]) ─ QKV [.., 3 * width] ─ ai.smp.Attention(QKV, , , mask)

The stacked weight is the three CSR (or BSR) arrays one after the other (row pointers
shifted); the attention kernel reads q, k and v from the three parts of each QKV row. One
node instead of three: X is packed into tiles once, and one call instead of three is
dispatched (at batch 1 each call costs about as much as its arithmetic). The results are
bit for bit those of the three nodes. Run it after ``sparse_kernel_pass``.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime.kernels import ATTENTION_OP, SPARSE_DOMAIN, SPARSE_OP

from ..onnx_graph import node_path
from .sparse_kernel import node_attrs

logger = logging.getLogger(__name__)

_KEYS = ("crow_indices", "col_indices", "values", "bias")


def _producers(graph: onnx.GraphProto, attention: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """The three plain SparseLinear nodes feeding q, k, v (same X, same block shape, no
    epilogue, outputs used by this attention only), else None."""
    if len(attention.input) < 3 or not all(attention.input[:3]):
        return None
    by_output = {o: n for n in graph.node for o in n.output}
    nodes = [by_output.get(name) for name in attention.input[:3]]
    if any(n is None or n.op_type != SPARSE_OP or n.domain != SPARSE_DOMAIN or len(n.input) > 5 for n in nodes):
        return None
    attrs = [node_attrs(n) for n in nodes]
    if len({n.input[0] for n in nodes}) != 1 or any(a.get("activation", b"") not in (b"", "") for a in attrs):
        return None
    if len({tuple(a.get("block_shape", [1, 1])) for a in attrs}) != 1 or len({a["shape"][1] for a in attrs}) != 1:
        return None
    outputs = {o.name for o in graph.output}
    for n in nodes:
        if n.output[0] in outputs or sum(n.output[0] in m.input for m in graph.node) != 1:
            return None
    return nodes


def _stacked(arrays: list[dict[str, np.ndarray]], rows: list[int]) -> dict[str, np.ndarray]:
    """[W_q; W_k; W_v] from the three weights' arrays (bias zeros where one has none)."""
    crows, offset = [arrays[0]["crow_indices"]], int(arrays[0]["crow_indices"][-1])
    for a in arrays[1:]:
        crows.append(a["crow_indices"][1:] + offset)
        offset += int(a["crow_indices"][-1])
    return {"crow_indices": np.concatenate(crows).astype(arrays[0]["crow_indices"].dtype),
            "col_indices": np.concatenate([a["col_indices"] for a in arrays]),
            "values": np.concatenate([a["values"] for a in arrays]),
            "bias": np.concatenate([a.get("bias", np.zeros(r, np.float32)) for a, r in zip(arrays, rows)])}


def qkv_fusion_pass(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with the Q, K, V SparseLinear nodes of each ai.smp.Attention stacked
    into one; attention nodes whose inputs do not fit (other formats, epilogues, shared
    outputs) are left as they are."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {init.name: init for init in graph.initializer}
    fused = 0
    for attention in [n for n in graph.node if n.op_type == ATTENTION_OP and n.domain == SPARSE_DOMAIN]:
        nodes = _producers(graph, attention)
        if nodes is None or any(name not in inits for n in nodes for name in n.input[1:4]):
            continue
        arrays = [{key: numpy_helper.to_array(inits[name]) for key, name in zip(_KEYS, n.input[1:]) if name}
                  for n in nodes]
        rows = [int(node_attrs(n)["shape"][0]) for n in nodes]
        if len(set(rows)) != 1:
            continue
        stacked = _stacked(arrays, rows)
        first = nodes[0].input[1].rsplit(".", 2)[0]          # encoder.layer.N.attention.self
        names = [f"{first}.qkv.{key}" for key in _KEYS]
        if any(name in inits for name in names):
            continue
        for name, key in zip(names, _KEYS):
            graph.initializer.append(numpy_helper.from_array(stacked[key], name))
        attrs = node_attrs(nodes[0])
        output = f"{node_path(first)}/qkv/output_0"
        node = helper.make_node(SPARSE_OP, [nodes[0].input[0], *names], [output],
                                name=f"{node_path(first)}/qkv/{SPARSE_OP}", domain=SPARSE_DOMAIN,
                                shape=[sum(rows), int(attrs["shape"][1])],
                                block_shape=list(attrs.get("block_shape", [1, 1])))
        position = min(list(graph.node).index(n) for n in nodes)
        for n in nodes:
            graph.node.remove(n)
        graph.node.insert(position, node)
        attention.input[0], attention.input[1], attention.input[2] = output, "", ""
        fused += 1
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    logger.info("qkv_fusion_pass: %d attention inputs stacked", fused)
    return out
