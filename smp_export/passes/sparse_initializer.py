"""Graph pass: store named dense initializers as ``graph.sparse_initializer``.

Before / after (W 90% zeros)::

    initializer:        W  float32 [in, out]  (in*out values)
    MatMul(X, W)

    sparse_initializer: W  values float32 [NNZ], indices int64 [NNZ] (row-major flat positions),
                           dims [in, out]
    MatMul(X, W)        (unchanged: the sparse initializer keeps the name W)

The computation is unchanged: onnxruntime densifies sparse initializers when it loads the
model, so the file gets smaller (12 bytes per kept weight instead of 4 per weight, so smaller
below ~33% density), not the arithmetic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ExportError

logger = logging.getLogger(__name__)


def _to_sparse(dense: onnx.TensorProto) -> onnx.SparseTensorProto:
    """COO with linearized 1-D int64 indices; the values tensor carries the initializer's name."""
    array = numpy_helper.to_array(dense)
    flat = np.ascontiguousarray(array).reshape(-1)
    indices = np.flatnonzero(flat).astype(np.int64)
    values = numpy_helper.from_array(flat[indices], dense.name)
    index_tensor = numpy_helper.from_array(indices, f"{dense.name}.indices")
    return helper.make_sparse_tensor(values, index_tensor, list(array.shape))


def sparse_initializer_pass(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` with the initializers ``names`` moved to ``graph.sparse_initializer``.

    Other initializers are untouched. ExportError (naming it) if a name is not a dense
    initializer of the graph.
    """
    wanted = list(dict.fromkeys(names))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    dense = {init.name: i for i, init in enumerate(graph.initializer)}
    missing = [name for name in wanted if name not in dense]
    if missing:
        raise ExportError(f"no dense initializer named {missing[0]!r} "
                          f"({len(missing)} missing)", field=missing[0])
    sparse = [_to_sparse(graph.initializer[dense[name]]) for name in wanted]
    moved = set(wanted)
    keep = [init for init in graph.initializer if init.name not in moved]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    graph.sparse_initializer.extend(sparse)
    nnz = sum(s.values.dims[0] for s in sparse)
    total = sum(int(np.prod(s.dims)) for s in sparse)
    logger.info("sparse_initializer_pass: %d initializers, %d of %d values kept (%.1f%%)",
                len(sparse), nnz, total, 100.0 * nnz / total if total else 100.0)
    return out
