"""smp-serve on a real loopback port: health, tritonclient, classify, every bad input, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.server import BackgroundServer, ServeConfig
from runtime.session import ModelSession
from tests.test_serve_support import get, metric_value, post, tensor, tiny_export, token_inputs

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_SEQ = 16


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("serve") / "tiny-cls")


@pytest.fixture(scope="module")
def session(export_dir):
    return ModelSession.load(export_dir)


@pytest.fixture(scope="module")
def server(export_dir, session):
    config = ServeConfig(export_dir=export_dir, port=0, max_delay_ms=2, max_texts=8,
                         max_seq_len=MAX_SEQ, max_body_bytes=64 * 1024)
    with BackgroundServer(config, session) as running:
        yield running


@pytest.fixture()
def client(server):
    c = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=30)
    yield c
    c.close()


def _infer_url(server):
    return f"{server.url}/v2/models/tiny-cls/infer"


def test_health_and_metadata(server):
    assert get(server.url + "/v2/health/live").json() == {"live": True}
    assert get(server.url + "/v2/health/ready").json() == {"ready": True}
    assert get(server.url + "/v2/models/tiny-cls/ready").status_code == 200
    assert get(server.url + "/v2/models/tiny-cls/versions/1/ready").status_code == 200
    meta = get(server.url + "/v2/models/tiny-cls").json()
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}]
    assert "binary_tensor_data" in get(server.url + "/v2").json()["extensions"]
    missing = get(server.url + "/v2/models/nope")
    assert missing.status_code == 404 and "unknown model 'nope'" in missing.json()["error"]
    assert get(server.url + "/v2/models/tiny-cls/versions/2").status_code == 404


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infer(client, session, binary):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny-cls")
    assert client.get_model_metadata("tiny-cls")["platform"] == "onnxruntime_onnx"
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(5, 120, size=(3, 9)), "attention_mask": np.ones((3, 9), np.int64),
             "token_type_ids": np.zeros((3, 9), np.int64)}
    feeds["attention_mask"][1, 6:] = 0
    inputs = []
    for name, arr in feeds.items():
        item = httpclient.InferInput(name, list(arr.shape), "INT64")
        item.set_data_from_numpy(arr.astype(np.int64), binary_data=binary)
        inputs.append(item)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
    result = client.infer("tiny-cls", inputs, outputs=outputs, request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("logits"), session.run(feeds)["logits"], atol=1e-5)
    assert result.get_response()["id"] == "req-7"
    default = client.infer("tiny-cls", inputs)          # no outputs named: all, binary
    np.testing.assert_allclose(default.as_numpy("logits"), session.run(feeds)["logits"], atol=1e-5)


def test_tritonclient_sees_errors(client):
    item = httpclient.InferInput("input_ids", [1, 3], "FP32")
    item.set_data_from_numpy(np.ones((1, 3), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny-cls", [item])
    assert info.value.status() == "400" and "must be INT64 or INT32, got 'FP32'" in info.value.message()


def test_text_input_as_bytes(client, server):
    texts = np.array([b"good movie", b"bad film"], dtype=np.object_)
    item = httpclient.InferInput("TEXT", [2], "BYTES")
    item.set_data_from_numpy(texts)
    result = client.infer("tiny-cls", [item]).as_numpy("logits")
    classified = post(server.url + "/v1/classify", {"texts": ["good movie", "bad film"]}).json()
    labels = ["negative", "neutral", "positive"]
    assert [labels[i] for i in result.argmax(1)] == [r["label"] for r in classified["results"]]
    as_json = post(_infer_url(server), {"inputs": [tensor("TEXT", ["good movie"], "BYTES")]})
    assert as_json.status_code == 200, as_json.text
    np.testing.assert_allclose(as_json.json()["outputs"][0]["data"], result[0], atol=1e-5)


def test_classify(server, session):
    texts = ["good movie", "the film was very bad", "not great", ""]
    response = post(server.url + "/v1/classify", {"texts": texts})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["label"] for r in results] == session.predict(texts, max_length=MAX_SEQ)
    for r in results:
        assert set(r["scores"]) == {"negative", "neutral", "positive"}
        assert sum(r["scores"].values()) == pytest.approx(1.0) and r["score"] == max(r["scores"].values())
    pairs = post(server.url + "/v1/classify", {"texts": [["good", "movie"]]})
    assert pairs.status_code == 200, pairs.text
    long_text = post(server.url + "/v1/classify", {"texts": ["good " * 100]})   # truncated
    assert long_text.status_code == 200


def _good_inputs():
    return token_inputs([[2, 10, 11, 3], [2, 12, 3, 0]])


def _with(index, **changes):
    inputs = _good_inputs()
    inputs[index] = {**inputs[index], **changes}
    return {"inputs": inputs}


BAD_INFER = [
    ("not json", b"{nope", 400, "not valid JSON"),
    ("not an object", b"[1, 2]", 400, "must be a JSON object"),
    ("deep nesting", b"[" * 30000 + b"]" * 30000, 400, "not valid JSON"),
    ("no inputs", {"inputs": []}, 400, "'inputs' must be a non-empty list"),
    ("missing input", {"inputs": _good_inputs()[:2]}, 400, "missing input(s): token_type_ids"),
    ("unknown name", _with(0, name="ids"), 400, "unknown input 'ids'"),
    ("duplicate", {"inputs": _good_inputs() + _good_inputs()[:1]}, 400, "given twice"),
    ("fp32", _with(0, datatype="FP32"), 400, "must be INT64 or INT32, got 'FP32'"),
    ("bytes", _with(1, datatype="BYTES"), 400, "must be INT64 or INT32, got 'BYTES'"),
    ("rank 1", _with(0, shape=[8]), 400, "must have shape [batch, sequence], got [8]"),
    ("bad shape", _with(0, shape="2x4"), 400, "must be a list of non-negative integers"),
    ("count", _with(0, shape=[2, 3]), 400, "has 8 values; shape [2, 3] needs 6"),
    ("floats", _with(0, data=[2.5] * 8), 400, "must be integers, got floating-point numbers"),
    ("strings", _with(0, data=["a"] * 8), 400, "must be integers, got strings"),
    ("ragged", _with(0, data=[[1, 2], [3]]), 400, "not a regular array of integers"),
    ("no data", {"inputs": [{k: v for k, v in t.items() if k != "data"} for t in _good_inputs()]},
     400, "neither 'data' nor binary_data_size"),
    ("shape mismatch", {"inputs": token_inputs([[2, 3]])[:1] + _good_inputs()[1:]}, 400,
     "inputs must all have the same shape"),
    ("id too big", _with(0, data=[2, 10, 11, 3, 2, 12, 3, 120]), 400, "holds 120, outside [0, 120)"),
    ("negative id", _with(0, data=[2, 10, 11, 3, 2, 12, 3, -1]), 400, "holds -1"),
    ("mask of 2", _with(1, data=[1, 1, 1, 2, 1, 1, 1, 1]), 400, "'attention_mask' holds 2"),
    ("token type", _with(2, data=[0, 0, 0, 5, 0, 0, 0, 0]), 400, "'token_type_ids' holds 5"),
    ("empty batch", {"inputs": [tensor(n, np.zeros((0, 4), int)) for n in
                                ("input_ids", "attention_mask", "token_type_ids")]}, 400, "empty batch"),
    ("too long", {"inputs": token_inputs([[2] * (MAX_SEQ + 1)])}, 413, f"exceeds the limit of {MAX_SEQ}"),
    ("too many rows", {"inputs": token_inputs([[2, 3]] * 9)}, 413, "batch of 9 rows exceeds the limit of 8"),
    ("unknown output", {"inputs": _good_inputs(), "outputs": [{"name": "hidden"}]}, 400,
     "unknown output 'hidden'"),
    ("shared memory", _with(0, parameters={"shared_memory_region": "r"}), 400, "shared-memory"),
    ("TEXT not bytes", {"inputs": [tensor("TEXT", [1], "INT64")]}, 400, "must be BYTES"),
    ("TEXT and ids", {"inputs": _good_inputs() + [tensor("TEXT", ["x"], "BYTES")]}, 400,
     "cannot be combined"),
    ("binary too short", _with(0, parameters={"binary_data_size": 64}), 400, "runs past"),
]


@pytest.mark.parametrize("case", BAD_INFER, ids=[c[0] for c in BAD_INFER])
def test_bad_infer_requests(server, case):
    _, body, status, message = case
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = post(_infer_url(server), data=raw)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_binary_header_errors(server):
    inputs = _good_inputs()
    header = json.dumps({"inputs": [{**inputs[0], "data": None, "parameters": {"binary_data_size": 64}},
                                    *inputs[1:]]}).encode()
    ids = np.array([[2, 10, 11, 3], [2, 12, 3, 0]], dtype=np.int64).tobytes()
    ok = post(_infer_url(server), data=header + ids,
              headers={"Inference-Header-Content-Length": str(len(header))})
    assert ok.status_code == 200, ok.text
    bad = post(_infer_url(server), data=header + ids[:-8],
               headers={"Inference-Header-Content-Length": str(len(header))})
    assert bad.status_code == 400 and "runs past" in bad.json()["error"]
    wrong = post(_infer_url(server), data=header + ids, headers={"Inference-Header-Content-Length": "x"})
    assert wrong.status_code == 400 and "must be an integer" in wrong.json()["error"]


BAD_TEXTS = [
    ("no texts key", {"text": ["a"]}, 400, '{"texts": [...]}'),
    ("empty", {"texts": []}, 400, "non-empty list"),
    ("not strings", {"texts": [1, 2]}, 400, "must be a string or a [text, text_pair] pair"),
    ("mixed", {"texts": ["a", ["b", "c"]]}, 400, "mix of single texts and pairs"),
    ("too many", {"texts": ["a"] * 9}, 413, "9 texts exceed the limit of 8"),
]


@pytest.mark.parametrize("case", BAD_TEXTS, ids=[c[0] for c in BAD_TEXTS])
def test_bad_classify_requests(server, case):
    _, body, status, message = case
    response = post(server.url + "/v1/classify", body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_limits_and_wrong_routes(server):
    big = post(server.url + "/v1/classify", {"texts": ["good " * 20000]})
    assert big.status_code == 413 and "exceeds the limit of 65536 bytes" in big.json()["error"]
    embed = post(server.url + "/v1/embed", {"texts": ["good"]})
    assert embed.status_code == 400 and "last_hidden_state" in embed.json()["error"]
    assert get(server.url + "/v3/nothing").status_code == 404
    wrong_method = get(server.url + "/v1/classify")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_reject_overflowing_text(export_dir, session):
    config = ServeConfig(export_dir=export_dir, port=0, max_seq_len=8, seq_overflow="reject")
    with BackgroundServer(config, session) as running:
        ok = post(running.url + "/v1/classify", {"texts": ["good movie"]})
        assert ok.status_code == 200, ok.text
        long_text = post(running.url + "/v1/classify", {"texts": ["good", "good " * 7]})
        assert long_text.status_code == 413 and "text 1 is longer than 8 tokens" in long_text.json()["error"]


def test_metrics_and_survival(server):
    """After all the bad input above the server still answers, and /metrics counted it."""
    assert post(_infer_url(server), {"inputs": _good_inputs()}).status_code == 200
    assert post(_infer_url(server), data=b"{").status_code == 400
    text = get(server.url + "/metrics").text
    infer = '{code="200",endpoint="/v2/models/{name}/infer"}'
    assert metric_value(text, "smp_serve_requests_total" + infer) >= 1
    assert metric_value(text, 'smp_serve_errors_total{code="400",endpoint="/v2/models/{name}/infer"}') >= 1
    assert metric_value(text, "smp_serve_batch_size_count") >= 1
    assert metric_value(text, "smp_serve_queue_depth") == 0
    latency = 'smp_serve_request_latency_seconds_count{endpoint="/v2/models/{name}/infer"}'
    assert metric_value(text, latency) >= 2
    assert get(server.url + "/v2/health/ready").status_code == 200
