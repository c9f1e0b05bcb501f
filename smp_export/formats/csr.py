"""Compressed sparse row (CSR) storage of one pruned linear weight ``[out, in]``.

``crow_indices[r]:crow_indices[r + 1]`` is the slice of ``col_indices`` / ``values`` that
holds row ``r``; columns are strictly increasing within a row (canonical CSR). ``validate``
checks all of that, so a malformed model file is rejected before a kernel indexes with it.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from functools import cached_property

import torch

from ..errors import MaskError

logger = logging.getLogger(__name__)

INDEX_DTYPES: tuple[torch.dtype, ...] = (torch.int32, torch.int64)


@dataclass(frozen=True)
class CSRConfig:
    """How ``to_csr`` stores a matrix.

    ``index_dtype``: dtype of ``crow_indices`` and ``col_indices`` (int32 or int64).
    ``values_dtype``: dtype of ``values``; ``None`` keeps the input's dtype.
    """

    index_dtype: torch.dtype = torch.int32
    values_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if self.index_dtype not in INDEX_DTYPES:
            raise ValueError(f"index_dtype must be torch.int32 or torch.int64, got {self.index_dtype}")
        if self.values_dtype is not None and not self.values_dtype.is_floating_point:
            raise ValueError(f"values_dtype must be a floating dtype, got {self.values_dtype}")


def check_dense_matrix(dense: object, what: str = "dense") -> torch.Tensor:
    """Return ``dense`` if it is a 2-D floating-point tensor, else raise ValueError."""
    if not isinstance(dense, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(dense).__name__}")
    if dense.dim() != 2:
        raise ValueError(f"{what} must be a 2-D matrix, got shape {tuple(dense.shape)}")
    if not dense.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got dtype {dense.dtype}")
    if dense.layout != torch.strided:
        raise ValueError(f"{what} must be a dense (strided) tensor, got layout {dense.layout}")
    return dense


def malformed(what: str, message: str) -> MaskError:
    """A MaskError for a malformed ``what`` (``csr``, ``bsr``), naming it as the field."""
    return MaskError(f"malformed {what}: {message}", field=what)


def check_compressed_indices(crow: object, col: object, n_rows: int, n_cols: int, what: str) -> None:
    """Check the two index arrays of a CSR/BSR matrix of ``n_rows`` x ``n_cols`` (blocks).

    Raises MaskError if they are not 1-D int32/int64 tensors of one dtype, if ``crow`` does
    not have ``n_rows + 1`` entries starting at 0, non-decreasing, ending at ``len(col)``,
    or if a column is out of ``[0, n_cols)`` or not strictly increasing within its row.
    """
    for name, arr in (("crow_indices", crow), ("col_indices", col)):
        if not isinstance(arr, torch.Tensor):
            raise malformed(what, f"{name} must be a torch.Tensor, got {type(arr).__name__}")
        if arr.dim() != 1:
            raise malformed(what, f"{name} must be 1-D, got shape {tuple(arr.shape)}")
        if arr.dtype not in INDEX_DTYPES:
            raise malformed(what, f"{name} must be int32 or int64, got {arr.dtype}")
    if crow.dtype != col.dtype:
        raise malformed(what, f"crow_indices ({crow.dtype}) and col_indices ({col.dtype}) differ in dtype")
    if crow.numel() != n_rows + 1:
        raise malformed(what, f"crow_indices has {crow.numel()} entries, expected rows + 1 = {n_rows + 1}")
    nnz = col.numel()
    crow64, col64 = crow.long(), col.long()
    if int(crow64[0]) != 0:
        raise malformed(what, f"crow_indices must start at 0, starts at {int(crow64[0])}")
    if int(crow64[-1]) != nnz:
        raise malformed(what, f"crow_indices must end at nnz = {nnz}, ends at {int(crow64[-1])}")
    counts = crow64.diff()
    if bool((counts < 0).any()):
        row = int(torch.nonzero(counts < 0)[0])
        raise malformed(what, f"crow_indices decreases at row {row}")
    if nnz == 0:
        return
    if bool((col64 < 0).any()) or bool((col64 >= n_cols).any()):
        lo, hi = int(col64.min()), int(col64.max())
        raise malformed(what, f"col_indices out of range [0, {n_cols}): min {lo}, max {hi}")
    rows = torch.repeat_interleave(torch.arange(n_rows), counts)
    same_row = rows[1:] == rows[:-1]
    bad = same_row & (col64[1:] <= col64[:-1])
    if bool(bad.any()):
        row = int(rows[1:][bad][0])
        raise malformed(what, f"col_indices not strictly increasing in row {row} (duplicate or unsorted)")


def check_shape(shape: object, what: str) -> tuple[int, int]:
    """``shape`` as a pair of non-negative ints, else MaskError."""
    if (not isinstance(shape, tuple) or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise malformed(what, f"shape must be a pair of non-negative ints, got {shape!r}")
    return shape


def tensor_nbytes(*tensors: torch.Tensor) -> int:
    """Total bytes of the given tensors."""
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True, eq=False)
class CSRTensor:
    """A ``[rows, cols]`` matrix in CSR form; only nonzero entries are stored."""

    crow_indices: torch.Tensor
    col_indices: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int]

    @classmethod
    def from_dense(cls, dense: torch.Tensor, config: CSRConfig = CSRConfig()) -> CSRTensor:
        """Store every nonzero entry of ``dense`` (a 2-D float tensor), row by row."""
        dense = check_dense_matrix(dense).detach()
        mask = dense != 0
        counts = mask.sum(dim=1)
        crow = torch.zeros(dense.shape[0] + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(counts, dim=0)
        col = torch.nonzero(mask)[:, 1]
        values = dense[mask].to(config.values_dtype or dense.dtype)
        return cls(crow_indices=crow.to(config.index_dtype), col_indices=col.to(config.index_dtype).contiguous(),
                   values=values.contiguous(), shape=(int(dense.shape[0]), int(dense.shape[1])))

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.col_indices.numel())

    @property
    def nbytes(self) -> int:
        """Bytes of ``crow_indices`` + ``col_indices`` + ``values``."""
        return tensor_nbytes(self.crow_indices, self.col_indices, self.values)

    @property
    def density(self) -> float:
        """Stored entries over all entries (0.0 for an empty matrix)."""
        total = self.shape[0] * self.shape[1]
        return self.nnz / total if total else 0.0

    def validate(self) -> None:
        """Raise MaskError unless the arrays form a consistent canonical CSR matrix."""
        rows, cols = check_shape(self.shape, "csr")
        check_compressed_indices(self.crow_indices, self.col_indices, rows, cols, "csr")
        v = self.values
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise malformed("csr", f"values must be a floating-point tensor, got {getattr(v, 'dtype', type(v))}")
        if tuple(v.shape) != (self.nnz,):
            raise malformed("csr", f"values has shape {tuple(v.shape)}, expected ({self.nnz},)")

    def to_dense(self) -> torch.Tensor:
        """The dense ``[rows, cols]`` matrix (validates first)."""
        self.validate()
        dense = torch.zeros(self.shape, dtype=self.values.dtype)
        rows = torch.repeat_interleave(torch.arange(self.shape[0]), self.crow_indices.long().diff())
        dense[rows, self.col_indices.long()] = self.values
        return dense

    def to_torch(self) -> torch.Tensor:
        """The same matrix as a ``torch.sparse_csr_tensor`` (validated and built once, then cached)."""
        return self._torch_csr

    @cached_property
    def _torch_csr(self) -> torch.Tensor:
        self.validate()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(self.crow_indices, self.col_indices, self.values,
                                           size=self.shape, check_invariants=False)

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x @ W.T + bias`` like ``nn.Linear``, with ``W`` this sparse ``[out, in]`` matrix.

        ``x`` is ``[..., in]``; the result is ``[..., out]`` in ``values``' dtype.
        """
        if x.shape[-1] != self.shape[1]:
            raise ValueError(f"x has {x.shape[-1]} features, weight {self.shape} expects {self.shape[1]}")
        x2d = x.reshape(-1, self.shape[1]).to(self.values.dtype)
        out = torch.sparse.mm(self.to_torch(), x2d.t().contiguous()).t()
        if bias is not None:
            out = out + bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.shape[0])


def to_csr(dense: torch.Tensor, config: CSRConfig = CSRConfig()) -> CSRTensor:
    """Store the nonzero entries of a 2-D float matrix in CSR form."""
    return CSRTensor.from_dense(dense, config)
