"""Block sparse row (BSR) storage of one pruned linear weight ``[out, in]``.

The matrix is cut into ``block_shape = (bh, bw)`` tiles; a tile is stored (whole, zeros
included) when any entry in it is nonzero. ``crow_indices`` / ``col_indices`` index
block-rows and block-columns exactly like CSR does for rows and columns.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch

from .csr import INDEX_DTYPES, check_compressed_indices, check_dense_matrix, check_shape, malformed, tensor_nbytes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BSRConfig:
    """How ``to_bsr`` stores a matrix.

    ``block_shape``: ``(rows, cols)`` of a block; both must divide the matrix's dims.
    ``index_dtype``: dtype of the index arrays (int32 or int64).
    ``values_dtype``: dtype of ``values``; ``None`` keeps the input's dtype.
    """

    block_shape: tuple[int, int] = (1, 4)
    index_dtype: torch.dtype = torch.int32
    values_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        bs = self.block_shape
        if (not isinstance(bs, tuple) or len(bs) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in bs)):
            raise ValueError(f"block_shape must be a pair of positive ints, got {bs!r}")
        if self.index_dtype not in INDEX_DTYPES:
            raise ValueError(f"index_dtype must be torch.int32 or torch.int64, got {self.index_dtype}")
        if self.values_dtype is not None and not self.values_dtype.is_floating_point:
            raise ValueError(f"values_dtype must be a floating dtype, got {self.values_dtype}")


@dataclass(frozen=True, eq=False)
class BSRTensor:
    """A ``[rows, cols]`` matrix in BSR form: ``values`` is ``[nnz_blocks, bh, bw]``."""

    crow_indices: torch.Tensor
    col_indices: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int]
    block_shape: tuple[int, int]

    @classmethod
    def from_dense(cls, dense: torch.Tensor, config: BSRConfig = BSRConfig()) -> BSRTensor:
        """Store every block of ``dense`` that holds a nonzero entry."""
        dense = check_dense_matrix(dense).detach()
        (rows, cols), (bh, bw) = dense.shape, config.block_shape
        if rows % bh or cols % bw:
            raise ValueError(f"block shape {config.block_shape} does not divide matrix shape {tuple(dense.shape)}")
        blocks = dense.reshape(rows // bh, bh, cols // bw, bw).permute(0, 2, 1, 3)
        keep = (blocks != 0).any(dim=3).any(dim=2)
        crow = torch.zeros(rows // bh + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(keep.sum(dim=1), dim=0)
        col = torch.nonzero(keep)[:, 1]
        values = blocks[keep].to(config.values_dtype or dense.dtype)
        return cls(crow_indices=crow.to(config.index_dtype), col_indices=col.to(config.index_dtype).contiguous(),
                   values=values.contiguous(), shape=(int(rows), int(cols)), block_shape=(bh, bw))

    @property
    def nnz_blocks(self) -> int:
        """Number of stored blocks."""
        return int(self.col_indices.numel())

    @property
    def nbytes(self) -> int:
        """Bytes of ``crow_indices`` + ``col_indices`` + ``values``."""
        return tensor_nbytes(self.crow_indices, self.col_indices, self.values)

    @property
    def density(self) -> float:
        """Stored entries (zeros inside stored blocks included) over all entries."""
        total = self.shape[0] * self.shape[1]
        return self.nnz_blocks * self.block_shape[0] * self.block_shape[1] / total if total else 0.0

    def validate(self) -> None:
        """Raise MaskError unless the arrays form a consistent canonical BSR matrix."""
        rows, cols = check_shape(self.shape, "bsr")
        bs = self.block_shape
        if (not isinstance(bs, tuple) or len(bs) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in bs)):
            raise malformed("bsr", f"block_shape must be a pair of positive ints, got {bs!r}")
        bh, bw = bs
        if rows % bh or cols % bw:
            raise malformed("bsr", f"block shape {bs} does not divide matrix shape {self.shape}")
        check_compressed_indices(self.crow_indices, self.col_indices, rows // bh, cols // bw, "bsr")
        v = self.values
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise malformed("bsr", f"values must be a floating-point tensor, got {getattr(v, 'dtype', type(v))}")
        if tuple(v.shape) != (self.nnz_blocks, bh, bw):
            raise malformed("bsr", f"values has shape {tuple(v.shape)}, expected ({self.nnz_blocks}, {bh}, {bw})")

    def to_dense(self) -> torch.Tensor:
        """The dense ``[rows, cols]`` matrix (validates first)."""
        self.validate()
        (rows, cols), (bh, bw) = self.shape, self.block_shape
        blocks = torch.zeros(rows // bh, cols // bw, bh, bw, dtype=self.values.dtype)
        block_rows = torch.repeat_interleave(torch.arange(rows // bh), self.crow_indices.long().diff())
        blocks[block_rows, self.col_indices.long()] = self.values
        return blocks.permute(0, 2, 1, 3).reshape(rows, cols)

    def to_torch(self) -> torch.Tensor:
        """The same matrix as a ``torch.sparse_bsr_tensor`` (validates first)."""
        self.validate()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse BSR tensor support is in beta")
            return torch.sparse_bsr_tensor(self.crow_indices, self.col_indices, self.values,
                                           size=self.shape, check_invariants=False)


def to_bsr(dense: torch.Tensor, config: BSRConfig = BSRConfig()) -> BSRTensor:
    """Store the nonzero blocks of a 2-D float matrix in BSR form."""
    return BSRTensor.from_dense(dense, config)
