"""The passes' shared matcher on a tiny graph: single-consumer chains, producer paths, and the
clean-up that drops what nothing reads."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from smp_export.passes.matcher import GraphView, fold_each, remove_unused


def _model() -> onnx.ModelProto:
    """X ─ Relu ─ A ─ Sigmoid ─ B ─ Add(B, c) ─ Y;  A is also read by Neg ─ N (an output)."""
    nodes = [helper.make_node("Relu", ["X"], ["A"], name="relu"),
             helper.make_node("Sigmoid", ["A"], ["B"], name="sigmoid"),
             helper.make_node("Add", ["B", "c"], ["Y"], name="add"),
             helper.make_node("Neg", ["A"], ["N"], name="neg")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2]),
                               helper.make_tensor_value_info("N", TensorProto.FLOAT, [2])],
                              initializer=[numpy_helper.from_array(np.array([2.0], np.float32), "c"),
                                           numpy_helper.from_array(np.zeros(3, np.float32), "unused")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_paths_follow_single_readers_only():
    view = GraphView(_model().graph)
    assert view.child_path("A", ("Sigmoid",)) is None            # A has two readers: no chain
    assert [n.name for n in view.child_path("B", ("Add",))] == ["add"]
    add = view.producer("Y")
    assert [n.name for n in view.parent_path(add, [(0, "Sigmoid"), (0, "Relu")])] == ["sigmoid", "relu"]
    assert view.parent_path(add, [(0, "Relu")]) is None and view.scalar("c") == 2.0
    assert view.only_consumer("N") is None                        # a graph output


def test_remove_unused_and_fold_each():
    model = _model()
    model.graph.output.pop()                                      # N is no output any more: Neg is dead
    remove_unused(model.graph)
    assert [n.name for n in model.graph.node] == ["relu", "sigmoid", "add"]
    assert [i.name for i in model.graph.initializer] == ["c"]

    def drop_sigmoid(view: GraphView, node: onnx.NodeProto) -> bool:
        view.consumers(node.output[0])[0].input[0] = node.input[0]
        view.graph.node.remove(node)
        return True

    folded = fold_each(model, lambda n: n.op_type == "Sigmoid", drop_sigmoid, "test")
    assert [n.name for n in folded.graph.node] == ["relu", "add"] and len(model.graph.node) == 3
