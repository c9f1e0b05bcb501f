"""Dynamic batching, the bounded queue, /v1/embed and bearer auth on real loopback servers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from runtime.server import BackgroundServer, ServeConfig
from runtime.server.batching import InferenceFailed, merge_feeds, split_outputs
from runtime.session import ModelSession
from tests.test_serve_support import get, metric_value, post, tiny_export, token_inputs


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("serve-batch") / "tiny-enc", head="none")


@pytest.fixture(scope="module")
def encoder(encoder_dir):
    return ModelSession.load(encoder_dir)


def _feeds(ids):
    arr = np.array(ids, dtype=np.int64)
    return {"input_ids": arr, "attention_mask": np.ones_like(arr), "token_type_ids": np.zeros_like(arr)}


def test_merge_and_split_round_trip():
    a, b = _feeds([[2, 5, 3]]), _feeds([[2, 5, 6, 7, 3], [2, 9, 9, 9, 3]])
    merged, seq = merge_feeds([a, b], {"input_ids": 0})
    assert seq == 5 and merged["input_ids"].shape == (3, 5)
    assert merged["input_ids"][0].tolist() == [2, 5, 3, 0, 0]
    assert merged["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    hidden = np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2)
    parts = split_outputs({"last_hidden_state": hidden, "logits": hidden[:, 0]}, [(1, 3), (2, 5)], seq)
    assert parts[0]["last_hidden_state"].shape == (1, 3, 2)
    assert parts[1]["last_hidden_state"].shape == (2, 5, 2)
    assert parts[1]["logits"].tolist() == hidden[1:, 0].tolist()
    with pytest.raises(InferenceFailed, match="no batch axis"):
        split_outputs({"x": np.zeros(2)}, [(1, 3), (2, 5)], seq)


def test_concurrent_requests_merge_into_one_run(encoder_dir, encoder):
    """Four requests of different lengths, 5 rows in all, max-batch 5: one run, each answer exact.

    The delay is long, so the run starts only when all 5 rows are there (or the test fails slowly).
    """
    config = ServeConfig(export_dir=encoder_dir, port=0, max_batch=5, max_delay_ms=20000)
    requests_ids = [[[2, 10, 3]], [[2, 10, 11, 12, 13, 3], [2, 14, 3, 0, 0, 0]], [[2, 3]], [[2, 15, 16, 3]]]
    with BackgroundServer(config, encoder) as server:
        url = server.url + "/v2/models/tiny-enc/infer"
        with ThreadPoolExecutor(len(requests_ids)) as pool:
            answers = list(pool.map(lambda ids: post(url, {"inputs": token_inputs(ids)}), requests_ids))
        metrics = get(server.url + "/metrics").text
    assert metric_value(metrics, "smp_serve_batch_size_count") == 1
    assert metric_value(metrics, "smp_serve_batch_size_sum") == 5
    assert metric_value(metrics, "smp_serve_batch_requests_sum") == 4
    for ids, answer in zip(requests_ids, answers):
        assert answer.status_code == 200, answer.text
        out = answer.json()["outputs"][0]
        expected = encoder.run(_feeds(ids))["last_hidden_state"]
        assert out["shape"] == list(expected.shape)
        np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), expected, atol=1e-5)


def test_queue_full_answers_503_and_admitted_requests_finish(encoder_dir):
    """The model is held on a gate: one request runs, one waits, the third finds the queue full."""
    gated = ModelSession.load(encoder_dir)
    gate, entered = threading.Event(), threading.Event()
    run = gated.run

    def held_run(feeds):
        entered.set()
        assert gate.wait(30), "the test never opened the gate"
        return run(feeds)

    gated.run = held_run
    config = ServeConfig(export_dir=encoder_dir, port=0, max_batch=1, max_delay_ms=0, max_queue=2,
                         retry_after_s=2)
    with BackgroundServer(config, gated) as server, ThreadPoolExecutor(2) as pool:
        url = server.url + "/v2/models/tiny-enc/infer"
        try:
            first = pool.submit(post, url, {"inputs": token_inputs([[2, 3]])})
            assert entered.wait(30)
            second = pool.submit(post, url, {"inputs": token_inputs([[2, 5, 3]])})
            inflight = lambda: metric_value(get(server.url + "/metrics").text, "smp_serve_inflight_requests")
            _wait_for(lambda: inflight() == 2)
            refused = post(url, {"inputs": token_inputs([[2, 3]])})
        finally:
            gate.set()
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
        assert "queue full" in refused.json()["error"]
        assert [first.result().status_code, second.result().status_code] == [200, 200]
        assert metric_value(get(server.url + "/metrics").text, "smp_serve_queue_rejections_total") == 1
        assert post(url, {"inputs": token_inputs([[2, 3]])}).status_code == 200


def _wait_for(condition, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_embed_endpoint(encoder_dir, encoder):
    config = ServeConfig(export_dir=encoder_dir, port=0)
    texts = ["good movie", "the film was not very good"]
    with BackgroundServer(config, encoder) as server:
        answer = post(server.url + "/v1/embed", {"texts": texts})
        raw = post(server.url + "/v1/embed", {"texts": texts, "normalize": False})
        refused = post(server.url + "/v1/classify", {"texts": texts})
        bad = post(server.url + "/v1/embed", {"texts": texts, "normalize": "yes"})
    assert answer.status_code == 200, answer.text
    vectors = np.array(answer.json()["embeddings"])
    np.testing.assert_allclose(vectors, encoder.embed(texts), atol=1e-5)
    np.testing.assert_allclose(np.array(raw.json()["embeddings"]), encoder.embed(texts, normalize=False),
                               atol=1e-5)
    assert answer.json()["dim"] == 32 and refused.status_code == 400 and "logits" in refused.json()["error"]
    assert bad.status_code == 400 and "'normalize' must be true or false" in bad.json()["error"]


def test_bearer_auth(encoder_dir, encoder):
    config = ServeConfig(export_dir=encoder_dir, port=0, api_key="s3cret")
    body = {"inputs": token_inputs([[2, 3]])}
    with BackgroundServer(config, encoder) as server:
        url = server.url + "/v2/models/tiny-enc/infer"
        assert get(server.url + "/v2/health/ready").status_code == 200       # probes stay open
        missing = post(url, body)
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert "bearer token" in missing.json()["error"]
        assert post(url, body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert post(url, body, headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert get(server.url + "/metrics").status_code == 401
        assert post(url, body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
