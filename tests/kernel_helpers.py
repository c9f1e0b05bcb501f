"""Shared helpers of the kernel tests: random sparse weights and one-node SparseLinear models."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from runtime.kernels import SPARSE_DOMAIN, custom_op_library_path


def random_weight(rng: np.random.Generator, rows: int, cols: int, density: float,
                  block: tuple[int, int] = (1, 1)) -> np.ndarray:
    """A float32 [rows, cols] matrix whose nonzero blocks (bh x bw) have the given density."""
    bh, bw = block
    keep = rng.random((rows // bh, cols // bw)) < density
    mask = np.kron(keep, np.ones((bh, bw), dtype=bool))
    return (rng.standard_normal((rows, cols)) * mask).astype(np.float32)


def csr_arrays(w: np.ndarray, index_dtype=np.int32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """crow, col, values of ``w`` (canonical CSR)."""
    rows, cols = np.nonzero(w)
    crow = np.zeros(w.shape[0] + 1, dtype=np.int64)
    np.add.at(crow, rows + 1, 1)
    return np.cumsum(crow).astype(index_dtype), cols.astype(index_dtype), w[rows, cols].astype(np.float32)


def bsr_arrays(w: np.ndarray, block: tuple[int, int], index_dtype=np.int32):
    """crow, col, values [nnz_blocks, bh, bw] of ``w`` in bh x bw blocks."""
    bh, bw = block
    r, c = w.shape
    blocks = w.reshape(r // bh, bh, c // bw, bw).transpose(0, 2, 1, 3)
    keep = blocks.any(axis=(2, 3))
    brow, bcol = np.nonzero(keep)
    crow = np.zeros(r // bh + 1, dtype=np.int64)
    np.add.at(crow, brow + 1, 1)
    return (np.cumsum(crow).astype(index_dtype), bcol.astype(index_dtype),
            np.ascontiguousarray(blocks[brow, bcol], dtype=np.float32))


def reference(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    y = x.astype(np.float64) @ w.T.astype(np.float64)
    return y + bias if bias is not None else y


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5) -> None:
    """Agreement within ``rtol`` relative to the output's scale (plus a tiny absolute floor)."""
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def graph_tensors(x_shape: list, tensors: dict[str, np.ndarray], as_inputs: tuple[str, ...]):
    """Graph inputs (X, then the tensors named in ``as_inputs``) and initializers (the rest)."""
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    inits = []
    for name, arr in tensors.items():
        if name in as_inputs:
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype),
                                                        list(arr.shape)))
        else:
            inits.append(numpy_helper.from_array(arr, name))
    return inputs, inits


def sparse_linear_model(shape: tuple[int, int], arrays: dict[str, np.ndarray], *, block=(1, 1),
                        bias: np.ndarray | None = None, as_inputs: tuple[str, ...] = (),
                        x_shape: list | None = None, attrs: dict | None = None) -> onnx.ModelProto:
    """Y = SparseLinear(X, crow, col, values[, bias]); names in ``as_inputs`` become graph inputs."""
    tensors = dict(arrays)
    if bias is not None:
        tensors["bias"] = bias
    inputs, inits = graph_tensors(x_shape or ["m", shape[1]], tensors, as_inputs)
    names = ["X", "crow", "col", "values"] + (["bias"] if bias is not None else [])
    attributes = {"shape": list(shape), "block_shape": list(block)}
    attributes.update(attrs or {})
    attributes = {k: v for k, v in attributes.items() if v is not None}
    node = helper.make_node("SparseLinear", names, ["Y"], domain=SPARSE_DOMAIN, name="lin", **attributes)
    out_shape = (x_shape or ["m", shape[1]])[:-1] + [shape[0]]
    graph = helper.make_graph([node], "one", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, out_shape)],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                             ir_version=8)


def session(model: onnx.ModelProto, threads: int = 1, library: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 4
    if library:
        options.register_custom_ops_library(str(custom_op_library_path()))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
