"""Graph pass: each named pruned linear becomes one ``ai.smp.SparseLinearInt8`` node.

Before / after (``W`` [out, in] mostly zeros; the graph stores ``W^T``)::

    initializer: <m>.weight_t float32 [in, out]    <m>.bias float32 [out]
    X ─ MatMul(X, <m>.weight_t) ─ Add(·, <m>.bias) ─► Y

    initializer: <m>.crow_indices int32 [out + 1]   <m>.col_indices int32 [nnz]
                 <m>.values_int8 int8 [nnz]         <m>.scale float32 [out]   <m>.bias
    X ─ ai.smp.SparseLinearInt8(X, <m>.crow_indices, <m>.col_indices, <m>.values_int8, <m>.scale,
                                <m>.bias; shape=[out, in]) ─► Y

Weights are symmetric int8 per output row (``runtime.kernels_int8.quantize_csr_rows``: scale =
max |w| / 127, one per row); activations are quantized per token inside the node. As in
``sparse_linear_pass``, the Add's output name is kept and its shape stated in ``value_info``.
The fusion passes that follow (``passes.KERNEL_FUSIONS``: GELU, residual, LayerNorm, Q/K/V
stacking) fold into these nodes as into ``SparseLinear`` (at the int8 input positions, one
later for the scale), and a feed-forward pair becomes ``ai.smp.SparseFFNInt8``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper

from runtime.kernels import INT8_OP, SPARSE_DOMAIN, SPARSE_OPSET
from runtime.kernels_int8 import quantize_csr_rows

from ..errors import ExportError
from ..graph import node_path
from .matcher import GraphView, copy_model, ensure_opset, inferred_shapes, remove_unused
from .sparse_linear import KernelSpec, add_initializers, find_linear, module_of, put_node, sparse_arrays

logger = logging.getLogger(__name__)

INT8_KEYS = ("crow_indices", "col_indices", "values_int8", "scale")


def int8_arrays(weight: np.ndarray) -> dict[str, np.ndarray]:
    """crow_indices / col_indices (int32), values_int8 and the per-row scale of ``weight`` [out, in]."""
    csr = sparse_arrays(weight, KernelSpec())
    crow, col = csr["crow_indices"].astype(np.int32), csr["col_indices"].astype(np.int32)
    q, scale = quantize_csr_rows(crow, csr["values"])
    return {"crow_indices": crow, "col_indices": col, "values_int8": q, "scale": scale}


def _replace(view: GraphView, module: str, shapes: dict[str, list]) -> int:
    matmul, add = find_linear(view, module)
    wt = view.array(f"{module}.weight_t")
    if wt.shape[0] > 65536:
        raise ExportError(f"{wt.shape[0]} input features: the int8 kernel takes at most 65,536", field=module)
    arrays = int8_arrays(wt.T)
    names = add_initializers(view, module, arrays, INT8_KEYS)
    node = helper.make_node(INT8_OP, [matmul.input[0], *names, f"{module}.bias"], [add.output[0]],
                            name=f"{node_path(module)}/{INT8_OP}", domain=SPARSE_DOMAIN,
                            shape=[int(wt.shape[1]), int(wt.shape[0])])
    put_node(view, (matmul, add), node, shapes)
    return int(arrays["values_int8"].size)


def sparse_linear_int8_pass(model: onnx.ModelProto, linears: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` with each named linear (module or ``.weight`` name) as SparseLinearInt8.

    ExportError naming the module if its MatMul + Add pattern is not found.
    """
    modules = [module_of(name) for name in linears]
    out = copy_model(model)
    view = GraphView(out.graph)
    shapes = inferred_shapes(model) if modules else {}
    stored = sum(_replace(view, module, shapes) for module in modules)
    remove_unused(out.graph)
    if modules:
        ensure_opset(out, SPARSE_DOMAIN, SPARSE_OPSET)
    logger.info("sparse_linear_int8_pass: %d linears as %s, %d int8 values stored", len(modules), INT8_OP, stored)
    return out
