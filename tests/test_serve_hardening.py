"""smp-serve hardening (issue #16): hostile requests get a 4xx with the protocol's error body,
logs stay one line per record, slow and surplus connections are cut, outputs are strict JSON."""

from __future__ import annotations

import io
import json
import logging
import shutil
import socket
import time

import numpy as np
import pytest
from click.testing import CliRunner

from cli.serve import main
from runtime.errors import ServeConfigError
from runtime.server import BackgroundServer, ServeConfig
from runtime.server.logs import JsonFormatter, TextFormatter, escape_control
from runtime.server.protocol import dumps
from runtime.session import ModelSession
from tests.test_serve_support import get, metric_value, post, tensor, tiny_export, token_inputs

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

F32_MAX = float(np.finfo(np.float32).max)
INFER = "/v2/models/tiny-cls/infer"
API_KEY = "sekret"


def strict_json(text: str):
    """``json.loads`` refusing NaN / Infinity (which Python's parser otherwise accepts)."""
    def refuse(name):
        raise ValueError(f"invalid JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def raw_request(port: int, data: bytes, timeout_s: float = 10.0) -> tuple[int, dict]:
    """Send raw bytes, read until the server closes: (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), strict_json(body.decode())


def overflowing(directory, names: set[str]):
    """The export with the named initializers set to float32's largest finite value: finite
    weights, whose outputs overflow to infinity at run time."""
    model = onnx.load(directory / "model.onnx")
    for init in model.graph.initializer:
        if init.name in names:
            arr = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(np.full_like(arr, F32_MAX), init.name))
    onnx.save(model, directory / "model.onnx")
    return directory


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("serve-hard") / "tiny-cls")


@pytest.fixture(scope="module")
def session(export_dir):
    return ModelSession.load(export_dir)


@pytest.fixture(scope="module")
def server(export_dir, session):
    config = ServeConfig(export_dir=export_dir, port=0, max_delay_ms=1, max_texts=8, max_seq_len=16)
    with BackgroundServer(config, session) as running:
        yield running


def _good():
    return {"inputs": token_inputs([[2, 10, 11, 3]])}


@pytest.mark.parametrize("where", ["outputs", "inputs", "top"])
@pytest.mark.parametrize("params", [[], ["binary_data"], "binary_data", 3])
def test_parameters_must_be_objects(server, where, params):
    """Finding 1: outputs[].parameters as a list or a string was a 500 (AttributeError)."""
    body = _good()
    if where == "outputs":
        body["outputs"] = [{"name": "logits", "parameters": params}]
    elif where == "inputs":
        body["inputs"][0]["parameters"] = params
    else:
        body["parameters"] = params
    response = post(server.url + INFER, body)
    assert response.status_code == 400, response.text
    assert "'parameters' must be an object" in strict_json(response.text)["error"]


@pytest.mark.parametrize("value", [[], {}, ["INT64"]])
def test_unhashable_datatypes_are_400(server, value):
    """Found by the fuzz test: a list or object as 'datatype' was a 500 (unhashable)."""
    body = _good()
    body["inputs"][0]["datatype"] = value
    response = post(server.url + INFER, body)
    assert response.status_code == 400 and "must be INT64 or INT32" in strict_json(response.text)["error"]


SURROGATE_BODIES = [
    ("/v1/classify", b'{"texts": ["ok", "a\\ud800b"]}', "texts[1]"),
    ("/v1/classify", b'{"texts": [["ok", "\\udfff"]]}', "texts[0][1]"),
    (INFER, b'{"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}',
     "TEXT.data[0]"),
]


@pytest.mark.parametrize("path,body,field", SURROGATE_BODIES)
def test_lone_surrogates_are_400(server, path, body, field):
    """Finding 2: an unpaired surrogate reached the tokenizer and was a 500."""
    response = post(server.url + path, data=body)
    assert response.status_code == 400, response.text
    error = strict_json(response.text)["error"]
    assert field in error and "unpaired surrogate" in error
    paired = post(server.url + "/v1/classify", data=b'{"texts": ["smile \\ud83d\\ude00"]}')
    assert paired.status_code == 200, paired.text          # a surrogate *pair* is a real character


@pytest.mark.parametrize("path", ["/v1/classify", INFER])
@pytest.mark.parametrize("body", [b'{"texts": ["\xff\xfe"]}', json.dumps({"texts": ["a"]}).encode("utf-16"),
                                  json.dumps({"texts": ["a"]}).encode("utf-32")])
def test_non_utf8_bodies_are_400(server, path, body):
    response = post(server.url + path, data=body)
    assert response.status_code == 400, response.text
    assert "not UTF-8 text" in strict_json(response.text)["error"]


def test_non_ascii_authorization_is_401(export_dir, session):
    """Finding 3: a non-UTF-8 Authorization header was a 500."""
    config = ServeConfig(export_dir=export_dir, port=0, api_key=API_KEY)
    with BackgroundServer(config, session) as running:
        for value in ("Bearer s\xe9kret", "Bearer \xff\xfe", "B\xe9arer " + API_KEY):
            response = get(running.url + "/metrics", headers={"Authorization": value})   # latin-1 bytes
            assert response.status_code == 401, (value, response.text)
            assert strict_json(response.text) == {"error": "missing or invalid bearer token"}
        utf8 = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \xc3\xa9\r\n\r\n"
        assert raw_request(running.port, utf8)[0] == 401
        assert get(running.url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_access_log_escapes_control_characters(server, caplog):
    """Finding 4: %0A in the path wrote a forged line into the text access log (no key needed)."""
    caplog.set_level(logging.INFO, logger="runtime.server.access")
    get(server.url + "/x%0A2026-01-01 INFO runtime.server.access: GET /forged%0D%1B[31m%C2%85")
    records = [r for r in caplog.records if r.name == "runtime.server.access" and "forged" in r.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert not any(c in message for c in "\n\r\x1b\x85") and "\\x0a" in message and "\\x1b" in message
    text = TextFormatter().format(records[0])
    assert "\n" not in text and text.endswith(" 404 " + message.rsplit(" ", 1)[1])
    entry = strict_json(JsonFormatter().format(records[0]))
    assert entry["path"].startswith("/x\n2026") and entry["status"] == 404   # raw value, escaped by JSON


def test_log_formatters_always_write_one_valid_line():
    assert escape_control("a\nb\r\x00\x7f\x9b\u2028\ud800 ok é") == "a\\x0ab\\x0d\\x00\\x7f\\x9b\\u2028\\ud800 ok é"
    assert escape_control(escape_control("a\nb")) == "a\\x0ab"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s", ("line\nforged\ud800",), None)
    record.score = float("nan")
    record.nested = {"v": [float("inf")]}
    assert "\n" not in TextFormatter().format(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = strict_json(line)
    assert entry["msg"] == "got line\nforged\ud800" and entry["score"] == "nan" and entry["nested"] == {"v": ["inf"]}


MALFORMED = [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
             b"GET /\x01 HTTP/1.1\r\n\r\n", b"GET / HTTP/9.x\r\n\r\n",
             b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
             b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde",
             b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n"]


def _no_tracebacks(caplog):
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


@pytest.mark.parametrize("data", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_http_is_one_warning_line(server, caplog, data):
    """Finding 5: malformed request lines got their 400 but an ERROR traceback in the log."""
    caplog.set_level(logging.DEBUG)
    status, body = raw_request(server.port, data)
    assert status == 400 and body["error"].startswith("malformed HTTP request: ")
    _no_tracebacks(caplog)
    warnings = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "\n" not in warnings[0].getMessage()
    assert metric_value(get(server.url + "/metrics").text, "smp_serve_malformed_http_requests_total") >= 1


def test_undecodable_bodies_are_400_without_tracebacks(server, caplog):
    caplog.set_level(logging.DEBUG)
    for encoding in (b"gzip", b"deflate", b"br"):
        data = (b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Encoding: " + encoding +
                b"\r\nContent-Length: 5\r\n\r\nabcde")
        status, body = raw_request(server.port, data)
        assert status == 400 and "cannot be read" in body["error"]
    _no_tracebacks(caplog)


def test_header_timeout_disconnects_slow_clients(export_dir, session):
    """Finding 6: a client that never finished its request head held its connection forever."""
    config = ServeConfig(export_dir=export_dir, port=0, header_timeout_s=0.5)
    with BackgroundServer(config, session) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: app")
            start = time.monotonic()
            assert sock.recv(1024) == b""                   # closed by the server
            assert time.monotonic() - start < 5
        assert post(running.url + "/v1/classify", {"texts": ["good"]}).status_code == 200


def _keep_open(port: int) -> socket.socket:
    """A connection that answered one request and stays open (keep-alive)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return sock


def test_max_connections_refuses_the_surplus(export_dir, session):
    """Finding 6: there was no bound on open connections."""
    config = ServeConfig(export_dir=export_dir, port=0, max_connections=2)
    with BackgroundServer(config, session) as running:
        held = [_keep_open(running.port), _keep_open(running.port)]
        start = time.monotonic()
        status, body = raw_request(running.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503 and "--max-connections" in body["error"] and time.monotonic() - start < 5
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as silent:
            assert silent.recv(1024) == b""                 # refused without a word: closed soon
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 10
        while True:                                         # the slots come back once they close
            try:
                if get(running.url + "/v2/health/live").status_code == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        metrics = get(running.url + "/metrics").text
    assert metric_value(metrics, "smp_serve_connections_refused_total") >= 2
    assert 1 <= metric_value(metrics, "smp_serve_open_connections") <= 2     # this one (+ one closing)


def test_connection_options_are_checked(export_dir, keep_logging):
    with pytest.raises(ServeConfigError, match="max-connections"):
        ServeConfig(export_dir=export_dir, max_connections=0)
    for bad in (0, -1, float("nan")):
        with pytest.raises(ServeConfigError, match="header-timeout"):
            ServeConfig(export_dir=export_dir, header_timeout_s=bad)
    defaults = ServeConfig(export_dir=export_dir)
    assert (defaults.header_timeout_s, defaults.max_connections) == (10.0, 1024)
    runner = CliRunner()
    result = runner.invoke(main, [str(export_dir), "--max-connections", "0"])
    assert result.exit_code == 2 and "--max-connections" in result.output
    result = runner.invoke(main, [str(export_dir), "--header-timeout", "0"])
    assert result.exit_code == 2 and "--header-timeout" in result.output


@pytest.fixture(scope="module")
def overflow_cls(export_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("serve-inf") / "tiny-cls"
    shutil.copytree(export_dir, directory)
    # the pooler saturates (tanh -> 1), so every logit is 32 * float32-max: +inf
    return overflowing(directory, {"pooler.dense.bias", "classifier.weight_t"})


@pytest.fixture(scope="module")
def overflow_enc(tmp_path_factory):
    directory = tiny_export(tmp_path_factory.mktemp("serve-inf") / "tiny-enc", head="none")
    return overflowing(directory, {"encoder.layer.1.output.LayerNorm.weight",
                                   "encoder.layer.1.output.LayerNorm.bias"})


def _nonfinite_500(response, name: str) -> None:
    assert response.status_code == 500, response.text
    error = strict_json(response.text)["error"]
    assert "non-finite" in error and repr(name) in error


def test_nonfinite_outputs_are_500_never_invalid_json(overflow_cls, overflow_enc, caplog):
    """Finding 7: NaN / inf outputs were answered 200 with NaN in the body (invalid JSON)."""
    cls = ModelSession.load(overflow_cls)
    ids = np.array([[2, 10, 3]])
    assert not np.isfinite(cls.run({"input_ids": ids, "attention_mask": np.ones_like(ids),
                                    "token_type_ids": np.zeros_like(ids)})["logits"]).any()
    with BackgroundServer(ServeConfig(export_dir=overflow_cls, port=0), cls) as running:
        _nonfinite_500(post(running.url + "/v1/classify", {"texts": ["good movie"]}), "logits")
        _nonfinite_500(post(running.url + INFER, _good()), "logits")
        binary = {**_good(), "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
        _nonfinite_500(post(running.url + INFER, binary), "logits")
        text = post(running.url + INFER, {"inputs": [tensor("TEXT", ["good"], "BYTES")]})
        _nonfinite_500(text, "logits")
        metrics = get(running.url + "/metrics").text
    assert metric_value(metrics, 'smp_serve_nonfinite_outputs_total{endpoint="/v1/classify"}') == 1
    assert metric_value(metrics, 'smp_serve_nonfinite_outputs_total{endpoint="/v2/models/{name}/infer"}') == 3
    enc = ModelSession.load(overflow_enc)
    with BackgroundServer(ServeConfig(export_dir=overflow_enc, port=0), enc) as running:
        _nonfinite_500(post(running.url + "/v1/embed", {"texts": ["good movie"]}), "embeddings")
        _nonfinite_500(post(running.url + "/v1/embed", {"texts": ["good"], "normalize": False}),
                       "embeddings")
        _nonfinite_500(post(running.url + "/v2/models/tiny-enc/infer", _good()), "last_hidden_state")
    assert not [r for r in caplog.records if r.exc_info]            # an ERROR line each, no traceback


def test_responses_are_strict_json():
    assert dumps({"a": [1.5, "x"]}) == '{"a": [1.5, "x"]}'
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            dumps({"score": bad})


def test_json_access_log_lines_are_valid(server):
    """--log-format json: every line parses, with the hostile inputs above."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        get(server.url + "/x%0Ay%0D%00%1B%E2%80%A8%ED%A0%80")
        post(server.url + "/v1/classify", data=b'{"texts": ["\\ud800"]}')
        raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Header\r\n\r\n")
        time.sleep(0.1)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3
    entries = [strict_json(line) for line in lines]
    assert any(e.get("path", "").startswith("/x\ny") for e in entries)
    assert any("malformed HTTP request" in e["msg"] for e in entries)
