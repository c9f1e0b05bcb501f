"""The ai.smp.Attention kernel: against numpy (float64) over shapes, masks, ISAs and thread
counts; then as an onnxruntime operator, including the errors it must give."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from runtime.kernels import SPARSE_DOMAIN, KernelLibraryError, attention, custom_op_library_path, resolved_isa
from tests.kernel_helpers import assert_close

ATTENTION_RTOL = 1e-5   # relative to the output's scale, like the SparseLinear tests


def reference(q, k, v, mask, heads):
    """Hugging Face BERT's eager attention core in float64."""
    b, s, width = q.shape
    d = width // heads
    split = [a.astype(np.float64).reshape(b, s, heads, d).transpose(0, 2, 1, 3) for a in (q, k, v)]
    scores = split[0] @ split[1].transpose(0, 1, 3, 2) / np.sqrt(d)
    if mask is not None:
        scores = scores + (1 - mask[:, None, None, :].astype(np.float64)) * np.finfo(np.float32).min
    scores -= scores.max(-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(-1, keepdims=True)
    return (p @ split[2]).transpose(0, 2, 1, 3).reshape(b, s, width)


def _inputs(rng, batch, seq, heads, d, mask_dtype=np.int64):
    q, k, v = (rng.standard_normal((batch, seq, heads * d)).astype(np.float32) for _ in range(3))
    mask = np.ones((batch, seq), dtype=mask_dtype)
    mask[0, seq // 2 + 1:] = 0                      # right padding
    if batch > 2:
        mask[2, :] = 0                              # nothing to attend to: uniform, as in BERT
    if batch > 3:
        mask[3, ::2] = 0                            # holes anywhere
    return q, k, v, mask


@pytest.mark.parametrize("batch, seq, heads, d", [(1, 1, 1, 8), (2, 5, 3, 8), (3, 37, 2, 16), (4, 128, 12, 32),
                                                  (1, 64, 12, 64), (2, 9, 2, 12), (2, 40, 4, 72), (1, 33, 1, 24),
                                                  (9, 19, 2, 32), (8, 6, 3, 16)])   # >= 8: a task per element
@pytest.mark.parametrize("isa", ["auto", "portable"])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_numpy(batch, seq, heads, d, isa, threads):
    rng = np.random.default_rng(seq * 7 + d)
    q, k, v, mask = _inputs(rng, batch, seq, heads, d)
    assert_close(attention(q, k, v, mask, heads, threads=threads, isa=isa), reference(q, k, v, mask, heads),
                 ATTENTION_RTOL)


@pytest.mark.parametrize("mask_dtype", [np.int32, np.int64, None])
def test_mask_dtypes_and_no_mask(mask_dtype):
    rng = np.random.default_rng(3)
    q, k, v, mask = _inputs(rng, 4, 19, 2, 16, mask_dtype or np.int64)
    mask = None if mask_dtype is None else mask
    assert_close(attention(q, k, v, mask, 2), reference(q, k, v, mask, 2), ATTENTION_RTOL)


def test_vector_path_is_used_where_the_cpu_has_it():
    """Both paths agree; on an AVX2 machine 'auto' is the vector path, not the fallback."""
    rng = np.random.default_rng(4)
    q, k, v, mask = _inputs(rng, 2, 50, 4, 32)
    auto, portable = (attention(q, k, v, mask, 4, isa=isa) for isa in ("auto", "portable"))
    assert_close(auto, portable, ATTENTION_RTOL)
    if resolved_isa() in ("avx2", "avx512"):
        assert not np.array_equal(auto, portable)   # different summation order: a different path ran


def test_bad_shapes_are_refused():
    q = np.zeros((2, 4, 8), np.float32)
    with pytest.raises(KernelLibraryError, match="not \\[batch, seq, 3 \\* d\\]"):
        attention(q, q, q, None, 3)
    with pytest.raises(KernelLibraryError, match="k and v"):
        attention(q, q[:, :3], q, None, 2)
    with pytest.raises(KernelLibraryError, match="mask"):
        attention(q, q, q, np.ones((2, 5), np.int64), 2)
    with pytest.raises(KernelLibraryError, match="mask"):
        attention(q, q, q, np.ones((2, 4), np.float32), 2)


def _model(heads: int, head_dim: int, *, attrs: dict | None = None, with_mask: bool = True,
           width: int | str | None = None):
    names = ["Q", "K", "V"] + (["M"] if with_mask else [])
    width = width or heads * head_dim
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "s", width]) for n in names[:3]]
    if with_mask:
        inputs.append(helper.make_tensor_value_info("M", TensorProto.INT64, ["b", "s"]))
    node = helper.make_node("Attention", names, ["Y"], domain=SPARSE_DOMAIN, name="att",
                            **(attrs if attrs is not None else {"shape": [heads, head_dim]}))
    graph = helper.make_graph([node], "att", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT,
                                                                                     ["b", "s", width])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                             ir_version=8)


def _session(model, threads: int = 2):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.register_custom_ops_library(str(custom_op_library_path()))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("with_mask", [True, False])
def test_operator_in_a_session(threads, with_mask):
    rng = np.random.default_rng(5)
    q, k, v, mask = _inputs(rng, 4, 23, 4, 16)
    feeds = {"Q": q, "K": k, "V": v} | ({"M": mask} if with_mask else {})
    got = _session(_model(4, 16, with_mask=with_mask), threads).run(None, feeds)[0]
    assert_close(got, reference(q, k, v, mask if with_mask else None, 4), ATTENTION_RTOL)


@pytest.mark.parametrize("attrs, message", [({}, "attribute shape"), ({"shape": [4]}, "attribute shape"),
                                            ({"shape": [0, 16]}, "attribute shape")])
def test_bad_attributes_fail_at_load_naming_the_node(attrs, message):
    with pytest.raises(Exception, match=f"ai.smp.Attention node 'att'.*{message}"):
        _session(_model(4, 16, attrs=attrs))


def test_inputs_that_disagree_fail_at_run_naming_the_node():
    session = _session(_model(4, 16))
    q = np.zeros((2, 3, 64), np.float32)
    mask = np.ones((2, 3), np.int64)
    with pytest.raises(Exception, match="ai.smp.Attention node 'att'.*key and value"):
        session.run(None, {"Q": q, "K": q[:, :2], "V": q, "M": mask})
    with pytest.raises(Exception, match="mask must be"):
        session.run(None, {"Q": q, "K": q, "V": q, "M": np.ones((2, 4), np.int64)})
    with pytest.raises(Exception, match="num_heads \\* head_dim"):
        _session(_model(4, 16, width="w")).run(None, {"Q": q[..., :48], "K": q[..., :48], "V": q[..., :48],
                                                      "M": mask})


@pytest.mark.parametrize("batch, seq, heads, d", [(1, 1, 1, 8), (3, 37, 2, 16), (2, 128, 12, 32), (2, 9, 2, 12),
                                                  (9, 40, 4, 32)])
@pytest.mark.parametrize("isa", ["auto", "portable"])
def test_packed_qkv_equals_three_inputs(batch, seq, heads, d, isa):
    """One [batch, seq, 3 * width] tensor (q | k | v per row, as one stacked projection writes
    it): the same result, bit for bit, as the three separate inputs."""
    rng = np.random.default_rng(seq + d)
    q, k, v, mask = _inputs(rng, batch, seq, heads, d)
    qkv = np.concatenate([q, k, v], axis=-1)
    got = attention(qkv, None, None, mask, heads, threads=2, isa=isa)
    np.testing.assert_array_equal(got, attention(q, k, v, mask, heads, threads=2, isa=isa))
    assert_close(got, reference(q, k, v, mask, heads), ATTENTION_RTOL)
    with pytest.raises(KernelLibraryError, match="k and v go together"):
        attention(qkv, k, None, mask, heads)
    with pytest.raises(KernelLibraryError, match="not \\[batch, seq, 3 \\* "):
        attention(qkv[..., 1:], None, None, mask, heads)


def _packed_model(heads: int, head_dim: int):
    width = heads * head_dim
    node = helper.make_node("Attention", ["QKV", "", "", "M"], ["Y"], domain=SPARSE_DOMAIN, name="att",
                            shape=[heads, head_dim])
    graph = helper.make_graph([node], "att", [helper.make_tensor_value_info("QKV", TensorProto.FLOAT, ["b", "s", "w"]),
                                              helper.make_tensor_value_info("M", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", "s", width])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                             ir_version=8)


def test_packed_operator_in_a_session():
    rng = np.random.default_rng(6)
    q, k, v, mask = _inputs(rng, 4, 23, 4, 16)
    session = _session(_packed_model(4, 16))
    got = session.run(None, {"QKV": np.concatenate([q, k, v], axis=-1), "M": mask})[0]
    assert got.shape == (4, 23, 64)
    assert_close(got, reference(q, k, v, mask, 4), ATTENTION_RTOL)
    with pytest.raises(Exception, match="ai.smp.Attention node 'att'.*last dimension 64 != 3 \\* num_heads"):
        session.run(None, {"QKV": q, "M": mask})


def test_key_without_value_fails_at_run_naming_the_node():
    rng = np.random.default_rng(7)
    q, k, _, mask = _inputs(rng, 2, 5, 4, 16)
    node = helper.make_node("Attention", ["Q", "K", "", "M"], ["Y"], domain=SPARSE_DOMAIN, name="att", shape=[4, 16])
    graph = helper.make_graph([node], "att", [helper.make_tensor_value_info("Q", TensorProto.FLOAT, ["b", "s", 64]),
                                              helper.make_tensor_value_info("K", TensorProto.FLOAT, ["b", "s", 64]),
                                              helper.make_tensor_value_info("M", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", "s", 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPARSE_DOMAIN, 1)],
                              ir_version=8)
    with pytest.raises(Exception, match="ai.smp.Attention node 'att': query, key and value are required"):
        _session(model).run(None, {"Q": q, "K": k, "M": mask})
