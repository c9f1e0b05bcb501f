"""Graph pass: each named pruned linear becomes one ``ai.smp.SparseLinear`` node.

Before / after (``W`` [out, in] mostly zeros; the graph stores ``W^T``)::

    initializer: <m>.weight_t float32 [in, out]    <m>.bias float32 [out]
    X ─ MatMul(X, <m>.weight_t) ─ Add(·, <m>.bias) ─► Y

    initializer: <m>.crow_indices int32 [out/bh + 1]   <m>.col_indices int32 [nnz]
                 <m>.values float32 [nnz] (CSR) or [nnz_blocks, bh, bw] (BSR)   <m>.bias
    X ─ ai.smp.SparseLinear(X, <m>.crow_indices, <m>.col_indices, <m>.values, <m>.bias;
                            shape=[out, in], block_shape=[bh, bw]) ─► Y

The Add's output name is kept, so every consumer is untouched, and its shape is stated in
``value_info`` (onnx has no schema for the node, so later passes could not infer it); ``W^T``
is dropped. The arrays are ordinary initializers: model.onnx stays self-contained, and
onnxruntime runs the node once the custom-op library is registered. What follows the node
(GELU, residual, LayerNorm, a second linear) is folded in by the passes after this one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from runtime.kernels import SPARSE_DOMAIN, SPARSE_OP, SPARSE_OPSET

from ..errors import ExportError, MaskError
from ..formats.bsr import BSRConfig, to_bsr
from ..formats.csr import CSRConfig, to_csr
from ..graph import node_path
from .matcher import GraphView, copy_model, ensure_opset, inferred_shapes, remove_unused

logger = logging.getLogger(__name__)

ARRAY_KEYS = ("crow_indices", "col_indices", "values")


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


def find_linear(view: GraphView, module: str) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """The MatMul(X, <m>.weight_t) and its only consumer Add(·, <m>.bias); ExportError if absent."""
    wt, bias = f"{module}.weight_t", f"{module}.bias"
    users = view.consumers(wt)
    matmuls = [n for n in users if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] == wt]
    if len(matmuls) != 1 or view.initializer(wt) is None:
        raise ExportError(f"no MatMul with initializer {wt!r} (found {len(matmuls)})", field=module)
    if len(users) != 1:
        raise ExportError(f"{wt} is used by more than one node", field=module)
    add = view.only_consumer(matmuls[0].output[0], "Add")
    if add is None or bias not in add.input or view.initializer(bias) is None:
        raise ExportError(f"MatMul {matmuls[0].name!r} is not followed by Add({bias})", field=module)
    return matmuls[0], add


def _replace(view: GraphView, module: str, spec: KernelSpec, shapes: dict[str, list]) -> int:
    """Rewrite one linear in place; returns the stored nonzero count."""
    matmul, add = find_linear(view, module)
    wt = view.array(f"{module}.weight_t")
    arrays = sparse_arrays(wt.T, spec)
    names = add_initializers(view, module, arrays, ARRAY_KEYS)
    node = helper.make_node(SPARSE_OP, [matmul.input[0], *names, f"{module}.bias"], [add.output[0]],
                            name=f"{node_path(module)}/{SPARSE_OP}", domain=SPARSE_DOMAIN,
                            shape=[int(wt.shape[1]), int(wt.shape[0])], block_shape=list(map(int, spec.block_shape)))
    put_node(view, (matmul, add), node, shapes)
    return int(arrays["values"].size)


def add_initializers(view: GraphView, module: str, arrays: Mapping[str, np.ndarray], keys: Iterable[str]) -> list[str]:
    """Add ``<module>.<key>`` initializers; ExportError if one exists already. Returns the names."""
    names = []
    for key in keys:
        name = f"{module}.{key}"
        if view.initializer(name) is not None:
            raise ExportError(f"initializer {name!r} already exists", field=module)
        view.graph.initializer.append(numpy_helper.from_array(arrays[key], name))
        names.append(name)
    return names


def put_node(view: GraphView, linear: tuple[onnx.NodeProto, onnx.NodeProto], node: onnx.NodeProto,
             shapes: Mapping[str, list]) -> None:
    """Replace a linear's MatMul + Add with ``node``, stating the output's shape in value_info."""
    out = linear[1].output[0]
    if out in shapes and not view.is_output(out):
        view.graph.value_info.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, shapes[out]))
    view.replace(list(linear), [node])


def sparse_linear_pass(model: onnx.ModelProto,
                       linears: Mapping[str, KernelSpec] | Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` with each named linear (module or ``.weight`` name) as SparseLinear.

    ``linears`` maps names to a KernelSpec, or lists names (CSR). ``<m>.weight_t`` is removed;
    the ``ai.smp`` opset is imported. ExportError naming the module if its MatMul + Add pattern
    is not found or its weight cannot be stored in the requested format.
    """
    specs = dict(linears) if isinstance(linears, Mapping) else {name: KernelSpec() for name in linears}
    specs = {module_of(name): spec for name, spec in specs.items()}
    out = copy_model(model)
    view = GraphView(out.graph)
    shapes = inferred_shapes(model) if specs else {}
    stored = sum(_replace(view, module, spec, shapes) for module, spec in specs.items())
    remove_unused(out.graph)
    if specs:
        ensure_opset(out, SPARSE_DOMAIN, SPARSE_OPSET)
    logger.info("sparse_linear_pass: %d linears as %s, %d values stored", len(specs), SPARSE_OP, stored)
    return out
