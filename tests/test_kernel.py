"""The native sparse kernel called directly: agreement with numpy on random and edge shapes."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.kernels import KernelLibraryError, resolved_isa, sparse_linear
from tests.kernel_helpers import assert_close, bsr_arrays, csr_arrays, random_weight, reference

ISAS = ["portable", "avx2", "avx512"]   # each falls back to the best the CPU has below it


def _intel_cpu() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.split(":")[-1].strip() == "GenuineIntel" for line in f if line.startswith("vendor_id"))
    except OSError:
        return False


def test_isa_dispatch_and_forced_fallback(monkeypatch):
    """auto is AVX-512 on Intel CPUs that have it and AVX2 elsewhere (isa_ab measured both)."""
    monkeypatch.delenv("SMP_SPARSE_ISA", raising=False)
    assert resolved_isa("portable") == "portable"
    assert resolved_isa("avx2") in ("avx2", "portable")
    assert resolved_isa("avx512") in ("avx512", resolved_isa("avx2"))   # the best the CPU has
    expected = resolved_isa("avx512") if _intel_cpu() else resolved_isa("avx2")
    assert resolved_isa("auto") == expected


def test_the_environment_picks_the_isa_of_auto(monkeypatch):
    """SMP_SPARSE_ISA is read on every kernel call: it overrides the vendor default either way."""
    for name in ("avx512", "avx2", "portable"):
        monkeypatch.setenv("SMP_SPARSE_ISA", name)
        assert resolved_isa("auto") == resolved_isa(name)


@pytest.mark.skipif(resolved_isa("avx512") != "avx512", reason="no AVX-512 on this CPU")
def test_avx512_path_runs_and_differs_in_summation_order_only():
    """On an AVX-512 CPU the CSR loop is another one (4 accumulator pairs): within rounding of the
    AVX2 path, multi-chunk matrices included, and not bit-identical (it really ran)."""
    rng = np.random.default_rng(9)
    w = random_weight(rng, 96, 3000, 0.2)
    b = rng.standard_normal(96).astype(np.float32)
    x = rng.standard_normal((70, 3000)).astype(np.float32)
    arrays = csr_arrays(w)
    fast, avx2 = (sparse_linear(x, *arrays, b, w.shape, isa=isa) for isa in ("avx512", "avx2"))
    for chunk in (0, 256):
        assert_close(sparse_linear(x, *arrays, b, w.shape, isa="avx512", chunk_cols=chunk), reference(x, w, b))
    assert_close(fast, avx2)
    assert not np.array_equal(fast, avx2)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
def test_random_shapes_and_densities(isa, threads):
    rng = np.random.default_rng(threads)
    for _ in range(12):
        m, rows, cols = int(rng.integers(1, 80)), int(rng.integers(1, 70)), int(rng.integers(1, 90))
        density = float(rng.choice([0.0, 0.03, 0.1, 0.5, 1.0]))
        w = random_weight(rng, rows, cols, density)
        b = rng.standard_normal(rows).astype(np.float32)
        x = rng.standard_normal((m, cols)).astype(np.float32)
        y = sparse_linear(x, *csr_arrays(w), b, (rows, cols), threads=threads, isa=isa)
        assert_close(y, reference(x, w, b))


@pytest.mark.parametrize("isa", ISAS)
def test_edge_cases(isa):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((37, 64)).astype(np.float32)
    w = random_weight(rng, 48, 64, 0.2)
    w[::3] = 0.0                                   # empty rows
    b = rng.standard_normal(48).astype(np.float32)
    assert_close(sparse_linear(x, *csr_arrays(w), b, (48, 64), isa=isa), reference(x, w, b))
    assert_close(sparse_linear(x, *csr_arrays(w), None, (48, 64), isa=isa), reference(x, w, None))
    one_col = random_weight(rng, 5, 1, 1.0)         # one input column
    x1 = rng.standard_normal((33, 1)).astype(np.float32)
    assert_close(sparse_linear(x1, *csr_arrays(one_col), None, (5, 1), isa=isa), reference(x1, one_col, None))
    one_row = random_weight(rng, 1, 64, 0.5)        # one output row
    assert_close(sparse_linear(x, *csr_arrays(one_row), None, (1, 64), isa=isa), reference(x, one_row, None))
    empty = sparse_linear(np.zeros((0, 64), np.float32), *csr_arrays(w), b, (48, 64), isa=isa)
    assert empty.shape == (0, 48)
    x3 = rng.standard_normal((2, 7, 64)).astype(np.float32)   # leading dims are tokens
    assert_close(sparse_linear(x3, *csr_arrays(w), b, (48, 64), isa=isa), reference(x3, w, b))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("chunk", [0, 16])
def test_every_row_length_of_the_unrolled_loop(isa, chunk):
    # Row i holds exactly i nonzeros: the AVX2 CSR loop takes four at a time, then a pair and
    # a single one, so lengths 0..13 reach every tail (and chunking splits them further).
    rng = np.random.default_rng(6)
    cols = 40
    w = np.zeros((14, cols), np.float32)
    for i in range(14):
        w[i, rng.choice(cols, size=i, replace=False)] = rng.standard_normal(i)
    b = rng.standard_normal(14).astype(np.float32)
    x = rng.standard_normal((45, cols)).astype(np.float32)
    assert_close(sparse_linear(x, *csr_arrays(w), b, (14, cols), isa=isa, chunk_cols=chunk), reference(x, w, b))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("chunk", [0, 8, 24])
def test_column_chunks_and_int64_indices(isa, chunk):
    rng = np.random.default_rng(2)
    w = random_weight(rng, 40, 100, 0.15)
    x = rng.standard_normal((70, 100)).astype(np.float32)
    crow, col, values = csr_arrays(w, np.int64)
    assert_close(sparse_linear(x, crow, col, values, None, (40, 100), isa=isa, chunk_cols=chunk),
                 reference(x, w, None))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("block", [(1, 4), (4, 1), (2, 2), (3, 5), (8, 1)])
def test_bsr_blocks(isa, block):
    rng = np.random.default_rng(3)
    rows, cols = block[0] * 9, block[1] * 11
    w = random_weight(rng, rows, cols, 0.3, block)
    b = rng.standard_normal(rows).astype(np.float32)
    x = rng.standard_normal((45, cols)).astype(np.float32)
    for threads in (1, 2):
        y = sparse_linear(x, *bsr_arrays(w, block), b, (rows, cols), block, threads=threads, isa=isa)
        assert_close(y, reference(x, w, b))


def test_isas_agree_on_a_bert_sized_linear():
    rng = np.random.default_rng(4)
    w = random_weight(rng, 384, 1536, 0.1)
    x = rng.standard_normal((128, 1536)).astype(np.float32)
    arrays = csr_arrays(w)
    want = reference(x, w, None)
    for isa in ISAS:
        assert_close(sparse_linear(x, *arrays, None, (384, 1536), threads=2, isa=isa), want)


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_and_residual_epilogues(isa):
    from scipy.special import erf

    rng = np.random.default_rng(5)
    w = random_weight(rng, 70, 50, 0.2)
    b = rng.standard_normal(70).astype(np.float32)
    x = (rng.standard_normal((45, 50)) * 3).astype(np.float32)
    residual = rng.standard_normal((45, 70)).astype(np.float32)
    linear = reference(x, w, b)
    gelu = sparse_linear(x, *csr_arrays(w), b, (70, 50), isa=isa, activation="gelu", threads=2)
    assert_close(gelu, 0.5 * linear * (1 + erf(linear / np.sqrt(2))))
    both = sparse_linear(x, *csr_arrays(w), b, (70, 50), isa=isa, activation="gelu", residual=residual)
    assert_close(both, 0.5 * linear * (1 + erf(linear / np.sqrt(2))) + residual)
    assert_close(sparse_linear(x, *csr_arrays(w), b, (70, 50), isa=isa, residual=residual), linear + residual)
    grid = np.linspace(-10, 10, 20001, dtype=np.float32).reshape(-1, 1)   # the erf approximation everywhere
    identity = (np.array([0, 1], np.int32), np.array([0], np.int32), np.ones(1, np.float32))
    got = sparse_linear(grid, *identity, None, (1, 1), isa=isa, activation="gelu")
    want = 0.5 * grid.astype(np.float64) * (1 + erf(grid / np.sqrt(2)))
    assert np.abs(got - want).max() < 1e-6


def test_shape_mismatch_is_refused():
    w = np.eye(4, dtype=np.float32)
    with pytest.raises(KernelLibraryError, match="x has shape"):
        sparse_linear(np.zeros((2, 3), np.float32), *csr_arrays(w), None, (4, 4))
    with pytest.raises(KernelLibraryError, match="residual has shape"):
        sparse_linear(np.zeros((2, 4), np.float32), *csr_arrays(w), None, (4, 4), residual=np.zeros((2, 3)))


def _layer_norm(y: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    y = y.astype(np.float64)
    mean = y.mean(-1, keepdims=True)
    return (y - mean) / np.sqrt(y.var(-1, keepdims=True) + eps) * gamma + beta


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tokens", [5, 45, 700])          # rows split between tasks (5, 45) or not (700)
@pytest.mark.parametrize("threads", [1, 2])
def test_layer_norm_epilogue(isa, tokens, threads):
    """residual + LayerNorm over each output row, whichever way the rows were split."""
    rng = np.random.default_rng(tokens)
    w = random_weight(rng, 70, 50, 0.2)
    b = rng.standard_normal(70).astype(np.float32)
    x = (rng.standard_normal((tokens, 50)) * 3).astype(np.float32)
    residual = rng.standard_normal((tokens, 70)).astype(np.float32)
    gamma, beta = rng.standard_normal(70).astype(np.float32), rng.standard_normal(70).astype(np.float32)
    got = sparse_linear(x, *csr_arrays(w), b, (70, 50), isa=isa, threads=threads, residual=residual,
                        layer_norm=(gamma, beta, 1e-12))
    assert_close(got, _layer_norm(reference(x, w, b) + residual, gamma, beta, 1e-12))
    plain = sparse_linear(x, *csr_arrays(w), b, (70, 50), isa=isa, threads=threads, layer_norm=(gamma, beta, 1e-5))
    assert_close(plain, _layer_norm(reference(x, w, b), gamma, beta, 1e-5))
    with pytest.raises(KernelLibraryError, match="layer_norm gamma/beta"):
        sparse_linear(x, *csr_arrays(w), b, (70, 50), layer_norm=(gamma[:5], beta, 1e-5))
