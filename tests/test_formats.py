"""CSR and BSR storage: round trips, sizes, validation of malformed arrays, torch CSR linear."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from smp_export.errors import MaskError
from smp_export.formats import BSRConfig, BSRTensor, CSRConfig, CSRTensor, to_bsr, to_csr

EXACT = dict(atol=0.0, rtol=0.0)
LINEAR_F32 = dict(atol=1e-5, rtol=1e-5)
LINEAR_F64 = dict(atol=1e-12, rtol=1e-12)


def sparse_matrix(rows: int, cols: int, density: float, seed: int = 0,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    dense = torch.randn(rows, cols, generator=gen, dtype=dtype)
    return dense * (torch.rand(rows, cols, generator=gen) < density).to(dtype)


SHAPES = [(1, 1), (1, 7), (7, 1), (5, 3), (13, 17), (64, 48)]
DENSITIES = [0.0, 0.05, 0.3, 0.9, 1.0]


# ----------------------------------------------------------------------------- CSR

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", DENSITIES)
def test_csr_round_trip(shape, density):
    dense = sparse_matrix(*shape, density, seed=hash((shape, density)) % 1000)
    csr = to_csr(dense)
    csr.validate()
    torch.testing.assert_close(csr.to_dense(), dense, **EXACT)
    assert csr.nnz == int((dense != 0).sum())
    assert csr.density == pytest.approx(csr.nnz / dense.numel())
    assert csr.crow_indices.dtype == torch.int32 and csr.col_indices.dtype == torch.int32
    assert csr.crow_indices.numel() == shape[0] + 1
    assert csr.shape == shape


def test_csr_empty_rows_and_columns():
    dense = sparse_matrix(6, 5, 0.8, seed=3)
    dense[[0, 2, 5]] = 0.0
    dense[:, 1] = 0.0
    csr = to_csr(dense)
    assert csr.crow_indices[0] == csr.crow_indices[1]
    assert csr.crow_indices[-2] == csr.crow_indices[-1]
    assert not bool((csr.col_indices == 1).any())
    torch.testing.assert_close(csr.to_dense(), dense, **EXACT)


def test_csr_zero_and_full():
    zero = to_csr(torch.zeros(4, 3))
    assert zero.nnz == 0 and zero.density == 0.0 and zero.values.shape == (0,)
    assert zero.crow_indices.tolist() == [0, 0, 0, 0, 0]
    full = to_csr(torch.ones(4, 3))
    assert full.nnz == 12 and full.density == 1.0
    assert full.col_indices.tolist() == [0, 1, 2] * 4


def test_csr_nbytes():
    dense = sparse_matrix(10, 20, 0.25, seed=1)
    nnz = int((dense != 0).sum())
    assert to_csr(dense).nbytes == 4 * 11 + 4 * nnz + 4 * nnz
    wide = to_csr(dense, CSRConfig(index_dtype=torch.int64, values_dtype=torch.float16))
    assert wide.nbytes == 8 * 11 + 8 * nnz + 2 * nnz
    assert wide.values.dtype == torch.float16 and wide.crow_indices.dtype == torch.int64


def test_csr_keeps_input_dtype():
    dense = sparse_matrix(4, 4, 0.5, dtype=torch.float64)
    assert to_csr(dense).values.dtype == torch.float64


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(2, 2, 2), torch.zeros(3, 3, dtype=torch.int64),
                                 [[1.0, 0.0]], torch.zeros(3, 3).to_sparse()])
def test_csr_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="dense"):
        to_csr(bad)


def test_config_rejects_bad_dtypes():
    with pytest.raises(ValueError, match="index_dtype"):
        CSRConfig(index_dtype=torch.int16)
    with pytest.raises(ValueError, match="values_dtype"):
        CSRConfig(values_dtype=torch.int32)


def _good_csr() -> CSRTensor:
    dense = torch.tensor([[0.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 4.0]])
    csr = to_csr(dense)
    assert csr.crow_indices.tolist() == [0, 2, 2, 4] and csr.col_indices.tolist() == [1, 2, 0, 3]
    return csr


def i32(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


CSR_BREAKAGES = {
    "crow length": dict(crow_indices=i32([0, 2, 4])),
    "crow start": dict(crow_indices=i32([1, 2, 2, 4])),
    "crow end": dict(crow_indices=i32([0, 2, 2, 3])),
    "crow decreasing": dict(crow_indices=i32([0, 3, 2, 4])),
    "col out of range": dict(col_indices=i32([1, 2, 0, 4])),
    "col negative": dict(col_indices=i32([1, -1, 0, 3])),
    "col unsorted": dict(col_indices=i32([2, 1, 0, 3])),
    "col duplicate": dict(col_indices=i32([1, 1, 0, 3])),
    "index dtype": dict(col_indices=torch.tensor([1.0, 2.0, 0.0, 3.0])),
    "index dtypes differ": dict(col_indices=torch.tensor([1, 2, 0, 3], dtype=torch.int64)),
    "index not 1-D": dict(col_indices=i32([[1, 2], [0, 3]])),
    "index not tensor": dict(col_indices=[1, 2, 0, 3]),
    "values length": dict(values=torch.tensor([1.0, 2.0, 3.0])),
    "values dtype": dict(values=torch.tensor([1, 2, 3, 4])),
    "shape": dict(shape=(3, -4)),
    "shape not pair": dict(shape=(3, 4, 1)),
}


@pytest.mark.parametrize("breakage", CSR_BREAKAGES, ids=list(CSR_BREAKAGES))
def test_csr_validate_catches(breakage):
    broken = dataclasses.replace(_good_csr(), **CSR_BREAKAGES[breakage])
    with pytest.raises(MaskError, match="malformed csr"):
        broken.validate()
    with pytest.raises(MaskError):
        broken.to_dense()


def test_csr_validate_accepts_int64_and_rows_with_nothing():
    csr = _good_csr()
    wide = dataclasses.replace(csr, crow_indices=csr.crow_indices.long(), col_indices=csr.col_indices.long())
    wide.validate()
    torch.testing.assert_close(wide.to_dense(), csr.to_dense(), **EXACT)


@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (13, 17), (64, 48)])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.7])
def test_csr_linear_matches_dense(shape, density):
    weight = sparse_matrix(*shape, density, seed=7)
    bias = torch.randn(shape[0])
    x = torch.randn(3, 5, shape[1])
    csr = to_csr(weight)
    expected = torch.nn.functional.linear(x, weight, bias)
    torch.testing.assert_close(csr.linear(x, bias), expected, **LINEAR_F32)
    torch.testing.assert_close(csr.linear(x), torch.nn.functional.linear(x, weight), **LINEAR_F32)


def test_csr_linear_float64():
    weight = sparse_matrix(20, 30, 0.2, dtype=torch.float64)
    x = torch.randn(4, 30, dtype=torch.float64)
    torch.testing.assert_close(to_csr(weight).linear(x), x @ weight.T, **LINEAR_F64)


def test_csr_linear_rejects_wrong_width():
    with pytest.raises(ValueError, match="features"):
        to_csr(torch.eye(3)).linear(torch.randn(2, 4))


def test_csr_to_torch():
    dense = sparse_matrix(9, 11, 0.3)
    torch.testing.assert_close(to_csr(dense).to_torch().to_dense(), dense, **EXACT)


# ----------------------------------------------------------------------------- BSR

BLOCKS = [(1, 1), (1, 4), (2, 2), (4, 1), (4, 8)]


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("density", DENSITIES)
def test_bsr_round_trip(block, density):
    dense = sparse_matrix(8 * block[0], 3 * block[1], density, seed=hash((block, density)) % 1000)
    bsr = to_bsr(dense, BSRConfig(block_shape=block))
    bsr.validate()
    torch.testing.assert_close(bsr.to_dense(), dense, **EXACT)
    assert bsr.values.shape == (bsr.nnz_blocks, *block)
    assert bsr.crow_indices.numel() == dense.shape[0] // block[0] + 1
    assert bsr.block_shape == block and bsr.shape == tuple(dense.shape)


def test_bsr_block_rule_and_density():
    dense = torch.zeros(4, 8)
    dense[0, 1] = 1.0          # block (0, 0) of 2x4
    dense[3, 7] = 2.0          # block (1, 1)
    bsr = to_bsr(dense, BSRConfig(block_shape=(2, 4)))
    assert bsr.nnz_blocks == 2
    assert bsr.crow_indices.tolist() == [0, 1, 2] and bsr.col_indices.tolist() == [0, 1]
    assert int((bsr.values == 0).sum()) == 14          # zeros inside stored blocks are kept
    assert bsr.density == pytest.approx(16 / 32)
    assert bsr.nbytes == 4 * 3 + 4 * 2 + 4 * 16


def test_bsr_one_by_one_equals_csr():
    dense = sparse_matrix(6, 10, 0.4, seed=2)
    bsr, csr = to_bsr(dense, BSRConfig(block_shape=(1, 1))), to_csr(dense)
    assert torch.equal(bsr.crow_indices, csr.crow_indices) and torch.equal(bsr.col_indices, csr.col_indices)
    torch.testing.assert_close(bsr.values.flatten(), csr.values, **EXACT)


def test_bsr_default_block_and_zero():
    bsr = to_bsr(torch.zeros(3, 8))
    assert bsr.block_shape == (1, 4) and bsr.nnz_blocks == 0 and bsr.density == 0.0
    assert bsr.values.shape == (0, 1, 4)


@pytest.mark.parametrize("shape,block", [((6, 10), (1, 4)), ((5, 8), (2, 4)), ((7, 7), (7, 2))])
def test_bsr_non_dividing_block_raises(shape, block):
    with pytest.raises(ValueError, match=rf"block shape \({block[0]}, {block[1]}\).*{shape[0]}, {shape[1]}"):
        to_bsr(torch.ones(shape), BSRConfig(block_shape=block))


@pytest.mark.parametrize("block", [(0, 4), (1,), (1.0, 4), (-1, 2), [1, 4]])
def test_bsr_config_rejects_bad_block(block):
    with pytest.raises(ValueError, match="block_shape"):
        BSRConfig(block_shape=block)


def test_bsr_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        to_bsr(torch.zeros(4))


def _good_bsr() -> BSRTensor:
    dense = torch.zeros(4, 8)
    dense[0, 0], dense[0, 5], dense[3, 2] = 1.0, 2.0, 3.0
    bsr = to_bsr(dense, BSRConfig(block_shape=(2, 4)))
    assert bsr.crow_indices.tolist() == [0, 2, 3] and bsr.col_indices.tolist() == [0, 1, 0]
    return bsr


BSR_BREAKAGES = {
    "crow length": dict(crow_indices=i32([0, 2, 3, 3])),
    "crow start": dict(crow_indices=i32([1, 2, 3])),
    "crow end": dict(crow_indices=i32([0, 2, 2])),
    "crow decreasing": dict(crow_indices=i32([0, 4, 3])),
    "col out of range": dict(col_indices=i32([0, 2, 0])),
    "col unsorted": dict(col_indices=i32([1, 0, 0])),
    "index dtype": dict(crow_indices=torch.tensor([0, 2, 3], dtype=torch.int16)),
    "values not 3-D": dict(values=torch.zeros(3, 8)),
    "values wrong block": dict(values=torch.zeros(3, 4, 2)),
    "values wrong count": dict(values=torch.zeros(2, 2, 4)),
    "block not dividing": dict(block_shape=(3, 4)),
    "block not positive": dict(block_shape=(0, 4)),
    "shape": dict(shape=(4.0, 8)),
}


@pytest.mark.parametrize("breakage", BSR_BREAKAGES, ids=list(BSR_BREAKAGES))
def test_bsr_validate_catches(breakage):
    broken = dataclasses.replace(_good_bsr(), **BSR_BREAKAGES[breakage])
    with pytest.raises(MaskError, match="malformed bsr"):
        broken.validate()
    with pytest.raises(MaskError):
        broken.to_dense()


def test_bsr_to_torch():
    dense = sparse_matrix(8, 12, 0.2)
    bsr = to_bsr(dense, BSRConfig(block_shape=(2, 3)))
    torch.testing.assert_close(bsr.to_torch().to_dense(), dense, **EXACT)


def test_malformed_error_names_field():
    broken = dataclasses.replace(_good_csr(), crow_indices=i32([0, 1, 2, 4]), col_indices=i32([1, 2, 0, 3]))
    broken.validate()  # a different but consistent matrix is fine
    with pytest.raises(MaskError) as info:
        dataclasses.replace(broken, col_indices=i32([1, 9, 0, 3])).validate()
    assert info.value.field == "csr" and "out of range" in str(info.value)
