"""ai.smp.SparseLinear inside onnxruntime sessions: formats, threads, inputs, clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from runtime.errors import CustomOpError
from runtime.manifest import Manifest, ValidationRecord
from runtime.session import ModelSession
from tests.kernel_helpers import (assert_close, bsr_arrays, csr_arrays, random_weight, reference, session,
                                  sparse_linear_model)


def _csr(w, index_dtype=np.int32):
    crow, col, values = csr_arrays(w, index_dtype)
    return {"crow": crow, "col": col, "values": values}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_csr_in_a_session(threads, index_dtype):
    rng = np.random.default_rng(0)
    w = random_weight(rng, 96, 80, 0.1)
    b = rng.standard_normal(96).astype(np.float32)
    s = session(sparse_linear_model((96, 80), _csr(w, index_dtype), bias=b), threads=threads)
    for m in (1, 31, 32, 100):
        x = rng.standard_normal((m, 80)).astype(np.float32)
        assert_close(s.run(None, {"X": x})[0], reference(x, w, b))


@pytest.mark.parametrize("block", [(1, 4), (2, 2), (4, 1)])
def test_bsr_in_a_session(block):
    rng = np.random.default_rng(1)
    w = random_weight(rng, 64, 48, 0.25, block)
    crow, col, values = bsr_arrays(w, block)
    model = sparse_linear_model((64, 48), {"crow": crow, "col": col, "values": values}, block=block,
                                x_shape=["b", "s", 48])
    s = session(model, threads=2)
    x = rng.standard_normal((3, 5, 48)).astype(np.float32)
    y = s.run(None, {"X": x})[0]
    assert y.shape == (3, 5, 64)
    assert_close(y, reference(x, w, None))


def test_weights_fed_at_run_time_are_validated_every_call():
    rng = np.random.default_rng(2)
    w = random_weight(rng, 16, 24, 0.3)
    arrays = _csr(w)
    b = rng.standard_normal(16).astype(np.float32)
    model = sparse_linear_model((16, 24), arrays, bias=b, as_inputs=("crow", "col", "values", "bias"))
    s = session(model)
    x = rng.standard_normal((9, 24)).astype(np.float32)
    feeds = {"X": x, **arrays, "bias": b}
    assert_close(s.run(None, feeds)[0], reference(x, w, b))
    bad = dict(feeds, col=np.full_like(arrays["col"], 99))
    with pytest.raises(Exception, match="col_indices out of range"):
        s.run(None, bad)


def test_constant_weights_with_a_bias_fed_at_run_time():
    rng = np.random.default_rng(3)
    w = random_weight(rng, 16, 24, 0.3)
    b = rng.standard_normal(16).astype(np.float32)
    s = session(sparse_linear_model((16, 24), _csr(w), bias=b, as_inputs=("bias",)))
    x = rng.standard_normal((4, 24)).astype(np.float32)
    assert_close(s.run(None, {"X": x, "bias": b})[0], reference(x, w, b))


def test_gelu_and_residual_in_a_session():
    from scipy.special import erf

    rng = np.random.default_rng(7)
    w = random_weight(rng, 32, 24, 0.3)
    b = rng.standard_normal(32).astype(np.float32)
    model = sparse_linear_model((32, 24), _csr(w), bias=b, attrs={"activation": "gelu"})
    x = rng.standard_normal((2, 24)).astype(np.float32)
    linear = reference(x, w, b)
    assert_close(session(model).run(None, {"X": x})[0], 0.5 * linear * (1 + erf(linear / np.sqrt(2))))
    node = model.graph.node[0]
    node.input.append("R")     # a residual input, fed at run time
    model.graph.input.append(onnx.helper.make_tensor_value_info("R", onnx.TensorProto.FLOAT, ["m", 32]))
    r = rng.standard_normal((2, 32)).astype(np.float32)
    assert_close(session(model, threads=2).run(None, {"X": x, "R": r})[0],
                 0.5 * linear * (1 + erf(linear / np.sqrt(2))) + r)
    with pytest.raises(Exception, match="residual must be float32 shaped like Y"):
        session(model).run(None, {"X": x, "R": r[:1]})


def test_wrong_feature_count_is_a_clear_error():
    w = random_weight(np.random.default_rng(4), 8, 8, 0.5)
    s = session(sparse_linear_model((8, 8), _csr(w), x_shape=["m", "k"]))
    with pytest.raises(Exception, match="node 'lin'.*X has 5 features, the weight expects 8"):
        s.run(None, {"X": np.zeros((2, 5), np.float32)})


def test_model_loaded_without_the_library_names_the_domain(tmp_path):
    w = random_weight(np.random.default_rng(5), 8, 8, 0.5)
    model = sparse_linear_model((8, 8), _csr(w))
    with pytest.raises(Exception, match="ai.smp"):
        session(model, library=False)
    # Through ModelSession: without a manifest the error names the domain ...
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(CustomOpError, match="custom operator domain.*ai.smp"):
        ModelSession.load(tmp_path / "m")
    # ... and with one that lists ai.smp, the project's library is registered by itself.
    manifest = Manifest(source_format="test", source_path="x", method="m", weights="sparse-kernel", head={},
                        input_names=["X"], output_names=["Y"], layers=[], totals={}, files={},
                        validation=ValidationRecord(passed=True), versions={}, custom_op_domains=["ai.smp"])
    manifest.write(tmp_path / "m")
    loaded = ModelSession.load(tmp_path / "m")
    assert loaded.run({"X": np.eye(8, dtype=np.float32)})["Y"].shape == (8, 8)


def test_library_does_not_link_onnxruntime():
    import subprocess

    from runtime.kernels import custom_op_library_path

    deps = subprocess.run(["ldd", str(custom_op_library_path())], capture_output=True, text=True).stdout
    assert "onnxruntime" not in deps


def test_session_runs_with_the_default_thread_pool():
    rng = np.random.default_rng(6)
    w = random_weight(rng, 256, 128, 0.1)
    options = ort.SessionOptions()
    from runtime.kernels import custom_op_library_path

    options.register_custom_ops_library(str(custom_op_library_path()))
    s = ort.InferenceSession(sparse_linear_model((256, 128), _csr(w)).SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
    x = rng.standard_normal((200, 128)).astype(np.float32)
    assert_close(s.run(None, {"X": x})[0], reference(x, w, None))
