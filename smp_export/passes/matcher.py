"""What every graph pass shares: a view of the graph (producers, consumers, constants), path
matching in the style of onnxruntime's transformer fusions, and the clean-up after a rewrite.

A pass matches from an anchor node, walking single-consumer chains forward (``child_path``) or
producers backward (``parent_path``); a chain that branches (an intermediate value used
twice, or a graph output) does not match, so a rewrite never drops a value something else
reads. After rewriting, ``GraphView.invalidate()`` and, at the end, ``remove_unused``.

The fusions fold into both sparse linear kernels, fp32 ``SparseLinear`` and ``SparseLinearInt8``
(its weight has one more array, the per-row scale): ``linear_inputs`` says where each takes its
bias, residual and LayerNorm inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime.kernels import INT8_OP, SPARSE_DOMAIN, SPARSE_OP

logger = logging.getLogger(__name__)


class LinearInputs(NamedTuple):
    """Input positions of a sparse linear kernel: the weight arrays are 1 .. bias - 1; then the
    (optional) bias, the residual, and LayerNorm's gamma (beta and epsilon right after it)."""

    bias: int
    residual: int
    layer_norm: int


#: The sparse linear kernels the fusion passes fold into, by op type.
LINEAR_INPUTS: dict[str, LinearInputs] = {SPARSE_OP: LinearInputs(bias=4, residual=5, layer_norm=6),
                                          INT8_OP: LinearInputs(bias=5, residual=6, layer_norm=7)}


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def node_attrs(node: onnx.NodeProto) -> dict:
    """A node's attributes by name (ints lists, bytes strings, ...)."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def is_kernel(node: onnx.NodeProto | None, op_type: str) -> bool:
    """Whether ``node`` is the ``ai.smp`` operator ``op_type``."""
    return node is not None and node.domain == SPARSE_DOMAIN and node.op_type == op_type


def linear_inputs(node: onnx.NodeProto | None) -> LinearInputs | None:
    """Where ``node`` takes its optional inputs, when it is an ``ai.smp`` sparse linear (fp32 or
    int8); None for any other node."""
    if node is None or node.domain != SPARSE_DOMAIN:
        return None
    return LINEAR_INPUTS.get(node.op_type)


def has_activation(node: onnx.NodeProto) -> bool:
    return node_attrs(node).get("activation", b"") not in (b"", "")


def pad_inputs(node: onnx.NodeProto, count: int) -> None:
    """Append empty (absent optional) inputs until ``node`` has ``count`` inputs."""
    while len(node.input) < count:
        node.input.append("")


class GraphView:
    """Producers, consumers and initializers of ``graph``, cached until ``invalidate()``."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self._producers: dict[str, onnx.NodeProto] | None = None
        self._consumers: dict[str, list[onnx.NodeProto]] | None = None
        self._inits: dict[str, onnx.TensorProto] | None = None

    def invalidate(self) -> None:
        self._producers = self._consumers = self._inits = None

    def _index(self) -> None:
        if self._producers is None:
            self._producers = {o: n for n in self.graph.node for o in n.output if o}
            self._consumers = {}
            for n in self.graph.node:
                for name in dict.fromkeys(n.input):
                    self._consumers.setdefault(name, []).append(n)
            self._inits = {i.name: i for i in self.graph.initializer}

    def producer(self, name: str) -> onnx.NodeProto | None:
        self._index()
        return self._producers.get(name)

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        self._index()
        return list(self._consumers.get(name, []))

    def is_output(self, name: str) -> bool:
        return any(o.name == name for o in self.graph.output)

    def only_consumer(self, name: str, op_type: str | None = None) -> onnx.NodeProto | None:
        """The one node reading ``name`` (of ``op_type`` if given), when ``name`` is no graph output."""
        users = self.consumers(name)
        if len(users) != 1 or self.is_output(name) or (op_type is not None and users[0].op_type != op_type):
            return None
        return users[0]

    def initializer(self, name: str) -> onnx.TensorProto | None:
        self._index()
        return self._inits.get(name)

    def array(self, name: str) -> np.ndarray | None:
        init = self.initializer(name)
        return None if init is None else numpy_helper.to_array(init)

    def scalar(self, name: str) -> float | None:
        """The value of a one-element initializer, else None."""
        array = self.array(name)
        return float(array.reshape(-1)[0]) if array is not None and array.size == 1 else None

    def ints(self, name: str) -> list[int] | None:
        array = self.array(name)
        return None if array is None else [int(v) for v in array.reshape(-1)]

    def child_path(self, name: str, op_types: Sequence[str]) -> list[onnx.NodeProto] | None:
        """From value ``name``, the chain of only-consumers with these op types, else None."""
        nodes: list[onnx.NodeProto] = []
        for op_type in op_types:
            node = self.only_consumer(name, op_type)
            if node is None:
                return None
            nodes.append(node)
            name = node.output[0]
        return nodes

    def parent(self, node: onnx.NodeProto, index: int, op_type: str) -> onnx.NodeProto | None:
        """The producer of ``node.input[index]`` when it is an ``op_type`` node."""
        if index >= len(node.input):
            return None
        parent = self.producer(node.input[index])
        return parent if parent is not None and parent.op_type == op_type else None

    def parent_path(self, node: onnx.NodeProto, steps: Sequence[tuple[int, str]]) -> list[onnx.NodeProto] | None:
        """Walk producers: ``steps`` are (input index, op type) pairs, nearest first."""
        found = []
        for index, op_type in steps:
            node = self.parent(node, index, op_type)
            if node is None:
                return None
            found.append(node)
        return found

    def replace(self, old: Iterable[onnx.NodeProto], new: Sequence[onnx.NodeProto], *, at: str = "first") -> None:
        """Remove ``old`` and put ``new`` where the first (``at="first"``) or the last of them
        stood: the graph stays topologically sorted when ``new``'s inputs exist by then."""
        old = list(old)
        nodes = list(self.graph.node)
        indices = [nodes.index(n) for n in old]
        position = min(indices) if at == "first" else max(indices) - len(old) + 1
        for n in old:
            self.graph.node.remove(n)
        for offset, n in enumerate(new):
            self.graph.node.insert(position + offset, n)
        self.invalidate()


def fold_each(model: onnx.ModelProto, select: Callable[[onnx.NodeProto], bool],
              fold: Callable[[GraphView, onnx.NodeProto], bool], what: str) -> onnx.ModelProto:
    """A copy of ``model`` in which ``fold(view, node)`` ran on every node ``select`` picks, in
    graph order (one an earlier fold removed is skipped); what is left unread is removed."""
    out = copy_model(model)
    view = GraphView(out.graph)
    folded = 0
    for node in [n for n in out.graph.node if select(n)]:
        if node in out.graph.node and fold(view, node):
            view.invalidate()
            folded += 1
    remove_unused(out.graph)
    logger.info("%s: %d rewritten", what, folded)
    return out


def remove_unused(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nobody reads (repeatedly), then initializers nobody reads."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for n in graph.node for name in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output if o)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {name for n in graph.node for name in n.input} | outputs
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    value_info = [v for v in graph.value_info if v.name in used]
    del graph.value_info[:]
    graph.value_info.extend(value_info)


def order_by_first_use(graph: onnx.GraphProto) -> None:
    """Initializers in the order the nodes first read them (the builder's own order), so a graph
    rewritten into a shape the builder could have emitted is stored the same way."""
    first: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            first.setdefault(name, index)
    ordered = sorted(graph.initializer, key=lambda init: first.get(init.name, len(graph.node)))
    del graph.initializer[:]
    graph.initializer.extend(ordered)


def ensure_opset(model: onnx.ModelProto, domain: str, version: int) -> None:
    if not any(op.domain == domain for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(domain, version))


def inferred_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Value name -> dims (int or symbol; None when unknown) from onnx shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError) as exc:
        logger.info("shape inference failed: %s", exc)
        return {}
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                  for d in value.type.tensor_type.shape.dim]
    return shapes
