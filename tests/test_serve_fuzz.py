"""Fuzzed request bodies (hypothesis) against live smp-serve servers: random JSON-ish structures,
near-valid KServe v2 / v1 bodies, random bytes, strings with surrogates and control characters.

Whatever comes in: never a 5xx, always a strict-JSON body (``{"error": ...}`` on a 4xx), no
traceback or ERROR in the log, and the server keeps answering. Derandomized, so CI is stable.
"""

from __future__ import annotations

import json
import logging

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.server import BackgroundServer, ServeConfig
from runtime.session import ModelSession
from tests.test_serve_support import TIMEOUT_S, WORDS, metric_value, tiny_export

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# st.characters() never draws surrogates: lone ones (and controls) are drawn as code points.
CHARS = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr), st.integers(0, 0x1F).map(chr),
                  st.sampled_from("\x7f\x85\u2028\u2029\ufeff"))
TEXT = st.one_of(st.text(CHARS, max_size=12), st.sampled_from(WORDS),
                 st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join))
KEYS = st.one_of(TEXT, st.sampled_from(["texts", "inputs", "outputs", "name", "shape", "datatype",
                                        "data", "parameters", "binary_data_size", "binary_data",
                                        "binary_data_output", "normalize", "id"]))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), TEXT)
JSONISH = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4)
                       | st.dictionaries(KEYS, kids, max_size=4), max_leaves=12)
NAMES = st.one_of(st.sampled_from(["input_ids", "attention_mask", "token_type_ids", "TEXT"]), TEXT)
OUTPUT_NAMES = st.one_of(st.sampled_from(["logits", "last_hidden_state"]), JSONISH)
HEADER_VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=6)

TENSOR = st.fixed_dictionaries(
    {"name": NAMES,
     "datatype": st.one_of(st.sampled_from(["INT64", "INT32", "BYTES", "FP32"]), JSONISH),
     "shape": st.one_of(st.lists(st.integers(-1, 20), max_size=3), JSONISH),
     "data": st.one_of(st.lists(st.one_of(st.integers(-5, 200), TEXT), max_size=24),
                       st.lists(st.lists(st.integers(0, 130), max_size=6), max_size=3), JSONISH)},
    optional={"parameters": st.one_of(JSONISH, st.fixed_dictionaries(
        {"binary_data_size": st.one_of(st.integers(-1, 80), JSONISH)}))})
OUTPUTS = st.one_of(JSONISH, st.lists(st.fixed_dictionaries(
    {"name": OUTPUT_NAMES}, optional={"parameters": st.one_of(JSONISH, st.fixed_dictionaries(
        {"binary_data": st.one_of(st.booleans(), JSONISH)}))}), max_size=3))


@st.composite
def token_tensors(draw) -> list[dict]:
    """Three consistent token-id tensors (mostly valid: exercises the model path)."""
    rows, seq = draw(st.integers(1, 4)), draw(st.integers(1, 20))
    dtype = draw(st.sampled_from(["INT64", "INT32"]))
    ids = draw(st.lists(st.integers(0, 121), min_size=rows * seq, max_size=rows * seq))
    mask = draw(st.lists(st.integers(0, 1), min_size=rows * seq, max_size=rows * seq))
    return [{"name": "input_ids", "datatype": dtype, "shape": [rows, seq], "data": ids},
            {"name": "attention_mask", "datatype": dtype, "shape": [rows, seq], "data": mask},
            {"name": "token_type_ids", "datatype": dtype, "shape": [rows, seq], "data": [0] * (rows * seq)}]


@st.composite
def text_tensor(draw) -> list[dict]:
    texts = draw(st.lists(TEXT, min_size=1, max_size=6))
    shape = draw(st.sampled_from([[len(texts)], [len(texts), 1]]))
    return [{"name": "TEXT", "datatype": "BYTES", "shape": shape, "data": texts}]


@st.composite
def mutated(draw, tensors: st.SearchStrategy[list[dict]]) -> list[dict]:
    """Near-valid inputs: one field of one tensor replaced by anything, or dropped."""
    inputs = draw(tensors)
    tensor = inputs[draw(st.integers(0, len(inputs) - 1))]
    key = draw(st.sampled_from(["name", "datatype", "shape", "data", "parameters"]))
    if draw(st.booleans()):
        tensor.pop(key, None)
    else:
        tensor[key] = draw(JSONISH)
    return inputs


def _encode(draw, value) -> bytes:
    """JSON text, mostly ASCII (surrogates as \\udXXX escapes), sometimes raw UTF-8 with
    surrogates passed through (an invalid UTF-8 body)."""
    if draw(st.integers(0, 3)):
        return json.dumps(value).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def v2_bodies(draw) -> tuple[bytes, dict[str, str]]:
    inputs = draw(st.one_of(token_tensors(), text_tensor(), mutated(token_tensors()),
                            mutated(text_tensor()), st.lists(TENSOR, min_size=1, max_size=4), JSONISH))
    header = {"inputs": inputs}
    for key, strategy in (("outputs", OUTPUTS), ("parameters", JSONISH), ("id", JSONISH)):
        if draw(st.booleans()):
            header[key] = draw(strategy)
    body, headers = _encode(draw, header), {}
    if draw(st.booleans()):                             # the binary tensor extension
        tail = draw(st.binary(max_size=64))
        length = draw(st.one_of(st.just(str(len(body))), st.integers(-2, len(body) + 80).map(str),
                                HEADER_VALUE))
        body, headers = body + tail, {"Inference-Header-Content-Length": length}
    return body, headers


@st.composite
def v1_bodies(draw) -> tuple[bytes, dict[str, str]]:
    pair = st.lists(TEXT, min_size=2, max_size=2)
    item = st.one_of(TEXT, pair, JSONISH)
    body = {"texts": draw(st.one_of(st.lists(TEXT, min_size=1, max_size=9),
                                    st.lists(pair, min_size=1, max_size=9),
                                    st.lists(item, max_size=10), JSONISH))}
    if draw(st.booleans()):
        body["normalize"] = draw(JSONISH)
    return _encode(draw, body), {}


ANY_BODY = st.one_of(st.binary(max_size=200).map(lambda b: (b, {})),
                     st.builds(lambda v: (json.dumps(v).encode(), {}), JSONISH),
                     st.text(CHARS, max_size=60).map(lambda t: (t.encode("utf-8", "surrogatepass"), {})))


class _Problems(logging.Handler):
    """Every WARNING-or-worse record with a traceback, or ERROR-or-worse at all."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


@pytest.fixture(scope="module")
def problems():
    handler = _Problems()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


def _server(directory):
    config = ServeConfig(export_dir=directory, port=0, max_delay_ms=1, max_texts=8, max_seq_len=16,
                         max_body_bytes=64 * 1024)
    return BackgroundServer(config, ModelSession.load(directory))


@pytest.fixture(scope="module")
def servers(tmp_path_factory, problems):
    root = tmp_path_factory.mktemp("serve-fuzz")
    with _server(tiny_export(root / "tiny-cls")) as cls, \
            _server(tiny_export(root / "tiny-enc", head="none")) as enc:
        yield {"cls": cls, "enc": enc}


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


def _check(http, problems, url: str, body: bytes, headers: dict[str, str]) -> None:
    problems.records.clear()
    response = http.post(url, data=body, headers=headers, timeout=TIMEOUT_S)
    assert response.status_code < 500, (body, response.text)
    payload = json.loads(response.text, parse_constant=lambda name: pytest.fail(f"{name} in body"))
    if response.status_code >= 400:
        assert isinstance(payload.get("error"), str) and payload["error"], response.text
    assert not problems.records, [r.getMessage() for r in problems.records]


@FUZZ
@given(request=v2_bodies(), model=st.sampled_from(["cls", "enc"]))
def test_fuzz_v2_infer(servers, http, problems, request, model):
    server = servers[model]
    _check(http, problems, f"{server.url}/v2/models/tiny-{model}/infer", *request)


@FUZZ
@given(request=v1_bodies(), route=st.sampled_from([("cls", "/v1/classify"), ("enc", "/v1/embed"),
                                                   ("cls", "/v1/embed"), ("enc", "/v1/classify")]))
def test_fuzz_v1_texts(servers, http, problems, request, route):
    model, path = route
    _check(http, problems, servers[model].url + path, *request)


@FUZZ
@given(request=ANY_BODY, route=st.sampled_from([("cls", "/v1/classify"), ("enc", "/v1/embed"),
                                                ("cls", "/v2/models/tiny-cls/infer"),
                                                ("enc", "/v2/models/tiny-enc/infer")]))
def test_fuzz_arbitrary_bodies(servers, http, problems, request, route):
    model, path = route
    _check(http, problems, servers[model].url + path, *request)


def test_servers_still_answer_after_fuzzing(servers, http, problems):
    for model, path in (("cls", "/v1/classify"), ("enc", "/v1/embed")):
        url = servers[model].url
        assert http.get(url + "/v2/health/ready", timeout=TIMEOUT_S).status_code == 200
        assert http.post(url + path, json={"texts": ["good movie"]}, timeout=TIMEOUT_S).status_code == 200
        metrics = http.get(url + "/metrics", timeout=TIMEOUT_S).text
        assert 'code="5' not in metrics
        assert metric_value(metrics, "smp_serve_queue_depth") == 0
    assert not problems.records
