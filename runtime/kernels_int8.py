"""The int8 sparse linear of the native library, through ctypes (no onnxruntime): weights int8
CSR with one symmetric scale per output row, activations quantized per token inside the call.

``quantize_csr_rows`` makes the weight arrays from float CSR values; ``int8_linear`` runs the
kernel; ``int8_path`` says which instruction path a request resolves to on this CPU. The exact
arithmetic (what a reference must reproduce) is written down in ``runtime/native/src/kernel_int8.h``.
"""

from __future__ import annotations

import ctypes

import numpy as np

from .kernels import ACTIVATIONS, KernelLibraryError, native_library

INT8_PATHS = {"auto": -1, "portable": 0, "avx2": 1, "avx-vnni": 2, "avx512-vnni": 3}
_NAMES = {v: k for k, v in INT8_PATHS.items()}


def _bind() -> ctypes.CDLL:
    lib = native_library()
    if getattr(lib, "_smp_int8_bound", False):
        return lib
    p, i32, i64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
    lib.smp_int8_linear.argtypes = [p, i64, i64, i64, p, p, p, p, p, p, p, i32, i32, i32, ctypes.c_char_p,
                                    ctypes.c_size_t]
    lib.smp_int8_linear.restype = ctypes.c_int
    lib.smp_int8_resolve_path.argtypes = [i32]
    lib.smp_int8_resolve_path.restype = ctypes.c_int
    lib._smp_int8_bound = True
    return lib


def int8_path(path: str = "auto") -> str:
    """The int8 instruction path ``path`` resolves to here (SMP_SPARSE_INT8 steers ``auto``)."""
    if path not in INT8_PATHS:
        raise KernelLibraryError(f"int8 path must be one of {sorted(INT8_PATHS)}, got {path!r}", field="path")
    return _NAMES[_bind().smp_int8_resolve_path(INT8_PATHS[path])]


def quantize_csr_rows(crow: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 of CSR ``values``: (q int8 [nnz] in [-127, 127], scale float32 [rows]).

    ``scale[r] = max |values of row r| / 127`` (1.0 for a row without a nonzero), ``q = rint(v / scale)``.
    """
    crow = np.asarray(crow, dtype=np.int64)
    values = np.asarray(values, dtype=np.float32)
    rows = len(crow) - 1
    counts = np.diff(crow)
    row_of = np.repeat(np.arange(rows), counts)
    amax = np.zeros(rows, dtype=np.float32)
    np.maximum.at(amax, row_of, np.abs(values))
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(values / scale[row_of]), -127, 127).astype(np.int8)
    return q, scale


def int8_linear(x: np.ndarray, crow: np.ndarray, col: np.ndarray, q: np.ndarray, scale: np.ndarray,
                bias: np.ndarray | None, shape: tuple[int, int], *, threads: int = 1, path: str = "auto",
                activation: str = "", residual: np.ndarray | None = None) -> np.ndarray:
    """``act(dequant(q8(x) @ Wq.T) + bias) + residual`` through the native int8 kernel.

    ``x`` [..., shape[1]] float32; ``crow`` int64 [shape[0] + 1], ``col`` int64 [nnz] (strictly
    increasing per row), ``q`` int8 [nnz], ``scale`` float32 [shape[0]]. A malformed array raises
    KernelLibraryError with the library's reason.
    """
    rows, cols = (int(s) for s in shape)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim < 1 or x.shape[-1] != cols:
        raise KernelLibraryError(f"x has shape {list(x.shape)}, weight shape {[rows, cols]}", field="x")
    crow = np.ascontiguousarray(crow, dtype=np.int64)
    if crow.shape != (rows + 1,):
        raise KernelLibraryError(f"crow must be [{rows + 1}], got {list(crow.shape)}", field="crow")
    nnz = int(crow[-1]) if rows >= 0 else 0
    col = np.ascontiguousarray(col, dtype=np.int64)
    q = np.ascontiguousarray(q)
    if col.shape != (nnz,) or q.shape != (nnz,) or q.dtype != np.int8:
        raise KernelLibraryError(f"col and q must be [{nnz}] (q int8)", field="col")
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    if scale.shape != (rows,):
        raise KernelLibraryError(f"scale must be [{rows}], got {list(scale.shape)}", field="scale")
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=np.float32)
        if bias.shape != (rows,):
            raise KernelLibraryError(f"bias must be [{rows}], got {list(bias.shape)}", field="bias")
    if activation not in ACTIVATIONS:
        raise KernelLibraryError(f"activation must be one of {sorted(ACTIVATIONS)}", field="activation")
    y = np.empty((*x.shape[:-1], rows), dtype=np.float32)
    if residual is not None:
        residual = np.ascontiguousarray(residual, dtype=np.float32)
        if residual.shape != y.shape:
            raise KernelLibraryError(f"residual must be {list(y.shape)}", field="residual")
    if path not in INT8_PATHS:
        raise KernelLibraryError(f"int8 path must be one of {sorted(INT8_PATHS)}, got {path!r}", field="path")
    m = int(np.prod(x.shape[:-1], dtype=np.int64))
    err = ctypes.create_string_buffer(512)

    def ptr(a: np.ndarray | None) -> int | None:
        return a.ctypes.data if a is not None and a.size else None

    status = _bind().smp_int8_linear(ptr(x), m, rows, cols, ptr(crow), ptr(col), ptr(q), ptr(scale), ptr(bias),
                                     ptr(residual), ptr(y), int(threads), INT8_PATHS[path], ACTIVATIONS[activation],
                                     err, len(err))
    if status != 0:
        raise KernelLibraryError(err.value.decode(errors="replace"), field="int8_linear")
    return y
