"""ai.smp.Attention with precision="int8": against a numpy model of its arithmetic
(attention_int8.cc), close to the fp32 attention, on every instruction path, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from runtime.kernels_int8 import int8_path
from tests.kernel_helpers import SPARSE_DOMAIN, session
from tests.test_attention_kernel import _inputs, reference

ORT_ERRORS = (Fail, InvalidArgument, RuntimeException)
PATHS = ["portable", "avx2", "avx-vnni", "avx512-vnni"]
# A weight step (1/127 of the largest) can flip where exp's polynomial and numpy's exp round
# differently: the output moves by at most a few steps of V's quantization.
STEP_TOL = 0.02
# Cosine of each output row to the float attention: what 8-bit Q/K/V and 7-bit weights keep.
MIN_COSINE = 0.995


def _path(monkeypatch, path):
    if int8_path(path) != path:
        pytest.skip(f"this CPU has no {path} path (resolves to {int8_path(path)})")
    monkeypatch.setenv("SMP_SPARSE_INT8", path)


def _q8(x, axis):
    amax = np.abs(x).max(axis=axis, keepdims=True)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    return np.clip(np.rint(x * inv), -127, 127).astype(np.int64), (amax / np.float32(127)).astype(np.float32)


def int8_reference(q, k, v, mask, heads):
    """The int8 attention's arithmetic, in numpy (float32 where the kernel is float)."""
    b, s, width = q.shape
    d = width // heads
    split = [a.reshape(b, s, heads, d).transpose(0, 2, 1, 3) for a in (q, k, v)]
    (qq, qs), (kq, ks), (vq, vs) = _q8(split[0], 3), _q8(split[1], 3), _q8(split[2], 2)
    acc = (qq @ kq.transpose(0, 1, 3, 2)).astype(np.float32)
    kss = (ks * np.float32(1 / np.sqrt(np.float32(d)))).astype(np.float32).transpose(0, 1, 3, 2)
    bias = np.where(mask[:, None, None, :] != 0, 0, np.finfo(np.float32).min).astype(np.float32)
    scores = (qs * kss) * acc + bias
    e = np.exp(scores - scores.max(-1, keepdims=True))
    pq = np.rint(np.float32(127) * e).astype(np.int64)
    inv = (np.float32(1) / pq.sum(-1, keepdims=True).astype(np.float32)).astype(np.float32)
    out = (vs * inv) * (pq @ vq).astype(np.float32)
    return out.transpose(0, 2, 1, 3).reshape(b, s, width)


def _model(heads, d, *, precision="int8", packed=False):
    width = heads * d
    names = ["QKV", "", "", "M"] if packed else ["Q", "K", "V", "M"]
    node = helper.make_node("Attention", names, ["Y"], domain=SPARSE_DOMAIN, name="att", shape=[heads, d],
                            precision=precision)
    shape_in = ["b", "s", 3 * width if packed else width]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape_in) for n in names[:3] if n]
    inputs.append(helper.make_tensor_value_info("M", TensorProto.INT64, ["b", "s"]))
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", "s", width])
    graph = helper.make_graph([node], "att", inputs, [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                             ir_version=8)


def _run(heads, d, q, k, v, mask, *, threads=2, precision="int8", packed=False):
    feeds = {"QKV": np.concatenate([q, k, v], -1)} if packed else {"Q": q, "K": k, "V": v}
    sess = session(_model(heads, d, precision=precision, packed=packed), threads=threads)
    return sess.run(None, {**feeds, "M": mask})[0]


def _cosines(a, b):
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# batch >= 8: one task per batch element, its rows streamed first (attention.cc).
SHAPES = [(1, 1, 1, 32), (2, 5, 3, 32), (4, 37, 2, 32), (2, 128, 12, 32), (1, 64, 4, 64), (2, 9, 2, 8), (3, 33, 2, 96),
          (9, 21, 3, 32), (8, 7, 1, 64)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("batch, seq, heads, d", SHAPES)
def test_matches_the_numpy_model_and_stays_close_to_fp32(monkeypatch, path, batch, seq, heads, d):
    _path(monkeypatch, path)
    rng = np.random.default_rng(seq * 3 + d)
    q, k, v, mask = _inputs(rng, batch, seq, heads, d)
    got = _run(heads, d, q, k, v, mask)
    want = int8_reference(q, k, v, mask, heads)
    np.testing.assert_allclose(got, want, atol=STEP_TOL * float(np.abs(v).max()), rtol=0)
    assert np.median(np.abs(got - want)) < 1e-5 * float(np.abs(v).max()) + 1e-6   # almost every value exact
    assert _cosines(got, reference(q, k, v, mask, heads)).min() > MIN_COSINE


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [3, 10])
def test_packed_input_and_threads_give_the_same_output(monkeypatch, path, threads, batch):
    _path(monkeypatch, path)
    rng = np.random.default_rng(11)
    q, k, v, mask = _inputs(rng, batch, 45, 4, 32)
    three = _run(4, 32, q, k, v, mask, threads=threads)
    np.testing.assert_array_equal(_run(4, 32, q, k, v, mask, threads=threads, packed=True), three)
    np.testing.assert_array_equal(_run(4, 32, q, k, v, mask, threads=1), three)


def test_vector_path_differs_from_fp32_and_fp32_attribute_is_the_default():
    rng = np.random.default_rng(12)
    q, k, v, mask = _inputs(rng, 2, 20, 2, 32)
    fp32 = _run(2, 32, q, k, v, mask, precision="fp32")
    np.testing.assert_array_equal(_run(2, 32, q, k, v, mask, precision=""), fp32)
    assert not np.array_equal(_run(2, 32, q, k, v, mask), fp32)


def test_unknown_precision_is_refused():
    with pytest.raises(ORT_ERRORS, match=r"Attention node 'att'.*attribute precision must be \"fp32\" or \"int8\""):
        session(_model(2, 32, precision="int4"))


def test_zero_inputs_give_finite_output(monkeypatch):
    q = np.zeros((1, 7, 64), np.float32)
    mask = np.ones((1, 7), np.int64)
    out = _run(2, 32, q, q, q, mask)
    assert np.array_equal(out, np.zeros_like(out))


def test_head_dim_beyond_the_exact_int32_range_is_refused():
    d = (1 << 16) + 32
    q = np.ones((1, 2, d), np.float32)
    with pytest.raises(ORT_ERRORS, match=r"int8 attention takes head_dim at most 65536, got 65568"):
        _run(1, d, q, q, q, np.ones((1, 2), np.int64))
