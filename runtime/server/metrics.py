"""Prometheus metrics of one server, on a registry of its own (several servers per process work)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Request, error, batch, queue, latency and connection metrics, prefixed ``smp_serve_``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("smp_serve_requests", "HTTP requests answered",
                                ["endpoint", "code"], registry=r)
        self.errors = Counter("smp_serve_errors", "HTTP requests answered with a 4xx or 5xx",
                              ["endpoint", "code"], registry=r)
        self.latency = Histogram("smp_serve_request_latency_seconds", "Request latency",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("smp_serve_batch_size", "Rows per onnxruntime run",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("smp_serve_batch_requests", "Requests merged per run",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("smp_serve_inference_seconds", "onnxruntime run time per batch",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("smp_serve_queue_depth", "Requests waiting for a batch", registry=r)
        self.inflight = Gauge("smp_serve_inflight_requests",
                              "Requests admitted to the batcher (waiting or running)", registry=r)
        self.rejected = Counter("smp_serve_queue_rejections", "Requests refused with 503: queue full",
                                registry=r)
        self.nonfinite = Counter("smp_serve_nonfinite_outputs",
                                 "Requests answered 500: the model produced NaN or infinity",
                                 ["endpoint"], registry=r)
        self.connections = Gauge("smp_serve_open_connections", "HTTP connections open", registry=r)
        self.connections_refused = Counter("smp_serve_connections_refused",
                                           "Connections refused: --max-connections reached",
                                           registry=r)
        self.malformed = Counter("smp_serve_malformed_http_requests",
                                 "Requests aiohttp could not parse (answered 400)", registry=r)

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(code)).inc()
        if code >= 400:
            self.errors.labels(endpoint, str(code)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
