"""Hostile models against the native library: shape claims the arrays cannot back, shapes the
graph cannot feed, and non-finite weights are refused when the session is created, in bounded
memory; every kernel path agrees, non-finite activations included."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.kernels import KernelLibraryError, attention, sparse_linear
from tests.kernel_helpers import SPARSE_DOMAIN, assert_close, csr_arrays, random_weight, session, sparse_linear_model

HUGE = (65_536, 8_388_608)   # a claim whose crow_indices (65,537 int32, 256 KiB) are consistent


def _huge_claim_model(x_features) -> bytes:
    crow = np.zeros(HUGE[0] + 1, np.int32)
    arrays = {"crow": crow, "col": np.zeros(0, np.int32), "values": np.zeros(0, np.float32)}
    return sparse_linear_model(HUGE, arrays, x_shape=["m", x_features]).SerializeToString()


_PROBE = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    import onnxruntime as ort
    from runtime.kernels import custom_op_library_path
    model = open(sys.argv[1], "rb").read()
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.register_custom_ops_library(str(custom_op_library_path()))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    error = ""
    try:
        s = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        created = time.perf_counter() - start
        s.run(None, {"X": np.zeros((2, 384), np.float32)})
    except Exception as e:
        error = str(e)
    print(json.dumps({"seconds": time.perf_counter() - start, "error": error,
                      "rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
""")


def _probe(tmp_path, model: bytes) -> dict:
    path = tmp_path / "hostile.onnx"
    path.write_bytes(model)
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_huge_shape_claim_is_refused_at_load_in_bounded_memory(tmp_path):
    """The graph feeds 384 features: the 8,388,608-input claim fails at creation, before packing."""
    result = _probe(tmp_path, _huge_claim_model(384))
    assert "node 'lin'" in result["error"]
    assert "the graph feeds input X with 384 features, the weight's shape claims 8388608 inputs" in result["error"]
    assert result["seconds"] < 1.0, result
    assert result["rss_mb"] < 100, result


def test_huge_shape_claim_with_symbolic_features_packs_in_bounded_memory(tmp_path):
    """Where the graph states no feature count, packing stays bounded by the arrays' real size
    (the chunks widen) and the first run names the mismatch."""
    result = _probe(tmp_path, _huge_claim_model("k"))
    assert "X has 384 features, the weight expects 8388608" in result["error"]
    assert result["rss_mb"] < 100, result


def test_declared_output_features_must_match_the_claim():
    w = random_weight(np.random.default_rng(0), 8, 6, 0.5)
    model = sparse_linear_model((8, 6), dict(zip(("crow", "col", "values"), csr_arrays(w))))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 9
    with pytest.raises(Exception, match="declares output Y with 9 features, the weight's shape claims 8 outputs"):
        session(model)


def test_wide_chunking_is_bounded_and_gives_the_same_result():
    """A tiny chunk width on a wide matrix would need ~1.2M row-pointer entries for ~11k stored
    indices: the chunks widen, and the result is the same."""
    rng = np.random.default_rng(1)
    w = random_weight(rng, 300, 4000, 0.005)
    crow, col, values = csr_arrays(w)
    x = rng.standard_normal((5, 4000)).astype(np.float32)
    want = x @ w.T
    for chunk in (0, 8, 1):
        assert_close(sparse_linear(x, crow, col, values, None, w.shape, chunk_cols=chunk), want)


@pytest.mark.parametrize("where, bad", [("values", np.nan), ("values", np.inf), ("bias", -np.inf)])
def test_non_finite_weights_fail_session_creation(where, bad):
    rng = np.random.default_rng(2)
    w = random_weight(rng, 8, 6, 0.5)
    crow, col, values = csr_arrays(w)
    bias = rng.standard_normal(8).astype(np.float32)
    (values if where == "values" else bias)[3] = bad
    kind = "nan" if np.isnan(bad) else ("inf" if bad > 0 else "-inf")
    model = sparse_linear_model((8, 6), {"crow": crow, "col": col, "values": values}, bias=bias)
    with pytest.raises(Exception, match=rf"node 'lin': {where} holds a non-finite value \({kind}\) at entry 3"):
        session(model)
    with pytest.raises(KernelLibraryError, match=rf"{where} holds a non-finite value"):
        sparse_linear(np.ones((2, 6), np.float32), crow, col, values, bias, (8, 6))


def _layer_norm_model(gamma: np.ndarray) -> onnx.ModelProto:
    w = random_weight(np.random.default_rng(3), 8, 6, 0.5)
    model = sparse_linear_model((8, 6), dict(zip(("crow", "col", "values"), csr_arrays(w))))
    node = model.graph.node[0]
    node.input.extend(["", "", "ln_gamma", "ln_beta", "ln_eps"])   # no bias, no residual
    model.graph.initializer.extend([numpy_helper.from_array(gamma, "ln_gamma"),
                                    numpy_helper.from_array(np.zeros(8, np.float32), "ln_beta"),
                                    numpy_helper.from_array(np.array([1e-12], np.float32), "ln_eps")])
    return model


def test_non_finite_layer_norm_parameters_fail_session_creation():
    session(_layer_norm_model(np.ones(8, np.float32)))   # the same model with finite gamma loads
    gamma = np.ones(8, np.float32)
    gamma[5] = np.inf
    with pytest.raises(Exception, match=r"node 'lin': ln_gamma holds a non-finite value \(inf\) at entry 5"):
        session(_layer_norm_model(gamma))
    w = random_weight(np.random.default_rng(3), 8, 6, 0.5)
    with pytest.raises(KernelLibraryError, match=r"ln_gamma holds a non-finite value"):
        sparse_linear(np.ones((2, 6), np.float32), *csr_arrays(w), None, (8, 6),
                      layer_norm=(gamma, np.zeros(8, np.float32), 1e-12))


def test_ffn_claims_are_checked_against_the_graph_before_packing():
    rng = np.random.default_rng(4)
    w1, w2 = random_weight(rng, 16, 6, 0.5), random_weight(rng, 6, 16, 0.5)
    inits = []
    for tag, w in (("1", w1), ("2", w2)):
        for name, arr in zip(("crow", "col", "values"), csr_arrays(w)):
            inits.append(numpy_helper.from_array(arr, name + tag))
    names = ["X", "crow1", "col1", "values1", "", "crow2", "col2", "values2"]
    node = helper.make_node("SparseFFN", names, ["Y"], domain=SPARSE_DOMAIN, name="ffn", shape1=[16, 7],
                            block_shape1=[1, 1], shape2=[6, 16], block_shape2=[1, 1], activation="gelu")
    graph = helper.make_graph([node], "ffn", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["m", 6])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["m", 6])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(SPARSE_DOMAIN, 1)], ir_version=8)
    with pytest.raises(Exception, match="node 'ffn': the graph feeds input X with 6 features, .* claims 7 inputs"):
        session(model)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_attention_paths_agree_on_non_finite_activations(bad):
    """The AVX2 exp used to clamp NaN to a finite value: a NaN score gave finite outputs there
    and NaN on the portable path. Both now propagate it to the same outputs."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 6, 32)).astype(np.float32) for _ in range(3))
    q[1, 2, 5] = bad
    auto, portable = (attention(q, k, v, None, 4, isa=isa) for isa in ("auto", "portable"))
    np.testing.assert_array_equal(np.isfinite(auto), np.isfinite(portable))
    assert not np.isfinite(auto[1, 2]).all()
    assert np.isfinite(auto[0]).all()
    finite = np.isfinite(auto)
    assert_close(auto[finite], portable[finite])


def test_attention_claim_is_checked_against_the_declared_output():
    names = ["Q", "K", "V"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "s", "w"]) for n in names]
    node = helper.make_node("Attention", names, ["Y"], domain=SPARSE_DOMAIN, name="att", shape=[4, 16])
    graph = helper.make_graph([node], "att", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT,
                                                                                     ["b", "s", 48])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(SPARSE_DOMAIN, 1)], ir_version=8)
    with pytest.raises(Exception, match="node 'att': the graph declares output Y with 48 features, "
                                        "attribute shape gives 4 x 16"):
        session(model)
