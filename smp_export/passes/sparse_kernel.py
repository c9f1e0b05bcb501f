"""Graph pass: each named pruned linear becomes one ``ai.smp.SparseLinear`` node.

Before / after (``W`` [out, in] mostly zeros; the graph stores ``W^T``)::

    initializer: <m>.weight_t float32 [in, out]    <m>.bias float32 [out]
    X ─ MatMul(X, <m>.weight_t) ─ Add(·, <m>.bias) ─► Y

    initializer: <m>.crow_indices int32 [out/bh + 1]   <m>.col_indices int32 [nnz]
                 <m>.values float32 [nnz] (CSR) or [nnz_blocks, bh, bw] (BSR)   <m>.bias
    X ─ ai.smp.SparseLinear(X, <m>.crow_indices, <m>.col_indices, <m>.values, <m>.bias;
                            shape=[out, in], block_shape=[bh, bw]) ─► Y

The Add's output name is kept, so every consumer is untouched; ``W^T`` is dropped. The
arrays are ordinary initializers: model.onnx stays self-contained, and onnxruntime runs the
node once the custom-op library (``runtime.kernels.custom_op_library_path()``) is registered.

With ``fuse=True`` what directly follows a SparseLinear node moves into it (one pass over the
output instead of two or five)::

    SparseLinear ─ Div(√2) ─ Erf ─ Add(1) ─ Mul(·, Y) ─ Mul(0.5)   ->  SparseLinear(activation="gelu")
    SparseLinear ─ Add(·, R)   (R the same shape as Y)             ->  SparseLinear(..., R)
    SparseLinear ─ LayerNormalization(γ, β; axis -1, ε)           ->  SparseLinear(..., R, γ, β, [ε])

(the LayerNorm after the residual is BERT's post-norm: the kernel normalises each token's
output row while it is still in cache, instead of a separate pass over the whole tensor).

Then a feed-forward pair becomes one node, whose [.., inner] activations are never stored::

    X ─ SparseLinear(W1; gelu) ─ H ─ SparseLinear(H, W2, ..., R[, γ, β, ε]) ─► Y
      ->  X ─ ai.smp.SparseFFN(X, W1 arrays, W2 arrays, R[, γ, β, ε]; shape1, shape2) ─► Y

(when H has no other consumer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from runtime.kernels import FFN_OP, SPARSE_DOMAIN, SPARSE_OP, SPARSE_OPSET

from ..errors import ExportError, MaskError
from ..formats.bsr import BSRConfig, to_bsr
from ..formats.csr import CSRConfig, to_csr
from ..onnx_graph import node_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KernelSpec:
    """How one linear is stored: ``csr``, or ``bsr`` with ``block_shape`` (rows, cols)."""

    format: str = "csr"
    block_shape: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        if self.format not in ("csr", "bsr"):
            raise ValueError(f"format must be csr or bsr, got {self.format!r}")
        if self.format == "csr" and tuple(self.block_shape) != (1, 1):
            raise ValueError("csr has block_shape (1, 1)")


def module_of(name: str) -> str:
    """``...query.weight`` or ``...query`` -> ``...query``."""
    return name[: -len(".weight")] if name.endswith(".weight") else name


def sparse_arrays(weight: np.ndarray, spec: KernelSpec) -> dict[str, np.ndarray]:
    """crow_indices / col_indices / values of ``weight`` [out, in] in ``spec``'s format."""
    dense = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
    try:
        if spec.format == "csr":
            sparse = to_csr(dense, CSRConfig(index_dtype=torch.int32))
        else:
            sparse = to_bsr(dense, BSRConfig(block_shape=tuple(spec.block_shape), index_dtype=torch.int32))
        sparse.validate()
    except (ValueError, MaskError) as exc:
        raise ExportError(f"cannot store as {spec.format} {tuple(spec.block_shape)}: {exc}") from exc
    return {"crow_indices": sparse.crow_indices.numpy(), "col_indices": sparse.col_indices.numpy(),
            "values": sparse.values.numpy().astype(np.float32)}


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if name in node.input]


def _find_linear(graph: onnx.GraphProto, module: str, inits: dict[str, int]) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """The MatMul(X, <m>.weight_t) and its only consumer Add(·, <m>.bias); ExportError if absent."""
    wt, bias = f"{module}.weight_t", f"{module}.bias"
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] == wt]
    if len(matmuls) != 1 or wt not in inits:
        raise ExportError(f"no MatMul with initializer {wt!r} (found {len(matmuls)})", field=module)
    users = _consumers(graph, matmuls[0].output[0])
    if len(users) != 1 or users[0].op_type != "Add" or bias not in users[0].input or bias not in inits:
        raise ExportError(f"MatMul {matmuls[0].name!r} is not followed by Add({bias})", field=module)
    if len(_consumers(graph, wt)) != 1:
        raise ExportError(f"{wt} is used by more than one node", field=module)
    return matmuls[0], users[0]


def _replace(graph: onnx.GraphProto, module: str, spec: KernelSpec, inits: dict[str, int]) -> int:
    """Rewrite one linear in place; returns the stored nonzero count."""
    matmul, add = _find_linear(graph, module, inits)
    wt = numpy_helper.to_array(graph.initializer[inits[f"{module}.weight_t"]])
    arrays = sparse_arrays(wt.T, spec)
    names = [f"{module}.{key}" for key in ("crow_indices", "col_indices", "values")]
    for name, key in zip(names, ("crow_indices", "col_indices", "values")):
        if name in inits:
            raise ExportError(f"initializer {name!r} already exists", field=module)
        graph.initializer.append(numpy_helper.from_array(arrays[key], name))
    node = helper.make_node(SPARSE_OP, [matmul.input[0], *names, f"{module}.bias"], [add.output[0]],
                            name=f"{node_path(module)}/{SPARSE_OP}", domain=SPARSE_DOMAIN,
                            shape=[int(wt.shape[1]), int(wt.shape[0])], block_shape=list(map(int, spec.block_shape)))
    position = list(graph.node).index(matmul)
    graph.node.remove(matmul)
    graph.node.remove(add)
    graph.node.insert(position, node)
    return int(arrays["values"].size)


def _constant(graph: onnx.GraphProto, name: str) -> float | None:
    """The value of a scalar (or one-element) initializer, else None."""
    for init in graph.initializer:
        if init.name == name:
            array = numpy_helper.to_array(init)
            return float(array.reshape(-1)[0]) if array.size == 1 else None
    return None


def _only_consumer(graph: onnx.GraphProto, name: str, op_type: str) -> onnx.NodeProto | None:
    users = _consumers(graph, name)
    return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _fuse_gelu(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    """Y ─ Div(√2) ─ Erf ─ Add(1) ─ Mul(Y, ·) ─ Mul(0.5): the exact GELU of onnx_graph."""
    y = node.output[0]
    users = _consumers(graph, y)
    div = next((n for n in users if n.op_type == "Div" and n.input[0] == y), None)
    mul = next((n for n in users if n.op_type == "Mul" and y in n.input), None)
    if len(users) != 2 or div is None or mul is None or not np.isclose(_constant(graph, div.input[1]) or 0,
                                                                          np.sqrt(2.0)):
        return False
    erf = _only_consumer(graph, div.output[0], "Erf")
    add = erf and _only_consumer(graph, erf.output[0], "Add")
    if add is None or _constant(graph, next(i for i in add.input if i != erf.output[0])) != 1.0:
        return False
    if _only_consumer(graph, add.output[0], "Mul") is not mul:
        return False
    half = _only_consumer(graph, mul.output[0], "Mul")
    if half is None or _constant(graph, next((i for i in half.input if i != mul.output[0]), "")) != 0.5:
        return False
    node.output[0] = half.output[0]
    node.attribute.append(helper.make_attribute("activation", "gelu"))
    for dead in (div, erf, add, mul, half):
        graph.node.remove(dead)
    return True


def _same_known_shape(shapes: dict[str, list], a: str, b: str) -> bool:
    return a in shapes and b in shapes and shapes[a] == shapes[b] and all(d is not None for d in shapes[a])


def _fuse_residual(graph: onnx.GraphProto, node: onnx.NodeProto, shapes: dict[str, list]) -> bool:
    """Y ─ Add(Y, R) with R a computed tensor of Y's (statically inferred) shape."""
    add = _only_consumer(graph, node.output[0], "Add")
    if add is None or len(add.input) != 2:
        return False
    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    constants = {init.name for init in graph.initializer}
    if other in constants or other == node.output[0] or not _same_known_shape(shapes, add.output[0], other):
        return False
    while len(node.input) < 5:
        node.input.append("")
    node.input.append(other)
    node.output[0] = add.output[0]
    graph.node.remove(add)
    return True


def _fuse_layer_norm(graph: onnx.GraphProto, node: onnx.NodeProto, rows: int) -> bool:
    """Y ─ LayerNormalization(Y, γ, β) over the last axis, γ and β constant [rows]."""
    ln = _only_consumer(graph, node.output[0], "LayerNormalization")
    if ln is None or len(ln.input) != 3 or len([o for o in ln.output if o]) != 1:
        return False
    attrs = node_attrs(ln)
    if attrs.get("axis", -1) not in (-1,) or attrs.get("stash_type", 1) != 1:
        return False
    inits = {init.name: init for init in graph.initializer}
    if any(name not in inits or list(inits[name].dims) != [rows] for name in ln.input[1:]):
        return False
    eps = numpy_helper.from_array(np.array([attrs.get("epsilon", 1e-5)], dtype=np.float32),
                                  f"{node.name.rsplit('/', 1)[0]}/ln_epsilon")
    graph.initializer.append(eps)
    while len(node.input) < 6:
        node.input.append("")
    node.input.extend([ln.input[1], ln.input[2], eps.name])
    node.output[0] = ln.output[0]
    graph.node.remove(ln)
    return True


def node_attrs(node: onnx.NodeProto) -> dict:
    """A node's attributes by name (ints lists, bytes strings, ...)."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _fuse_ffn(graph: onnx.GraphProto, first: onnx.NodeProto) -> bool:
    """SparseLinear(X; activation) ─ H ─ SparseLinear(H, ...) with H used only there."""
    second = _only_consumer(graph, first.output[0], SPARSE_OP)
    if (second is None or second.domain != SPARSE_DOMAIN or second.input[0] != first.output[0]
            or first.output[0] in {o.name for o in graph.output} or len(first.input) > 5):
        return False
    a, b = node_attrs(first), node_attrs(second)
    if b.get("activation", b"") not in (b"", ""):
        return False
    pad = (lambda inputs, n: list(inputs) + [""] * (n - len(inputs)))
    inputs = pad(first.input, 5) + pad(second.input[1:], 8)
    node = helper.make_node(FFN_OP, inputs, [second.output[0]], name=second.name.replace(SPARSE_OP, FFN_OP),
                            domain=SPARSE_DOMAIN, shape1=a["shape"], block_shape1=a.get("block_shape", [1, 1]),
                            shape2=b["shape"], block_shape2=b.get("block_shape", [1, 1]),
                            activation=a.get("activation", b""))
    while node.input and not node.input[-1]:
        node.input.pop()
    position = list(graph.node).index(first)
    graph.node.remove(first)
    graph.node.remove(second)
    graph.node.insert(position, node)
    return True


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Value name -> dims (int or symbol; None when unknown) from onnx shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError) as exc:
        logger.info("shape inference failed, no residual fusion: %s", exc)
        return {}
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                  for d in value.type.tensor_type.shape.dim]
    return shapes


def sparse_kernel_pass(model: onnx.ModelProto, linears: Mapping[str, KernelSpec] | Iterable[str], *,
                       fuse: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` with each named linear (module or ``.weight`` name) as SparseLinear.

    ``linears`` maps names to a KernelSpec, or lists names (CSR). ``<m>.weight_t`` is removed;
    the ``ai.smp`` opset is imported. ``fuse``: a following exact GELU, or a residual Add,
    becomes part of the node. ExportError naming the module if its MatMul + Add pattern is
    not found or its weight cannot be stored in the requested format.
    """
    specs = dict(linears) if isinstance(linears, Mapping) else {name: KernelSpec() for name in linears}
    specs = {module_of(name): spec for name, spec in specs.items()}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    shapes = _inferred_shapes(model) if fuse and specs else {}
    stored = 0
    for module, spec in specs.items():
        inits = {init.name: i for i, init in enumerate(graph.initializer)}
        stored += _replace(graph, module, spec, inits)
    fused = 0
    for node in [n for n in graph.node if n.domain == SPARSE_DOMAIN and n.op_type == SPARSE_OP] if fuse else []:
        fused += _fuse_gelu(graph, node) or _fuse_residual(graph, node, shapes)
        rows = next(a.ints[0] for a in node.attribute if a.name == "shape")
        fused += _fuse_layer_norm(graph, node, rows)
    for node in [n for n in graph.node if n.domain == SPARSE_DOMAIN and n.op_type == SPARSE_OP] if fuse else []:
        fused += node in graph.node and _fuse_ffn(graph, node)
    # W^T and the constants of fused epilogues (sqrt2, one, half) have no consumer left.
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if specs and not any(op.domain == SPARSE_DOMAIN for op in out.opset_import):
        out.opset_import.append(helper.make_opsetid(SPARSE_DOMAIN, SPARSE_OPSET))
    logger.info("sparse_kernel_pass: %d linears as %s, %d values stored, %d epilogues fused", len(specs),
                SPARSE_OP, stored, fused)
    return out
