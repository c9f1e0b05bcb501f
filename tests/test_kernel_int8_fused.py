"""The fused int8 operators: SparseLinearInt8's LayerNorm epilogue and SparseFFNInt8.

SparseFFNInt8 must be bit for bit two chained SparseLinearInt8 nodes (the hidden tile is
quantized per token where it lies instead of being written out and read back), on every
instruction path, in both of its plans (one task per tile, and the three-round plan of few
tiles), with 1 and 2 threads.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from runtime.kernels_int8 import int8_path, quantize_csr_rows
from tests.kernel_helpers import SPARSE_DOMAIN, csr_arrays, random_weight, session

ORT_ERRORS = (Fail, InvalidArgument, RuntimeException)
PATHS = ["portable", "avx2", "avx-vnni", "avx512-vnni"]
HIDDEN, INNER = 48, 136
EPS = 1e-12


def _path(monkeypatch, path: str) -> None:
    if int8_path(path) != path:
        pytest.skip(f"this CPU has no {path} path (resolves to {int8_path(path)})")
    monkeypatch.setenv("SMP_SPARSE_INT8", path)


def _weight(rng, prefix, rows, cols, density, *, bias=True, empty_rows=()):
    w = random_weight(rng, rows, cols, density)
    w[list(empty_rows)] = 0.0
    crow, col, values = csr_arrays(w, np.int64)
    q, scale = quantize_csr_rows(crow, values)
    arrays = {"crow": crow, "col": col, "values": q, "scale": scale}
    if bias:
        arrays["bias"] = rng.standard_normal(rows).astype(np.float32)
    return {f"{prefix}.{k}": v for k, v in arrays.items()}


def _names(prefix, arrays):
    keys = ["crow", "col", "values", "scale", "bias"]
    return [f"{prefix}.{k}" if f"{prefix}.{k}" in arrays else "" for k in keys]


def _model(nodes, arrays, *, residual, out_rows):
    x_shape = ["b", "s", HIDDEN]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    if residual:
        inputs.append(helper.make_tensor_value_info("R", TensorProto.FLOAT, ["b", "s", out_rows]))
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", "s", out_rows])
    inits = [numpy_helper.from_array(v, k) for k, v in arrays.items()]
    graph = helper.make_graph(nodes, "g", inputs, [out], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                             ir_version=8)


def _tail(residual, ln):
    """The optional residual / LayerNorm inputs after a weight's five."""
    tail = ["R" if residual else ""]
    tail += ["ln.gamma", "ln.beta", "ln.eps"] if ln else []
    while tail and not tail[-1]:
        tail.pop()
    return tail


def _ffn_arrays(rng, density, *, bias, ln, empty_rows=(), inner=INNER):
    arrays = {**_weight(rng, "w1", inner, HIDDEN, density, bias=bias, empty_rows=empty_rows),
              **_weight(rng, "w2", HIDDEN, inner, density, bias=bias)}
    if ln:
        arrays["ln.gamma"] = (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
        arrays["ln.beta"] = (0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
        arrays["ln.eps"] = np.array([EPS], dtype=np.float32)
    return arrays


def _chained(arrays, *, act, residual, ln, inner=INNER):
    first = helper.make_node("SparseLinearInt8", ["X", *_names("w1", arrays)], ["H"], domain=SPARSE_DOMAIN,
                             name="l1", shape=[inner, HIDDEN], activation=act)
    second = helper.make_node("SparseLinearInt8", ["H", *_names("w2", arrays), *_tail(residual, ln)], ["Y"],
                              domain=SPARSE_DOMAIN, name="l2", shape=[HIDDEN, inner])
    return _model([first, second], arrays, residual=residual, out_rows=HIDDEN)


def _fused(arrays, *, act, residual, ln, inner=INNER):
    inputs = ["X", *_names("w1", arrays), *_names("w2", arrays), *_tail(residual, ln)]
    while not inputs[-1]:
        inputs.pop()
    node = helper.make_node("SparseFFNInt8", inputs, ["Y"], domain=SPARSE_DOMAIN, name="ffn",
                            shape1=[inner, HIDDEN], shape2=[HIDDEN, inner], activation=act)
    return _model([node], arrays, residual=residual, out_rows=HIDDEN)


def _run(model, x, r, threads):
    feeds = {"X": x} if r is None else {"X": x, "R": r}
    return session(model, threads=threads).run(None, feeds)[0]


# m = 1 and 45: few tiles (three rounds, rows split); 700: one task per tile.
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m", [1, 45, 700])
@pytest.mark.parametrize("full", [True, False], ids=["bias-gelu-residual-ln", "bare"])
def test_ffn_is_bit_for_bit_two_chained_linears(monkeypatch, path, threads, m, full):
    _path(monkeypatch, path)
    rng = np.random.default_rng(m + 7 * threads)
    arrays = _ffn_arrays(rng, 0.2, bias=full, ln=full, empty_rows=(0, 5, 77))
    x = rng.standard_normal((1, m, HIDDEN)).astype(np.float32)
    r = rng.standard_normal((1, m, HIDDEN)).astype(np.float32) if full else None
    opts = {"act": "gelu" if full else "", "residual": full, "ln": full}
    want = _run(_chained(arrays, **opts), x, r, threads)
    got = _run(_fused(arrays, **opts), x, r, threads)
    np.testing.assert_array_equal(got, want)


# Inner widths that are not a multiple of 8 (the store's scalar tail rows): the hidden layer's
# GELU must be the same function in both forms, or a token's int8 scale moves.
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("inner", [1, 7, 129])
def test_ffn_odd_inner_widths_are_bit_for_bit(monkeypatch, path, inner):
    _path(monkeypatch, path)
    rng = np.random.default_rng(inner)
    arrays = _ffn_arrays(rng, 0.5, bias=True, ln=True, inner=inner)
    x = (3 * rng.standard_normal((2, 300, HIDDEN))).astype(np.float32)
    r = rng.standard_normal((2, 300, HIDDEN)).astype(np.float32)
    opts = {"act": "gelu", "residual": True, "ln": True, "inner": inner}
    np.testing.assert_array_equal(_run(_fused(arrays, **opts), x, r, 2), _run(_chained(arrays, **opts), x, r, 2))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("density", [0.0, 1.0])
def test_ffn_density_limits_and_non_finite_tokens(monkeypatch, path, density):
    _path(monkeypatch, path)
    rng = np.random.default_rng(3)
    arrays = _ffn_arrays(rng, density, bias=True, ln=False)
    x = rng.standard_normal((2, 37, HIDDEN)).astype(np.float32)
    x[1, 4, 9] = np.inf
    opts = {"act": "gelu", "residual": False, "ln": False}
    want = _run(_chained(arrays, **opts), x, None, 2)
    got = _run(_fused(arrays, **opts), x, None, 2)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[1, 4]).all()
    assert np.isfinite(np.delete(got.reshape(-1, HIDDEN), 37 + 4, axis=0)).all()


def _layer_norm(y, gamma, beta):
    y = y.astype(np.float64)
    mu = y.mean(-1, keepdims=True)
    var = ((y - mu) ** 2).mean(-1, keepdims=True)
    return (y - mu) / np.sqrt(var + EPS) * gamma + beta


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m", [3, 600])   # rows split between tasks / whole rows per task
def test_linear_layer_norm_epilogue(monkeypatch, path, m):
    _path(monkeypatch, path)
    rng = np.random.default_rng(m)
    arrays = _ffn_arrays(rng, 0.3, bias=True, ln=True)
    arrays = {k: v for k, v in arrays.items() if k.startswith(("w2.", "ln."))}
    h = rng.standard_normal((1, m, INNER)).astype(np.float32)
    r = rng.standard_normal((1, m, HIDDEN)).astype(np.float32)

    def model(ln):
        node = helper.make_node("SparseLinearInt8", ["X", *_names("w2", arrays), *_tail(True, ln)], ["Y"],
                                domain=SPARSE_DOMAIN, name="l2", shape=[HIDDEN, INNER])
        m_ = _model([node], arrays, residual=True, out_rows=HIDDEN)
        m_.graph.input[0].type.tensor_type.shape.dim[2].dim_value = INNER
        return m_

    plain = _run(model(False), h, r, 2)
    got = _run(model(True), h, r, 2)
    np.testing.assert_allclose(got, _layer_norm(plain, arrays["ln.gamma"], arrays["ln.beta"]), rtol=1e-5, atol=1e-5)


def test_ffn_shape_mismatch_is_refused():
    rng = np.random.default_rng(4)
    arrays = _ffn_arrays(rng, 0.2, bias=True, ln=False)
    model = _fused(arrays, act="", residual=False, ln=False)
    attr = next(a for a in model.graph.node[0].attribute if a.name == "shape2")
    attr.ints[:] = [HIDDEN, INNER + 4]
    with pytest.raises(ORT_ERRORS, match=r"SparseFFNInt8 node 'ffn'.*shape2 takes 140 inputs, shape1 gives 136"):
        session(model)


def test_ffn_bad_second_weight_is_named():
    rng = np.random.default_rng(5)
    arrays = _ffn_arrays(rng, 0.2, bias=True, ln=False)
    arrays["w2.scale"] = arrays["w2.scale"].copy()
    arrays["w2.scale"][2] = np.nan
    with pytest.raises(ORT_ERRORS, match=r"SparseFFNInt8 node 'ffn'.*weight 2: .*scale must be finite and > 0"):
        session(_fused(arrays, act="", residual=False, ln=False))


def test_ffn_bad_layer_norm_is_refused():
    rng = np.random.default_rng(6)
    arrays = _ffn_arrays(rng, 0.2, bias=True, ln=True)
    arrays["ln.gamma"] = arrays["ln.gamma"][:-1]
    with pytest.raises(ORT_ERRORS, match=r"SparseFFNInt8 node 'ffn'"):
        session(_fused(arrays, act="", residual=True, ln=True))
