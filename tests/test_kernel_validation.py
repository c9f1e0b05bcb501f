"""Malformed CSR/BSR arrays (fuzzed with hypothesis) fail with a clear error, never a crash.

The native validator must accept exactly what the Python one (smp_export.formats) accepts,
directly and inside onnxruntime sessions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.kernels import KernelLibraryError, sparse_linear
from smp_export.errors import MaskError
from smp_export.formats.bsr import BSRTensor
from smp_export.formats.csr import CSRTensor
from tests.kernel_helpers import assert_close, csr_arrays, session, sparse_linear_model

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def csr_like(draw):
    """Arrays that look like CSR of a rows x cols matrix, often subtly wrong."""
    rows, cols = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    nnz = draw(st.integers(0, 10))
    crow_len = draw(st.sampled_from([rows + 1, rows + 1, rows + 1, rows, rows + 2]))
    crow = draw(st.lists(st.integers(-2, nnz + 2), min_size=crow_len, max_size=crow_len))
    if draw(st.booleans()) and crow:   # a plausible row pointer: sorted, from 0 to nnz
        crow = sorted(crow)
        crow[0], crow[-1] = 0, nnz
    col = draw(st.lists(st.integers(-2, cols + 1), min_size=nnz, max_size=nnz))
    if draw(st.booleans()):
        col = [min(max(c, 0), max(cols - 1, 0)) for c in col]
    n_values = draw(st.sampled_from([nnz, nnz, nnz, max(nnz - 1, 0), nnz + 1]))
    dtype = draw(st.sampled_from([np.int32, np.int64]))
    return rows, cols, np.array(crow, dtype=dtype), np.array(col, dtype=dtype), np.ones(n_values, np.float32)


def _python_accepts(rows, cols, crow, col, values) -> bool:
    try:
        CSRTensor(torch.from_numpy(crow), torch.from_numpy(col), torch.from_numpy(values), (rows, cols)).validate()
    except MaskError:
        return False
    return True


@FUZZ
@given(csr_like())
def test_native_validation_matches_python(case):
    rows, cols, crow, col, values = case
    x = np.ones((3, cols), np.float32)
    accepted = _python_accepts(rows, cols, crow, col, values)
    if accepted:
        y = sparse_linear(x, crow, col, values, None, (rows, cols))
        dense = CSRTensor(torch.from_numpy(crow), torch.from_numpy(col), torch.from_numpy(values),
                          (rows, cols)).to_dense().numpy()
        assert_close(y, x @ dense.T)
    else:
        with pytest.raises(KernelLibraryError, match=r"crow_indices|col_indices|values"):
            sparse_linear(x, crow, col, values, None, (rows, cols))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csr_like())
def test_malformed_initializers_fail_session_creation(case):
    rows, cols, crow, col, values = case
    model = sparse_linear_model((rows, cols), {"crow": crow, "col": col, "values": values})
    if _python_accepts(rows, cols, crow, col, values):
        x = np.ones((2, cols), np.float32)
        assert session(model).run(None, {"X": x})[0].shape == (2, rows)
    else:
        with pytest.raises(Exception, match=r"ai.smp.SparseLinear node 'lin': (crow_indices|col_indices|values)"):
            session(model)


@st.composite
def bsr_like(draw):
    bh, bw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    nbr, nbc = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    nnz = draw(st.integers(0, 6))
    crow = sorted(draw(st.lists(st.integers(0, nnz), min_size=nbr + 1, max_size=nbr + 1)))
    if crow and draw(st.booleans()):
        crow[0], crow[-1] = 0, nnz
    col = draw(st.lists(st.integers(-1, nbc), min_size=nnz, max_size=nnz))
    shape = draw(st.sampled_from([(nnz, bh, bw), (nnz, bh, bw), (nnz, bw, bh), (nnz * bh * bw,)]))
    values = np.ones(shape, np.float32)
    return (nbr * bh, nbc * bw), (bh, bw), np.array(crow, np.int32), np.array(col, np.int32), values


@FUZZ
@given(bsr_like())
def test_bsr_validation_matches_python(case):
    shape, block, crow, col, values = case
    x = np.ones((2, shape[1]), np.float32)
    try:
        BSRTensor(torch.from_numpy(crow), torch.from_numpy(col), torch.from_numpy(values), shape, block).validate()
        accepted = True
    except MaskError:
        accepted = False
    if block == (1, 1):   # a 1x1-block matrix is CSR: values must be 1-D
        try:
            CSRTensor(torch.from_numpy(crow), torch.from_numpy(col), torch.from_numpy(values), shape).validate()
            accepted = values.ndim == 1
        except MaskError:
            accepted = False
    if accepted:
        assert sparse_linear(x, crow, col, values, None, shape, block).shape == (2, shape[0])
    else:
        with pytest.raises(KernelLibraryError):
            sparse_linear(x, crow, col, values, None, shape, block)


@pytest.mark.parametrize("change, message", [
    (dict(values=np.ones(3, np.float64)), "values must be float32"),
    (dict(crow=np.array([0, 1, 3], np.int64)), "same dtype"),
    (dict(crow=np.array([0, 1, 3], np.float32)), "crow_indices must be int32 or int64"),
    (dict(bias=np.ones(5, np.float32)), "bias has 5 entries, expected 2"),
    (dict(bias=np.ones(2, np.float64)), "bias must be float32"),
    (dict(shape=(2,)), "attribute shape must hold 2 values"),
    (dict(shape=(2, -3)), "out of range"),
    (dict(block=(0, 1)), "block_shape values"),
    (dict(block=(2, 2)), "does not divide"),
    (dict(shape=(2, 1 << 40)), "out of range"),
])
def test_each_fault_has_its_message(change, message):
    args = dict(crow=np.array([0, 1, 3], np.int32), col=np.array([2, 0, 1], np.int32),
                values=np.ones(3, np.float32), bias=None, shape=(2, 3), block=(1, 1))
    args.update(change)
    x = np.ones((1, 3), np.float32)
    with pytest.raises(KernelLibraryError, match=message):
        sparse_linear(x, args["crow"], args["col"], args["values"], args["bias"], args["shape"], args["block"])


@pytest.mark.parametrize("attrs, message", [
    (dict(shape=None), "attribute shape .* is required"),
    (dict(shape=[2, 3, 4]), "attribute shape must hold 2 values"),
    (dict(block_shape=[1]), "attribute block_shape must hold 2 values"),
    (dict(block_shape=2), "attribute block_shape must hold 2 values, got 0"),
    (dict(activation="relu"), 'attribute activation must be "" or "gelu", got "relu"'),
    (dict(activation=[1, 2]), "attribute activation must be a string"),
    (dict(block_shape=[3, 1]), "block_shape does not divide shape"),
])
def test_bad_attributes_fail_session_creation(attrs, message):
    w = np.array([[0, 0, 1], [1, 1, 0]], np.float32)
    crow, col, values = csr_arrays(w)
    model = sparse_linear_model((2, 3), {"crow": crow, "col": col, "values": values}, attrs=attrs)
    with pytest.raises(Exception, match=f"node 'lin': {message}"):
        session(model)
