"""The native int8 sparse linear (runtime.kernels_int8) against a numpy int8 reference.

The reference reproduces the kernel's arithmetic (runtime/native/src/kernel_int8.h): per-token
activation scales, exact int32 accumulation, then scale * acc + bias in float32, so each
instruction path must agree with it bit for bit; against the float model, within the
quantization tolerance below.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.kernels import KernelLibraryError
from runtime.kernels_int8 import INT8_PATHS, int8_linear, int8_path, quantize_csr_rows

PATHS = [p for p in INT8_PATHS if p != "auto"]
# Cosine of each output row (token) to the float32 product: what per-token / per-row int8 keeps.
MIN_COSINE = 0.999


def _path_or_skip(path: str) -> str:
    if int8_path(path) != path:
        pytest.skip(f"this CPU has no {path} path (resolves to {int8_path(path)})")
    return path


def _csr(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(dense)
    crow = np.zeros(dense.shape[0] + 1, dtype=np.int64)
    np.add.at(crow, rows + 1, 1)
    return np.cumsum(crow), cols.astype(np.int64), dense[rows, cols].astype(np.float32)


def _weight(rng, rows, cols, density, *, qmax=127, empty_rows=()):
    mask = rng.random((rows, cols)) < density
    mask[list(empty_rows)] = False
    q = rng.integers(-qmax, qmax + 1, size=(rows, cols)).astype(np.int8) * mask
    crow, col, qv = _csr(q)
    scale = rng.uniform(0.001, 0.05, size=rows).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    return crow, col, qv.astype(np.int8), scale, bias


def reference(x, crow, col, q, scale, bias, rows):
    """numpy int8 reference: (y float32, acc int64)."""
    x = x.reshape(int(np.prod(x.shape[:-1])), x.shape[-1]).astype(np.float32)
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(len(x), np.float32)
    finite = np.isfinite(x).all(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(finite & (amax > 0), np.float32(127) / amax, np.float32(0)).astype(np.float32)
        xq = np.clip(np.rint(x * inv[:, None]), -127, 127)
    xq = np.where(np.isnan(xq), -127, xq).astype(np.int64)
    st_ = np.where(finite, amax / np.float32(127), np.float32(np.nan)).astype(np.float32)
    w = np.zeros((rows, x.shape[1]), dtype=np.int64)
    for r in range(rows):
        w[r, col[crow[r]:crow[r + 1]]] = q[crow[r]:crow[r + 1]]
    acc = xq @ w.T
    s = (scale[None, :] * st_[:, None]).astype(np.float32)
    with np.errstate(invalid="ignore"):
        y = (bias[None, :] + s * acc.astype(np.float32)).astype(np.float32)
    return y, acc


SHAPES = [(1, 1, 1), (37, 64, 96), (33, 7, 13), (64, 40, 384), (5, 130, 1), (70, 17, 8)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m,rows,cols", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.1, 1.0])
def test_exact_against_numpy_reference(path, threads, m, rows, cols, density):
    _path_or_skip(path)
    rng = np.random.default_rng(m * 1000 + rows + cols)
    crow, col, q, scale, bias = _weight(rng, rows, cols, density)
    x = rng.standard_normal((m, cols)).astype(np.float32)
    x[0] = 0.0  # a token of zeros: scale 0
    y = int8_linear(x, crow, col, q, scale, bias, (rows, cols), threads=threads, path=path)
    want, _ = reference(x, crow, col, q, scale, bias, rows)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("path", PATHS)
def test_narrow_weights_and_empty_rows(path):
    """|q| <= 64 takes AVX2's no-sign-trick loop; rows without entries give the bias."""
    _path_or_skip(path)
    rng = np.random.default_rng(3)
    crow, col, q, scale, bias = _weight(rng, 96, 256, 0.05, qmax=64, empty_rows=range(5, 12))
    assert (np.diff(crow) == 0).sum() == 7
    x = rng.standard_normal((64, 256)).astype(np.float32)
    y = int8_linear(x, crow, col, q, scale, bias, (96, 256), path=path)
    np.testing.assert_array_equal(y, reference(x, crow, col, q, scale, bias, 96)[0])
    np.testing.assert_array_equal(y[:, np.diff(crow) == 0], np.broadcast_to(bias, y.shape)[:, np.diff(crow) == 0])


@pytest.mark.parametrize("path", PATHS)
def test_int8_limits_do_not_saturate(path):
    """Every activation at +-127 and every weight at +-127: the largest pair sums there are."""
    _path_or_skip(path)
    rows, cols = 16, 512
    q = np.where(np.arange(rows * cols).reshape(rows, cols) % 3 == 0, -127, 127).astype(np.int8)
    crow, col, qv = _csr(q)
    scale, bias = np.ones(rows, np.float32), np.zeros(rows, np.float32)
    x = np.where(np.arange(32 * cols).reshape(32, cols) % 5 == 0, -1.0, 1.0).astype(np.float32)
    y, acc = None, None
    for sign in (1.0, -1.0):
        y = int8_linear(sign * x, crow, col, qv.astype(np.int8), scale, bias, (rows, cols), path=path)
        want, acc = reference(sign * x, crow, col, qv, scale, bias, rows)
        np.testing.assert_array_equal(y, want)
    assert np.abs(acc).max() > 127 * 127 * 100  # well past int16


@pytest.mark.parametrize("path", PATHS)
def test_close_to_float_model(path):
    _path_or_skip(path)
    rng = np.random.default_rng(7)
    dense = rng.standard_normal((384, 1536)).astype(np.float32) * (rng.random((384, 1536)) < 0.1)
    crow, col, values = _csr(dense)
    q, scale = quantize_csr_rows(crow, values)
    bias = rng.standard_normal(384).astype(np.float32)
    x = rng.standard_normal((3, 40, 1536)).astype(np.float32)
    y = int8_linear(x, crow, col, q, scale, bias, (384, 1536), path=path, threads=2)
    want = x @ dense.T + bias
    cos = (y * want).sum(-1) / np.linalg.norm(y, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cos.min() >= MIN_COSINE, cos.min()


@pytest.mark.parametrize("path", PATHS)
def test_epilogue_gelu_and_residual(path):
    _path_or_skip(path)
    rng = np.random.default_rng(11)
    crow, col, q, scale, bias = _weight(rng, 48, 64, 0.3)
    x = rng.standard_normal((40, 64)).astype(np.float32)
    res = rng.standard_normal((40, 48)).astype(np.float32)
    pre, _ = reference(x, crow, col, q, scale, bias, 48)
    y = int8_linear(x, crow, col, q, scale, bias, (48, 64), path=path, residual=res)
    np.testing.assert_array_equal(y, pre + res)
    from scipy.special import erf
    g = int8_linear(x, crow, col, q, scale, bias, (48, 64), path=path, activation="gelu")
    np.testing.assert_allclose(g, 0.5 * pre * (1 + erf(pre / np.sqrt(2))), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", PATHS)
def test_non_finite_token_gives_nan_only_there(path):
    _path_or_skip(path)
    rng = np.random.default_rng(5)
    crow, col, q, scale, bias = _weight(rng, 16, 64, 0.5)
    x = rng.standard_normal((33, 64)).astype(np.float32)
    x[2, 5], x[32, 1] = np.nan, np.inf
    y = int8_linear(x, crow, col, q, scale, bias, (16, 64), path=path)
    bad = np.isnan(y).any(axis=1)
    assert bad[2] and bad[32] and bad.sum() == 2 and np.isnan(y[2]).all()


def test_quantize_csr_rows():
    crow = np.array([0, 2, 2, 3], np.int64)
    q, scale = quantize_csr_rows(crow, np.array([0.5, -1.0, 0.25], np.float32))
    np.testing.assert_array_equal(q, [64, -127, 127])
    np.testing.assert_allclose(scale, [1 / 127, 1.0, 0.25 / 127])


def _good():
    crow = np.array([0, 2, 3], np.int64)
    return dict(crow=crow, col=np.array([0, 3, 1], np.int64), q=np.array([5, -7, 9], np.int8),
                scale=np.array([0.1, 0.2], np.float32), bias=np.zeros(2, np.float32))


@pytest.mark.parametrize("change,message", [
    (dict(scale=np.array([0.1, 0.0], np.float32)), "scale must be finite and > 0"),
    (dict(scale=np.array([np.nan, 0.2], np.float32)), "scale must be finite and > 0"),
    (dict(scale=np.array([-1.0, 0.2], np.float32)), "scale must be finite and > 0"),
    (dict(q=np.array([5, -128, 9], np.int8)), "-128"),
    (dict(col=np.array([0, 4, 1], np.int64)), "outside [0, 4)"),
    (dict(col=np.array([3, 0, 1], np.int64)), "strictly increasing"),
    (dict(col=np.array([-1, 3, 1], np.int64)), "outside"),
    (dict(crow=np.array([0, 3, 2], np.int64), col=np.array([0, 1], np.int64), q=np.array([5, 9], np.int8)),
     "decreases"),
    (dict(crow=np.array([1, 2, 3], np.int64)), "start at 0"),
    (dict(bias=np.array([0.0, np.inf], np.float32)), "bias holds a non-finite value"),
])
def test_malformed_arrays_are_refused(change, message):
    a = {**_good(), **change}
    with pytest.raises(KernelLibraryError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        int8_linear(np.ones((2, 4), np.float32), a["crow"], a["col"], a["q"], a["scale"], a["bias"], (2, 4))


def test_too_many_columns_refused():
    cols = 65537
    with pytest.raises(KernelLibraryError, match="cols in"):
        int8_linear(np.ones((1, cols), np.float32), np.zeros(2, np.int64), np.zeros(0, np.int64),
                    np.zeros(0, np.int8), np.ones(1, np.float32), None, (1, cols))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_arrays_never_crash(data):
    rows = data.draw(st.integers(0, 6))
    cols = data.draw(st.integers(0, 9))
    crow = np.array(data.draw(st.lists(st.integers(-2, 12), min_size=rows + 1, max_size=rows + 1)), np.int64)
    nnz = max(int(crow[-1]), 0)
    col = np.array(data.draw(st.lists(st.integers(-3, 12), min_size=nnz, max_size=nnz)), np.int64)
    q = np.array(data.draw(st.lists(st.integers(-128, 127), min_size=nnz, max_size=nnz)), np.int8)
    scale = np.array(data.draw(st.lists(st.sampled_from([0.5, 0.0, -1.0, np.nan, np.inf, 1e-30]),
                                        min_size=rows, max_size=rows)), np.float32)
    x = np.ones((data.draw(st.integers(1, 40)), cols), np.float32)
    try:
        y = int8_linear(x, crow, col, q, scale, None, (rows, cols), path=data.draw(st.sampled_from(PATHS)))
    except KernelLibraryError:
        return
    want, _ = reference(x, crow, col, q, scale, np.zeros(rows, np.float32), rows)
    np.testing.assert_array_equal(y, want)
