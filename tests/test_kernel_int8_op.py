"""ai.smp.SparseLinearInt8 in an onnxruntime session: the same numbers as the ctypes entry,
weights packed once (initializers) or validated every call (graph inputs), clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from runtime.kernels_int8 import int8_linear, quantize_csr_rows
from tests.kernel_helpers import SPARSE_DOMAIN, csr_arrays, graph_tensors, random_weight, session

ORT_ERRORS = (Fail, InvalidArgument, RuntimeException)


def _arrays(rng, rows, cols, density=0.2):
    w = random_weight(rng, rows, cols, density)
    crow, col, values = csr_arrays(w, np.int64)
    q, scale = quantize_csr_rows(crow, values)
    return {"crow": crow, "col": col, "values": q, "scale": scale}


def _model(shape, arrays, *, bias=None, as_inputs=(), x_shape=None, residual=False, activation=None):
    tensors = dict(arrays)
    if bias is not None:
        tensors["bias"] = bias
    x_shape = x_shape or ["b", "s", shape[1]]
    inputs, inits = graph_tensors(x_shape, tensors, as_inputs)
    names = ["X", "crow", "col", "values", "scale", "bias" if bias is not None else ""]
    if residual:
        names.append("R")
        inputs.append(helper.make_tensor_value_info("R", TensorProto.FLOAT, x_shape[:-1] + [shape[0]]))
    attrs = {"shape": list(shape)}
    if activation is not None:
        attrs["activation"] = activation
    node = helper.make_node("SparseLinearInt8", names, ["Y"], domain=SPARSE_DOMAIN, name="q8", **attrs)
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, x_shape[:-1] + [shape[0]])
    graph = helper.make_graph([node], "one", inputs, [out], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                             ir_version=8)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("as_inputs", [(), ("crow", "col", "values", "scale", "bias")])
def test_session_equals_the_kernel_entry(threads, as_inputs):
    rng = np.random.default_rng(0)
    shape = (96, 160)
    arrays = _arrays(rng, *shape)
    bias = rng.standard_normal(shape[0]).astype(np.float32)
    x = rng.standard_normal((3, 37, shape[1])).astype(np.float32)
    sess = session(_model(shape, arrays, bias=bias, as_inputs=as_inputs), threads=threads)
    feeds = {"X": x, **{k: v for k, v in {**arrays, "bias": bias}.items() if k in as_inputs}}
    y = sess.run(None, feeds)[0]
    want = int8_linear(x, arrays["crow"], arrays["col"], arrays["values"], arrays["scale"], bias, shape)
    np.testing.assert_array_equal(y, want)


def test_gelu_residual_and_no_bias():
    rng = np.random.default_rng(1)
    shape = (40, 64)
    arrays = _arrays(rng, *shape)
    x = rng.standard_normal((2, 33, shape[1])).astype(np.float32)
    r = rng.standard_normal((2, 33, shape[0])).astype(np.float32)
    y = session(_model(shape, arrays, residual=True, activation="gelu")).run(None, {"X": x, "R": r})[0]
    want = int8_linear(x, arrays["crow"], arrays["col"], arrays["values"], arrays["scale"], None, shape,
                       activation="gelu", residual=r)
    np.testing.assert_array_equal(y, want)


def test_bad_initializer_fails_at_session_creation_naming_the_node():
    rng = np.random.default_rng(2)
    arrays = _arrays(rng, 16, 32)
    arrays["scale"] = arrays["scale"].copy()
    arrays["scale"][3] = 0.0
    with pytest.raises(ORT_ERRORS, match=r"SparseLinearInt8 node 'q8'.*scale must be finite and > 0"):
        session(_model((16, 32), arrays))


def test_bad_input_fails_on_the_call():
    rng = np.random.default_rng(3)
    arrays = _arrays(rng, 16, 32)
    sess = session(_model((16, 32), arrays, as_inputs=("values",)))
    bad = arrays["values"].copy()
    bad[0] = -128
    with pytest.raises(ORT_ERRORS, match="-128"):
        sess.run(None, {"X": np.ones((1, 2, 32), np.float32), "values": bad})


def test_declared_feature_mismatch_is_refused():
    rng = np.random.default_rng(4)
    arrays = _arrays(rng, 16, 32)
    model = _model((16, 32), arrays, x_shape=["b", "s", 48])
    with pytest.raises(ORT_ERRORS, match="48 features"):
        session(model)


def test_shape_attribute_limits():
    rng = np.random.default_rng(5)
    arrays = _arrays(rng, 16, 32)
    model = _model((16, 32), arrays)
    model.graph.node[0].attribute[0].CopyFrom(helper.make_attribute("shape", [16, 70000]))
    onnx.checker.check_model(model)
    with pytest.raises(ORT_ERRORS, match="cols in"):
        session(model)


@pytest.mark.parametrize("dtypes", [(np.int32, np.int32), (np.int32, np.int64), (np.int64, np.int32)])
def test_int32_indices_give_the_same_output(dtypes):
    rng = np.random.default_rng(5)
    shape = (24, 40)
    arrays = _arrays(rng, *shape)
    narrow = {**arrays, "crow": arrays["crow"].astype(dtypes[0]), "col": arrays["col"].astype(dtypes[1])}
    x = rng.standard_normal((2, 9, shape[1])).astype(np.float32)
    want = session(_model(shape, arrays)).run(None, {"X": x})[0]
    np.testing.assert_array_equal(session(_model(shape, narrow)).run(None, {"X": x})[0], want)


def test_float_indices_are_refused():
    rng = np.random.default_rng(6)
    arrays = _arrays(rng, 8, 16)
    arrays["col"] = arrays["col"].astype(np.float32)
    with pytest.raises(ORT_ERRORS, match=r"SparseLinearInt8 node 'q8'.*col has the wrong element type"):
        session(_model((8, 16), arrays))
