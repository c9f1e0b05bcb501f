"""ai.smp.SparseFFN: both linears of a feed-forward block in one kernel call, directly and in
onnxruntime sessions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from onnx import TensorProto, helper
from scipy.special import erf

from runtime.kernels import FFN_OP, SPARSE_DOMAIN, KernelLibraryError, SparseWeight, sparse_ffn, sparse_linear
from tests.kernel_helpers import assert_close, bsr_arrays, csr_arrays, graph_tensors, random_weight, session
from tests.test_kernel_validation import _python_accepts, csr_like

ISAS = ["portable", "avx2", "avx512"]


def _weight(rng, rows, cols, density, block=(1, 1), bias=True) -> tuple[np.ndarray, SparseWeight]:
    w = random_weight(rng, rows, cols, density, block)
    arrays = csr_arrays(w) if block == (1, 1) else bsr_arrays(w, block)
    b = rng.standard_normal(rows).astype(np.float32) if bias else None
    return w, SparseWeight(*arrays, b, (rows, cols), block)


def _reference(x, w1, s1, w2, s2, activation="gelu", residual=None, layer_norm=None):
    h = x.astype(np.float64) @ w1.T.astype(np.float64) + (s1.bias if s1.bias is not None else 0.0)
    if activation == "gelu":
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    y = h @ w2.T.astype(np.float64) + (s2.bias if s2.bias is not None else 0.0)
    if residual is not None:
        y = y + residual
    if layer_norm is not None:
        gamma, beta, eps = layer_norm
        mu = y.mean(-1, keepdims=True)
        y = (y - mu) / np.sqrt(((y - mu) ** 2).mean(-1, keepdims=True) + eps) * gamma + beta
    return y


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m", [1, 5, 33, 130, 600])   # 600 tokens: >= 16 tiles, one task per tile
def test_ffn_matches_numpy(isa, threads, m):
    rng = np.random.default_rng(m + threads)
    w1, s1 = _weight(rng, 96, 40, 0.15)
    w2, s2 = _weight(rng, 40, 96, 0.15)
    x = rng.standard_normal((m, 40)).astype(np.float32)
    ln = (rng.standard_normal(40).astype(np.float32), rng.standard_normal(40).astype(np.float32), 1e-12)
    got = sparse_ffn(x, s1, s2, residual=x, layer_norm=ln, threads=threads, isa=isa)
    assert_close(got, _reference(x, w1, s1, w2, s2, residual=x, layer_norm=ln), rtol=2e-5)
    plain = sparse_ffn(x, s1, s2, activation="", threads=threads, isa=isa)
    assert_close(plain, _reference(x, w1, s1, w2, s2, activation=""))


@pytest.mark.parametrize("m", [3, 64, 700])
def test_ffn_equals_two_chained_linears(m):
    """The same arithmetic in the same order: equal to the unfused pair bit for bit."""
    rng = np.random.default_rng(7)
    w1, s1 = _weight(rng, 1536, 384, 0.05)
    w2, s2 = _weight(rng, 384, 1536, 0.05)
    x = rng.standard_normal((m, 384)).astype(np.float32)
    ln = (np.ones(384, np.float32), np.zeros(384, np.float32), 1e-12)
    h = sparse_linear(x, s1.crow_indices, s1.col_indices, s1.values, s1.bias, s1.shape, activation="gelu", threads=2)
    pair = sparse_linear(h, s2.crow_indices, s2.col_indices, s2.values, s2.bias, s2.shape, residual=x,
                         layer_norm=ln, threads=2)
    np.testing.assert_array_equal(sparse_ffn(x, s1, s2, residual=x, layer_norm=ln, threads=2), pair)


@pytest.mark.parametrize("isa", ISAS)
def test_ffn_blocks_edges_and_no_bias(isa):
    rng = np.random.default_rng(3)
    w1, s1 = _weight(rng, 64, 24, 0.3, block=(4, 2), bias=False)
    w1[::5] = 0.0
    s1 = SparseWeight(*bsr_arrays(w1, (4, 2)), None, (64, 24), (4, 2))
    w2, s2 = _weight(rng, 24, 64, 0.0)                  # an all-zero second weight: y = b2 + residual
    x = rng.standard_normal((37, 24)).astype(np.float32)
    residual = rng.standard_normal((37, 24)).astype(np.float32)
    assert_close(sparse_ffn(x, s1, s2, residual=residual, isa=isa, threads=2), s2.bias + residual)
    w2, s2 = _weight(rng, 10, 64, 0.5, block=(2, 4))    # out != hidden without a residual
    assert_close(sparse_ffn(x, s1, s2, isa=isa), _reference(x, w1, s1, w2, s2))
    x3 = rng.standard_normal((2, 3, 24)).astype(np.float32)
    assert sparse_ffn(x3, s1, s2, isa=isa).shape == (2, 3, 10)
    assert sparse_ffn(np.zeros((0, 24), np.float32), s1, s2).shape == (0, 10)
    _, empty1 = _weight(rng, 0, 24, 0.5)                # no hidden units at all: y = b2
    _, empty2 = _weight(rng, 10, 0, 0.5)
    for m in (3, 700):
        got = sparse_ffn(rng.standard_normal((m, 24)).astype(np.float32), empty1, empty2, isa=isa, threads=2)
        np.testing.assert_array_equal(got, np.broadcast_to(empty2.bias, (m, 10)))


def test_ffn_refuses_bad_weights_naming_them():
    rng = np.random.default_rng(4)
    _, s1 = _weight(rng, 32, 16, 0.3)
    _, s2 = _weight(rng, 16, 32, 0.3)
    x = np.zeros((4, 16), np.float32)
    with pytest.raises(KernelLibraryError, match="second weight takes 30 inputs, the first gives 32"):
        sparse_ffn(x, s1, SparseWeight(*csr_arrays(np.zeros((16, 30), np.float32)), None, (16, 30)))
    bad = SparseWeight(s2.crow_indices, np.full_like(s2.col_indices, 99), s2.values, s2.bias, s2.shape)
    with pytest.raises(KernelLibraryError, match="weight 2: col_indices out of range"):
        sparse_ffn(x, s1, bad)
    short = SparseWeight(s1.crow_indices[:-1], s1.col_indices, s1.values, s1.bias, s1.shape)
    with pytest.raises(KernelLibraryError, match="weight 1: crow_indices has"):
        sparse_ffn(x, short, s2)
    with pytest.raises(KernelLibraryError, match="x has shape"):
        sparse_ffn(np.zeros((4, 15), np.float32), s1, s2)


def ffn_model(s1: SparseWeight, s2: SparseWeight, *, residual: bool = True, layer_norm=None,
              attrs: dict | None = None, as_inputs: tuple[str, ...] = ()) -> onnx.ModelProto:
    """Y = SparseFFN(X, W1 arrays, W2 arrays[, X as residual][, gamma, beta, eps])."""
    hidden = s1.shape[1]
    tensors = {"crow1": s1.crow_indices, "col1": s1.col_indices, "values1": s1.values, "bias1": s1.bias,
               "crow2": s2.crow_indices, "col2": s2.col_indices, "values2": s2.values, "bias2": s2.bias}
    names = ["X", *(k if v is not None else "" for k, v in tensors.items()), "X" if residual else ""]
    tensors = {k: v for k, v in tensors.items() if v is not None}
    if layer_norm is not None:
        tensors.update(gamma=layer_norm[0], beta=layer_norm[1], eps=np.array([layer_norm[2]], np.float32))
        names += ["gamma", "beta", "eps"]
    inputs, inits = graph_tensors(["b", "s", hidden], tensors, as_inputs)
    while not names[-1]:
        names.pop()
    attributes = {"shape1": list(s1.shape), "block_shape1": list(s1.block_shape), "shape2": list(s2.shape),
                  "block_shape2": list(s2.block_shape), "activation": "gelu", **(attrs or {})}
    node = helper.make_node(FFN_OP, names, ["Y"], domain=SPARSE_DOMAIN, name="ffn",
                            **{k: v for k, v in attributes.items() if v is not None})
    graph = helper.make_graph([node], "ffn", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", "s", s2.shape[0]])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                             ir_version=8)


@pytest.mark.parametrize("threads", [1, 2])
def test_ffn_in_a_session(threads):
    rng = np.random.default_rng(5)
    w1, s1 = _weight(rng, 128, 48, 0.1)
    w2, s2 = _weight(rng, 48, 128, 0.1, block=(2, 2))
    ln = (rng.standard_normal(48).astype(np.float32), rng.standard_normal(48).astype(np.float32), 1e-5)
    s = session(ffn_model(s1, s2, layer_norm=ln), threads=threads)
    for shape in ((1, 7), (2, 128), (20, 33)):
        x = rng.standard_normal((*shape, 48)).astype(np.float32)
        assert_close(s.run(None, {"X": x})[0], _reference(x, w1, s1, w2, s2, residual=x, layer_norm=ln), rtol=2e-5)


def test_ffn_weights_fed_at_run_time_are_validated():
    rng = np.random.default_rng(6)
    w1, s1 = _weight(rng, 32, 16, 0.3)
    w2, s2 = _weight(rng, 16, 32, 0.3)
    s = session(ffn_model(s1, s2, residual=False, as_inputs=("col2", "bias1")))
    x = rng.standard_normal((1, 3, 16)).astype(np.float32)
    feeds = {"X": x, "col2": s2.col_indices, "bias1": s1.bias}
    assert_close(s.run(None, feeds)[0], _reference(x, w1, s1, w2, s2))
    with pytest.raises(Exception, match="ai.smp.SparseFFN node 'ffn': weight 2: col_indices out of range"):
        s.run(None, dict(feeds, col2=np.full_like(s2.col_indices, 40)))


@pytest.mark.parametrize("attrs, message", [
    (dict(shape1=None), "attribute shape1 .* is required"),
    (dict(block_shape2=[3, 3]), "shape2 / block_shape2: block_shape does not divide shape"),
    (dict(activation="tanh"), 'attribute activation must be "" or "gelu"'),
])
def test_ffn_bad_attributes_fail_at_session_creation(attrs, message):
    rng = np.random.default_rng(8)
    _, s1 = _weight(rng, 32, 16, 0.3)
    _, s2 = _weight(rng, 16, 32, 0.3)
    with pytest.raises(Exception, match=f"ai.smp.SparseFFN node 'ffn': {message}"):
        session(ffn_model(s1, s2, attrs=attrs))


def test_ffn_inner_sizes_must_agree():
    rng = np.random.default_rng(9)
    _, s1 = _weight(rng, 32, 16, 0.3)
    _, s2 = _weight(rng, 16, 30, 0.3)
    with pytest.raises(Exception, match="ai.smp.SparseFFN node 'ffn': shape2 takes 30 inputs, shape1 gives 32"):
        session(ffn_model(s1, s2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csr_like())
def test_malformed_second_weight_is_refused_or_computed(case):
    """The fuzzed CSR arrays of test_kernel_validation as the FFN's second weight: accepted
    exactly when the Python validator accepts them, directly and in a session."""
    rows, cols, crow, col, values = case
    rng = np.random.default_rng(0)
    w1, s1 = _weight(rng, cols, 4, 0.5)
    s2 = SparseWeight(crow, col, values, None, (rows, cols))
    x = rng.standard_normal((2, 1, 4)).astype(np.float32)
    if _python_accepts(rows, cols, crow, col, values):
        assert sparse_ffn(x, s1, s2).shape == (2, 1, rows)
        assert session(ffn_model(s1, s2, residual=False)).run(None, {"X": x})[0].shape == (2, 1, rows)
    else:
        with pytest.raises(KernelLibraryError, match=r"weight 2: (crow_indices|col_indices|values)"):
            sparse_ffn(x, s1, s2)
        with pytest.raises(Exception, match=r"SparseFFN node 'ffn': weight 2: (crow_indices|col_indices|values)"):
            session(ffn_model(s1, s2, residual=False))
