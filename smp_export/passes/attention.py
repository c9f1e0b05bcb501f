"""Graph pass: each layer's attention core in plain ONNX becomes one fused node.

Before (the graph builder's form; Q, K, V the [B,S,h*d] projections, M the additive mask)::

    Q ─ Reshape[0,0,h,d] ─ Transpose[0,2,1,3] ─┐
    K ─ Reshape[0,0,h,d] ─ Transpose[0,2,3,1] ─ MatMul ─ Div(√d) ─ Add(M) ─ Softmax ─┐
    V ─ Reshape[0,0,h,d] ─ Transpose[0,2,1,3] ───────────────────────────────── MatMul
        ─ Transpose[0,2,1,3] ─ Reshape[0,0,h*d] ─► C [B,S,h*d]

After::

    mha: Q, K, V ─ com.microsoft.MultiHeadAttention(Q, K, V, "", int32 attention_mask; num_heads=h) ─► C
    smp: Q, K, V ─ ai.smp.Attention(Q, K, V, attention_mask; shape=[h, d]) ─► C

Both scale by 1/sqrt(d) and take the [B,S] 0/1 mask itself; the additive mask's nodes go once no
layer reads them. The projections stay linears, so they can still be sparsified. C's shape is
stated in ``value_info`` for the passes after (onnx has no schema for these nodes).
"""

from __future__ import annotations

import logging
import math

import onnx
from onnx import TensorProto, helper

from runtime.kernels import ATTENTION_OP, SPARSE_DOMAIN, SPARSE_OPSET

from ..errors import ExportError
from ..graph import BATCH, SEQUENCE
from .matcher import GraphView, copy_model, ensure_opset, node_attrs, order_by_first_use, remove_unused

logger = logging.getLogger(__name__)

MODES = ("onnx", "mha", "smp")
MASK_INPUT = "attention_mask"
_PERMS = ([0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3])


def _head_split(view: GraphView, transpose: onnx.NodeProto | None, perm: list[int]) -> tuple[str, list[int]] | None:
    """(projection, [h, d]) of Transpose(Reshape(projection, [0,0,h,d]), perm), else None."""
    if transpose is None or node_attrs(transpose).get("perm") != perm:
        return None
    reshape = view.parent(transpose, 0, "Reshape")
    shape = view.ints(reshape.input[1]) if reshape is not None else None
    if shape is None or len(shape) != 4 or shape[:2] != [0, 0]:
        return None
    if view.only_consumer(transpose.input[0]) is None or view.only_consumer(transpose.output[0]) is None:
        return None
    return reshape.input[0], shape[2:]


def _additive_mask_of(view: GraphView, mask: str) -> bool:
    """Whether ``mask`` is Unsqueeze(Mul(Sub(1, Cast(attention_mask)), finfo.min), [1, 2])."""
    unsqueeze = view.producer(mask)
    if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or view.ints(unsqueeze.input[1]) != [1, 2]:
        return False
    path = view.parent_path(unsqueeze, [(0, "Mul"), (0, "Sub"), (1, "Cast")])
    return path is not None and path[2].input[0] == MASK_INPUT and view.scalar(path[1].input[0]) == 1.0


def _match(view: GraphView, softmax: onnx.NodeProto) -> dict | None:
    """The core around one Softmax: its nodes, Q/K/V, h, d and the output, else None."""
    path = view.parent_path(softmax, [(0, "Add"), (0, "Div"), (0, "MatMul")])
    if path is None or node_attrs(softmax).get("axis", -1) != -1 or not _additive_mask_of(view, path[0].input[1]):
        return None
    add, div, scores = path
    tail = view.child_path(softmax.output[0], ("MatMul", "Transpose", "Reshape"))
    if tail is None or node_attrs(tail[1]).get("perm") != [0, 2, 1, 3]:
        return None
    splits = [_head_split(view, view.producer(name), perm)
              for name, perm in zip((scores.input[0], scores.input[1], tail[0].input[1]), _PERMS)]
    if any(s is None for s in splits) or len({tuple(s[1]) for s in splits}) != 1:
        return None
    heads, head_dim = splits[0][1]
    if view.ints(tail[2].input[1]) != [0, 0, heads * head_dim]:
        return None
    if not math.isclose(view.scalar(div.input[1]) or 0.0, math.sqrt(head_dim), rel_tol=1e-6):
        return None
    if any(view.only_consumer(n.output[0]) is None for n in (scores, div, add)):
        return None
    dead = [view.producer(view.producer(name).input[0]) for name in (scores.input[0], scores.input[1],
                                                                     tail[0].input[1])]
    dead += [view.producer(name) for name in (scores.input[0], scores.input[1], tail[0].input[1])]
    return {"nodes": [*dead, scores, div, add, softmax, *tail], "qkv": [s[0] for s in splits],
            "heads": heads, "head_dim": head_dim, "output": tail[2].output[0], "name": softmax.name}


_INT32_CAST = "/mask/Cast_int32"


def _int32_mask(view: GraphView) -> str:
    """``attention_mask`` cast to int32 (MultiHeadAttention's mask_index), made once, where the
    additive mask begins (``_settle_mask`` names it as that mask's Cast once that is gone)."""
    name = f"{_INT32_CAST}_output_0"
    if view.producer(name) is None:
        nodes = list(view.graph.node)
        first = next((i for i, n in enumerate(nodes) if n.op_type == "Cast" and list(n.input) == [MASK_INPUT]), 0)
        view.graph.node.insert(first, helper.make_node("Cast", [MASK_INPUT], [name], name=_INT32_CAST,
                                                       to=TensorProto.INT32))
        view.invalidate()
    return name


def _settle_mask(graph: onnx.GraphProto) -> None:
    """The int32 Cast takes the name of the float one it replaced, when that one is gone."""
    nodes = {n.name: n for n in graph.node}
    cast = nodes.get(_INT32_CAST)
    if cast is None or "/mask/Cast" in nodes:
        return
    old, new = cast.output[0], "/mask/Cast_output_0"
    cast.name, cast.output[0] = "/mask/Cast", new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def _fused(view: GraphView, match: dict, mode: str) -> onnx.NodeProto:
    """The fused node; its output is named after it (its readers are renamed to match), unless
    the core's output is a graph output, which keeps its name."""
    path = match["name"].rsplit("/", 1)[0]
    q, k, v = match["qkv"]
    op = "MultiHeadAttention" if mode == "mha" else ATTENTION_OP
    output = match["output"] if view.is_output(match["output"]) else f"{path}/{op}_output_0"
    for reader in view.consumers(match["output"]):
        reader.input[:] = [output if name == match["output"] else name for name in reader.input]
    if mode == "mha":
        return helper.make_node(op, [q, k, v, "", _int32_mask(view)], [output], name=f"{path}/{op}",
                                domain="com.microsoft", num_heads=match["heads"])
    return helper.make_node(op, [q, k, v, MASK_INPUT], [output], name=f"{path}/{op}", domain=SPARSE_DOMAIN,
                            shape=[match["heads"], match["head_dim"]])


def attention_fusion_pass(model: onnx.ModelProto, mode: str) -> onnx.ModelProto:
    """A copy of ``model`` with every plain attention core fused as ``mode`` (``onnx``: ``model``
    itself, unchanged)."""
    if mode not in MODES:
        raise ExportError(f"unknown attention {mode!r}; one of {', '.join(MODES)}", field="--attention")
    if mode == "onnx":
        return model
    out = copy_model(model)
    view = GraphView(out.graph)
    fused = 0
    for softmax in [n for n in out.graph.node if n.op_type == "Softmax"]:
        match = _match(view, softmax)
        if match is None:
            continue
        node = _fused(view, match, mode)
        view.replace(match["nodes"], [node], at="last")
        width = match["heads"] * match["head_dim"]
        out.graph.value_info.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT,
                                                                  [BATCH, SEQUENCE, width]))
        fused += 1
    remove_unused(out.graph)
    _settle_mask(out.graph)
    order_by_first_use(out.graph)
    if fused:
        ensure_opset(out, *(("com.microsoft", 1) if mode == "mha" else (SPARSE_DOMAIN, SPARSE_OPSET)))
    logger.info("attention_fusion_pass: %d attention cores as %s", fused, mode)
    return out
