"""Graph pass: the exact GELU after a SparseLinear (or SparseLinearInt8) node moves into it.

Before / after::

    SparseLinear ─ Y ─ Div(√2) ─ Erf ─ Add(1) ─ Mul(Y, ·) ─ Mul(0.5) ─► G
    SparseLinear(activation="gelu") ─► G

(one pass over the output instead of five). The pattern is the graph builder's erf form. The
int8 kernel takes the same ``activation`` attribute, applied after dequantization and bias.
"""

from __future__ import annotations

import math

import onnx
from onnx import helper

from .matcher import GraphView, fold_each, has_activation, linear_inputs


def _other(node: onnx.NodeProto, name: str) -> str:
    """The input of binary ``node`` that is not ``name`` ("" if both are)."""
    return next((i for i in node.input if i != name), "")


def _match(view: GraphView, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """The five GELU nodes after ``node``'s output, else None."""
    y = node.output[0]
    users = view.consumers(y)
    div = next((n for n in users if n.op_type == "Div" and n.input[0] == y), None)
    mul = next((n for n in users if n.op_type == "Mul" and y in n.input), None)
    if len(users) != 2 or div is None or mul is None or view.is_output(y):
        return None
    if not math.isclose(view.scalar(div.input[1]) or 0.0, math.sqrt(2.0), rel_tol=1e-6):
        return None
    chain = view.child_path(div.output[0], ("Erf", "Add"))
    if chain is None or view.scalar(_other(chain[1], chain[0].output[0])) != 1.0:
        return None
    if view.only_consumer(chain[1].output[0], "Mul") is not mul:
        return None
    half = view.only_consumer(mul.output[0], "Mul")
    if half is None or view.scalar(_other(half, mul.output[0])) != 0.5:
        return None
    return [div, *chain, mul, half]


def _fold(view: GraphView, node: onnx.NodeProto) -> bool:
    dead = _match(view, node)
    if dead is None:
        return False
    stated = next((v for v in view.graph.value_info if v.name == node.output[0]), None)
    if stated is not None:      # GELU keeps Y's shape: later passes' shape inference needs it stated
        shape = onnx.ValueInfoProto()
        shape.CopyFrom(stated)
        shape.name = dead[-1].output[0]
        view.graph.value_info.append(shape)
    node.output[0] = dead[-1].output[0]
    node.attribute.append(helper.make_attribute("activation", "gelu"))
    for n in dead:
        view.graph.node.remove(n)
    return True


def gelu_fusion_pass(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every exact GELU that follows a SparseLinear or SparseLinearInt8
    folded into it."""
    return fold_each(model, lambda n: linear_inputs(n) is not None and not has_activation(n), _fold,
                     "gelu_fusion_pass")
