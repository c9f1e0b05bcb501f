"""The native sparse kernels: where the custom-op library is, and a direct entry to it.

``libsmp_sparse.so`` (built from ``runtime/native`` by the package's own build) provides the
onnxruntime operators ``ai.smp.SparseLinear`` (``Y = X W^T + bias`` with ``W`` in CSR or BSR,
its arrays ordinary initializers), ``ai.smp.SparseFFN`` (two of them chained, a feed-forward
block) and ``ai.smp.Attention``. onnxruntime loads it with
``SessionOptions.register_custom_ops_library(custom_op_library_path())``.

``sparse_linear``, ``sparse_ffn`` and ``attention`` call the same validation and kernels
without onnxruntime (ctypes), for tests and timing. Never imports smp_export.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import SessionError

log = logging.getLogger(__name__)

SPARSE_DOMAIN = "ai.smp"
SPARSE_OP = "SparseLinear"
ATTENTION_OP = "Attention"
FFN_OP = "SparseFFN"
INT8_OP = "SparseLinearInt8"
FFN_INT8_OP = "SparseFFNInt8"
SPARSE_OPSET = 1
LIBRARY_NAME = "libsmp_sparse.so"
LIBRARY_ENV = "SMP_SPARSE_LIBRARY"
#: The oldest onnxruntime the library loads into: RegisterCustomOps asks for C API version 17
#: (the first with KernelContext_ParallelFor) and returns a clear status from an older one.
ORT_MIN_API_VERSION = 17
ORT_MIN_VERSION = "1.17"
ISAS = {"auto": -1, "portable": 0, "avx2": 1, "avx512": 2}
ACTIVATIONS = {"": 0, "gelu": 1}
_ONNX_DTYPES = {np.dtype(np.float32): 1, np.dtype(np.int32): 6, np.dtype(np.int64): 7,
                np.dtype(np.float64): 11, np.dtype(np.int16): 5, np.dtype(np.uint8): 2}
_ROOT = Path(__file__).resolve().parent


class KernelLibraryError(SessionError):
    """The sparse-kernel library is missing, or a kernel call was refused."""


def _candidates() -> list[Path]:
    """Where the library may be: $SMP_SPARSE_LIBRARY, next to this package, the installed
    package (editable installs keep the sources elsewhere), a local CMake build."""
    found = []
    if os.environ.get(LIBRARY_ENV):
        found.append(Path(os.environ[LIBRARY_ENV]))
    found.append(_ROOT / "native" / LIBRARY_NAME)
    for key in ("platlib", "purelib"):
        found.append(Path(sysconfig.get_paths()[key]) / "runtime" / "native" / LIBRARY_NAME)
    found.append(_ROOT.parent / "build" / "native" / LIBRARY_NAME)
    return found


def custom_op_library_path() -> Path:
    """The custom-op library to register with onnxruntime; KernelLibraryError if not built."""
    candidates = _candidates()
    for path in candidates:
        if path.is_file():
            return path
    raise KernelLibraryError(f"{LIBRARY_NAME} not found (looked in: {', '.join(map(str, candidates))}); "
                             "build it with `pip install -e .` (scikit-build-core compiles runtime/native) "
                             f"or point {LIBRARY_ENV} at it", field="custom_op_libraries")


def library_available() -> bool:
    """True when the custom-op library is built."""
    try:
        custom_op_library_path()
    except KernelLibraryError:
        return False
    return True


_P = ctypes.c_void_p
_I64P = ctypes.POINTER(ctypes.c_int64)


class _SmpArray(ctypes.Structure):
    _fields_ = [("data", _P), ("dtype", ctypes.c_int32), ("rank", ctypes.c_int32), ("dims", _I64P)]


class _SmpWeight(ctypes.Structure):
    _fields_ = [("crow", _SmpArray), ("col", _SmpArray), ("values", _SmpArray), ("bias", _SmpArray),
                ("shape", _I64P), ("shape_len", ctypes.c_int32), ("block", _I64P), ("block_len", ctypes.c_int32)]


@dataclass(frozen=True)
class SparseWeight:
    """One weight ``W`` [shape] of ``x @ W.T + bias`` as the native kernels take it: CSR arrays
    (``block_shape`` (1, 1), ``values`` [nnz]) or BSR (``values`` [nnz_blocks, bh, bw])."""

    crow_indices: np.ndarray
    col_indices: np.ndarray
    values: np.ndarray
    bias: np.ndarray | None
    shape: tuple[int, int]
    block_shape: tuple[int, int] = (1, 1)


@lru_cache(maxsize=None)
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(custom_op_library_path()))
    i32, i64 = ctypes.c_int32, ctypes.c_int64
    array = [_P, i32, _I64P, i32]
    lib.smp_sparse_linear.argtypes = ([_P, i64] + array * 4 + [_I64P, i32, _I64P, i32, _P, i32, i32, i64, i32, _P,
                                                                 _P, _P, ctypes.c_float, ctypes.c_char_p,
                                                                 ctypes.c_size_t])
    lib.smp_sparse_linear.restype = ctypes.c_int
    lib.smp_attention.argtypes = [_P, _P, _P, _P, i32, i64, i64, i64, i64, i32, _P, i32, i32, ctypes.c_char_p,
                                  ctypes.c_size_t]
    lib.smp_attention.restype = ctypes.c_int
    weight_p = ctypes.POINTER(_SmpWeight)
    lib.smp_sparse_ffn.argtypes = [_P, i64, weight_p, weight_p, _P, i32, i32, i32, _P, _P, _P, ctypes.c_float,
                                   ctypes.c_char_p, ctypes.c_size_t]
    lib.smp_sparse_ffn.restype = ctypes.c_int
    lib.smp_resolve_isa.argtypes = [i32]
    lib.smp_resolve_isa.restype = ctypes.c_int
    lib.smp_ort_api_version.restype = ctypes.c_uint32
    lib.smp_abi_slots.argtypes = [ctypes.POINTER(i32), i32]
    lib.smp_abi_call_counts.argtypes = [_I64P, i32]
    lib.smp_abi_selftest.argtypes = [_P, ctypes.c_char_p, ctypes.c_size_t]
    lib.RegisterCustomOps.argtypes = [_P, _P]
    lib.RegisterCustomOps.restype = _P
    return lib


def native_library() -> ctypes.CDLL:
    """The loaded library (ctypes), for the ABI diagnostics the tests read."""
    return _lib()


def resolved_isa(isa: str = "auto") -> str:
    """The instruction set the kernel uses on this machine for ``isa``."""
    return {1: "avx2", 2: "avx512"}.get(_lib().smp_resolve_isa(ISAS[isa]), "portable")


def _dims(shape: tuple[int, ...]) -> ctypes.Array:
    return (ctypes.c_int64 * max(len(shape), 1))(*shape)


def _array_args(arr: np.ndarray | None, keep: list) -> list:
    """(pointer, ONNX dtype, dims, rank) of a C-contiguous array; nulls for None."""
    if arr is None:
        return [None, 0, None, 0]
    arr = np.ascontiguousarray(arr)
    keep.append(arr)
    dims = _dims(arr.shape)
    keep.append(dims)
    return [arr.ctypes.data if arr.size else None, _ONNX_DTYPES.get(arr.dtype, 0), dims, arr.ndim]


def _epilogue_arrays(residual: np.ndarray | None, layer_norm: tuple | None, y_shape: tuple[int, ...],
                     keep: list) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, float]:
    """The residual (shaped like y) and LayerNorm (gamma, beta [y's last dim], epsilon) as
    contiguous float32, checked; the arrays are appended to ``keep``."""
    if residual is not None:
        residual = np.ascontiguousarray(residual, dtype=np.float32)
        if residual.shape != tuple(y_shape):
            raise KernelLibraryError(f"residual has shape {list(residual.shape)}, expected {list(y_shape)}",
                                     field="residual")
        keep.append(residual)
    if layer_norm is None:
        return residual, None, None, 0.0
    gamma, beta = (np.ascontiguousarray(a, dtype=np.float32) for a in layer_norm[:2])
    if gamma.shape != (y_shape[-1],) or beta.shape != (y_shape[-1],):
        raise KernelLibraryError(f"layer_norm gamma/beta must be [{y_shape[-1]}]", field="layer_norm")
    keep += [gamma, beta]
    return residual, gamma, beta, float(layer_norm[2])


def sparse_linear(x: np.ndarray, crow: np.ndarray, col: np.ndarray, values: np.ndarray,
                  bias: np.ndarray | None, shape: tuple[int, ...], block_shape: tuple[int, ...] = (1, 1), *,
                  threads: int = 1, isa: str = "auto", chunk_cols: int = 0, activation: str = "",
                  residual: np.ndarray | None = None,
                  layer_norm: tuple[np.ndarray, np.ndarray, float] | None = None) -> np.ndarray:
    """``act(x @ W.T + bias) + residual`` for ``W`` given as CSR/BSR arrays, through the native kernel.

    The arrays are validated exactly as in the onnxruntime operator; a malformed one raises
    KernelLibraryError with the reason. ``x`` is ``[..., shape[1]]`` float32; ``activation``
    is "" or "gelu" (erf form); ``residual`` is shaped like the result; ``layer_norm``
    (gamma, beta, epsilon; gamma and beta [shape[0]]) normalises each output row last.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    plausible = len(shape) == 2 and all(0 <= int(s) < 2**31 for s in shape)
    if plausible and (x.ndim < 1 or x.shape[-1] != shape[1]):
        raise KernelLibraryError(f"x has shape {list(x.shape)}, weight shape {list(shape)}", field="x")
    # An implausible shape is refused by the library before it reads x or writes y.
    m = int(np.prod(x.shape[:-1], dtype=np.int64)) if plausible else 0
    y = np.empty((*x.shape[:-1], int(shape[0])) if plausible else (0,), dtype=np.float32)
    keep: list = [x, y]
    shape_arr, block_arr = _dims(tuple(shape)), _dims(tuple(block_shape))
    err = ctypes.create_string_buffer(512)
    args = [x.ctypes.data if x.size else None, m]
    for arr in (crow, col, values, bias):
        args += _array_args(arr, keep)
    residual, gamma, beta, eps = _epilogue_arrays(residual, layer_norm, y.shape, keep)
    ln = (gamma.ctypes.data, beta.ctypes.data, eps) if gamma is not None else (None, None, 0.0)
    if activation not in ACTIVATIONS:
        raise KernelLibraryError(f"activation must be one of {sorted(ACTIVATIONS)}", field="activation")
    args += [shape_arr, len(shape), block_arr, len(block_shape), y.ctypes.data if y.size else None,
             int(threads), ISAS[isa], int(chunk_cols), ACTIVATIONS[activation],
             residual.ctypes.data if residual is not None and residual.size else None, *ln, err, len(err)]
    if _lib().smp_sparse_linear(*args) != 0:
        raise KernelLibraryError(err.value.decode(errors="replace"), field="ai.smp.SparseLinear")
    return y


def _weight_struct(weight: SparseWeight, keep: list) -> _SmpWeight:
    arrays = []
    for arr in (weight.crow_indices, weight.col_indices, weight.values, weight.bias):
        data, dtype, dims, rank = _array_args(arr, keep)
        arrays.append(_SmpArray(data, dtype, rank, ctypes.cast(dims, _I64P) if dims is not None else None))
    shape, block = _dims(tuple(weight.shape)), _dims(tuple(weight.block_shape))
    keep += [shape, block]
    return _SmpWeight(*arrays, ctypes.cast(shape, _I64P), len(weight.shape), ctypes.cast(block, _I64P),
                      len(weight.block_shape))


def sparse_ffn(x: np.ndarray, first: SparseWeight, second: SparseWeight, *, activation: str = "gelu",
               residual: np.ndarray | None = None,
               layer_norm: tuple[np.ndarray, np.ndarray, float] | None = None,
               threads: int = 1, isa: str = "auto") -> np.ndarray:
    """``LN(act(x @ W1.T + b1) @ W2.T + b2 + residual)`` through the native ai.smp.SparseFFN
    kernel (both linears of a feed-forward block in one call). The weights are validated as
    in the onnxruntime operator; a malformed one raises KernelLibraryError naming it."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    hidden, out_rows = int(first.shape[1]), int(second.shape[0])
    if x.ndim < 1 or x.shape[-1] != hidden:
        raise KernelLibraryError(f"x has shape {list(x.shape)}, the first weight takes {hidden} features", field="x")
    if activation not in ACTIVATIONS:
        raise KernelLibraryError(f"activation must be one of {sorted(ACTIVATIONS)}", field="activation")
    y = np.empty((*x.shape[:-1], out_rows), dtype=np.float32)
    keep: list = [x, y]
    residual, gamma, beta, eps = _epilogue_arrays(residual, layer_norm, y.shape, keep)
    w1, w2 = _weight_struct(first, keep), _weight_struct(second, keep)
    err = ctypes.create_string_buffer(512)
    m = int(np.prod(x.shape[:-1], dtype=np.int64))
    ptr = (lambda a: None if a is None or a.size == 0 else a.ctypes.data)
    status = _lib().smp_sparse_ffn(ptr(x), m, ctypes.byref(w1), ctypes.byref(w2), ptr(y), int(threads), ISAS[isa],
                                   ACTIVATIONS[activation], ptr(residual), ptr(gamma), ptr(beta), eps, err,
                                   len(err))
    if status != 0:
        raise KernelLibraryError(err.value.decode(errors="replace"), field="ai.smp.SparseFFN")
    return y


def attention(q: np.ndarray, k: np.ndarray | None, v: np.ndarray | None, mask: np.ndarray | None, num_heads: int, *,
              threads: int = 1, isa: str = "auto") -> np.ndarray:
    """BERT self-attention on projected ``[batch, seq, num_heads * d]`` tensors through the native
    ai.smp.Attention kernel: ``softmax(q k^T / sqrt(d) + m) v`` per head, ``m`` float32's lowest
    where ``mask`` [batch, seq] (int32 / int64) is 0. With ``k`` and ``v`` None, ``q`` is the
    packed ``[batch, seq, 3 * num_heads * d]`` tensor holding all three. KernelLibraryError on bad
    shapes."""
    packed = k is None and v is None
    q = np.ascontiguousarray(q, dtype=np.float32)
    parts = 3 if packed else 1
    if q.ndim != 3 or num_heads < 1 or q.shape[2] % (parts * num_heads):
        packing = "3 * " if packed else ""
        raise KernelLibraryError(f"q has shape {list(q.shape)}, not [batch, seq, {packing}{num_heads} * d]", field="q")
    if not packed:
        if k is None or v is None:
            raise KernelLibraryError("k and v go together (both None: q is packed)", field="k/v")
        k, v = (np.ascontiguousarray(a, dtype=np.float32) for a in (k, v))
        if k.shape != q.shape or v.shape != q.shape:
            raise KernelLibraryError("k and v must have q's shape", field="k/v")
    if mask is not None:
        mask = np.ascontiguousarray(mask)
        if mask.shape != q.shape[:2] or mask.dtype not in (np.int32, np.int64):
            raise KernelLibraryError("mask must be int32/int64 [batch, seq]", field="mask")
    batch, seq, width = q.shape[0], q.shape[1], q.shape[2] // parts
    out = np.empty((batch, seq, width), dtype=np.float32)
    err = ctypes.create_string_buffer(512)
    status = _lib().smp_attention(q.ctypes.data, None if packed else k.ctypes.data, None if packed else v.ctypes.data,
                                  None if mask is None else mask.ctypes.data,
                                  0 if mask is None else _ONNX_DTYPES[mask.dtype], batch, seq, num_heads,
                                  width // num_heads, int(packed), out.ctypes.data, int(threads), ISAS[isa], err,
                                  len(err))
    if status != 0:
        raise KernelLibraryError(err.value.decode(errors="replace"), field="ai.smp.Attention")
    return out


__all__ = ["SPARSE_DOMAIN", "SPARSE_OP", "SPARSE_OPSET", "ATTENTION_OP", "FFN_OP", "INT8_OP", "FFN_INT8_OP",
           "attention", "KernelLibraryError", "SparseWeight", "custom_op_library_path", "library_available",
           "sparse_ffn", "sparse_linear", "resolved_isa", "native_library", "ORT_MIN_API_VERSION",
           "ORT_MIN_VERSION", "LIBRARY_NAME"]
