"""The aiohttp application: KServe v2 REST, /v1/classify and /v1/embed, /metrics.

Routes::

    GET  /v2                                   server metadata
    GET  /v2/health/live | /v2/health/ready    probes (never need the API key)
    GET  /v2/models/{name}[/versions/{v}]      model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer
    POST /v1/classify  {"texts": [...]}        labels and scores (models with logits)
    POST /v1/embed     {"texts": [...]}        mean-pooled embeddings (encoders)
    GET  /metrics                              Prometheus text format

Every error is JSON ``{"error": "..."}`` with a 4xx/5xx status; no request can stop the server.
Every response is strict JSON: a model output holding NaN or infinity is a 500 (counted in
``smp_serve_nonfinite_outputs_total``), never a body with ``NaN`` in it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, TypeVar

import numpy as np
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..contract import HIDDEN, LOGITS
from ..errors import ModelOutputError, QueueFullError, RequestError
from ..session import ModelSession
from . import model as served
from .auth import bearer_middleware
from .batching import DynamicBatcher, InferenceFailed
from .config import ServeConfig
from .logs import escape_control
from .metrics import Metrics
from .protocol import (HEADER_LENGTH, ModelSpec, dumps, encode_infer_response, loads_body,
                       model_metadata, parse_infer_request)

T = TypeVar("T")
log = logging.getLogger(__name__)
access_log = logging.getLogger("runtime.server.access")

# Below this many body bytes, parsing / tokenizing / encoding take well under a millisecond:
# done on the event loop, as a thread hop would cost more than it saves.
INLINE_BYTES = 16 * 1024


@dataclass
class ServerState:
    config: ServeConfig
    session: ModelSession
    spec: ModelSpec
    metrics: Metrics
    batcher: DynamicBatcher
    ready: bool = False


STATE = web.AppKey("smp_serve_state", ServerState)


def _state(request: web.Request) -> ServerState:
    return request.app[STATE]


def _endpoint(request: web.Request) -> str:
    resource = getattr(request.match_info.route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response, strictly encoded (NaN / infinity raise instead of writing invalid JSON)."""
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status=status, headers=headers)


def _payload_error(exc: BaseException) -> str:
    """What aiohttp could not decode in a body (bad gzip, broken chunking, short body)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    detail = getattr(cause, "message", None) or str(cause) or type(cause).__name__
    return f"the request body cannot be read: {detail}"


@web.middleware
async def observe(request: web.Request, handler: Any) -> web.StreamResponse:
    """Metrics, one access-log line per request, and every exception turned into a JSON error."""
    start = time.perf_counter()
    try:
        response = await handler(request)
    except QueueFullError as exc:
        response = _error(exc.status, str(exc), {"Retry-After": str(exc.retry_after_s)})
    except RequestError as exc:
        response = _error(exc.status, str(exc))
    except (InferenceFailed, ModelOutputError) as exc:
        response = _error(500, str(exc))
    except web.HTTPRequestEntityTooLarge:
        limit = _state(request).config.max_body_bytes
        response = _error(413, f"the request body exceeds the limit of {limit} bytes (--max-body-bytes)")
    except web.HTTPException as exc:
        response = _error(exc.status, exc.text if exc.text and exc.status >= 400 else exc.reason,
                          {k: v for k, v in exc.headers.items() if k in ("Allow", "Location")})
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        response = _error(400, _payload_error(exc))
    except ConnectionResetError:      # the client left before sending its whole body
        response = _error(499, "the client closed the connection before the request was read")
    except Exception:  # the last line of defence: a bug must cost one request, never the server
        log.exception("unhandled error on %s %s", request.method, escape_control(request.path))
        response = _error(500, "internal server error")
    seconds = time.perf_counter() - start
    endpoint = _endpoint(request)
    _state(request).metrics.observe_request(endpoint, response.status, seconds)
    access_log.info("%s %s %d %.1fms", escape_control(request.method), escape_control(request.path),
                    response.status, seconds * 1e3,
                    extra={"method": request.method, "path": request.path, "endpoint": endpoint,
                           "status": response.status, "latency_ms": round(seconds * 1e3, 3),
                           "remote": request.remote})
    return response


def _model(request: web.Request) -> ServerState:
    """The state, after checking the model name and version in the path (404 otherwise)."""
    state = _state(request)
    name, version = request.match_info["name"], request.match_info.get("version")
    if name != state.spec.name:
        raise RequestError(f"unknown model {name!r}; this server serves {state.spec.name!r}", status=404)
    if version is not None and version != state.spec.version:
        raise RequestError(f"model {name!r} has no version {version!r} (only {state.spec.version!r})",
                           status=404)
    return state


def _check_finite(request: web.Request, name: str, values: np.ndarray) -> np.ndarray:
    """``values``, or a 500 (and a metric) when the model produced NaN or infinity."""
    if values.dtype.kind not in "fc" or np.isfinite(values).all():
        return values
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    endpoint = _endpoint(request)
    _state(request).metrics.nonfinite.labels(endpoint).inc()
    log.error("the model produced %d non-finite value(s) in %r on %s", bad, name, endpoint,
              extra={"output": name, "endpoint": endpoint, "values": bad})
    raise ModelOutputError(f"the model produced {bad} non-finite value(s) (NaN or infinity) in "
                           f"{name!r}: no valid answer (the model or its export is broken)",
                           field=name)


async def server_metadata(request: web.Request) -> web.Response:
    try:
        version = metadata.version("smp-export")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return _json({"name": "smp-serve", "version": version,
                              "extensions": ["binary_tensor_data"]})


async def live(request: web.Request) -> web.Response:
    return _json({"live": True})


async def ready(request: web.Request) -> web.Response:
    is_ready = _state(request).ready
    return _json({"ready": is_ready}, status=200 if is_ready else 503)


async def model_ready(request: web.Request) -> web.Response:
    state = _model(request)
    return _json({"name": state.spec.name, "ready": state.ready},
                 status=200 if state.ready else 503)


async def model_meta(request: web.Request) -> web.Response:
    return _json(model_metadata(_model(request).spec))


async def _offload(size: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` inline for small work, on a worker thread for large (keeps the loop responsive)."""
    return fn(*args) if size < INLINE_BYTES else await asyncio.to_thread(fn, *args)


async def infer(request: web.Request) -> web.Response:
    state = _model(request)
    body = await request.read()
    parsed = await _offload(len(body), parse_infer_request, body, request.headers.get(HEADER_LENGTH),
                            state.spec)
    feeds = parsed.feeds
    if feeds is None:
        feeds = await _offload(len(body), served.encode_texts, state.session, state.spec,
                               parsed.texts, state.config.seq_overflow)
    outputs = await state.batcher.submit(feeds)
    for name in parsed.outputs:
        _check_finite(request, name, outputs[name])
    out_size = sum(outputs[name].nbytes * 3 for name in parsed.outputs)   # ~JSON size
    payload, headers = await _offload(out_size, encode_infer_response, state.spec, parsed, outputs)
    return web.Response(body=payload, headers=headers)


async def _texts(request: web.Request, state: ServerState) -> tuple[list, dict]:
    body = await request.read()
    data = loads_body(body)
    texts = served.check_texts(data, state.config.max_texts)
    feeds = await _offload(len(body), served.encode_texts, state.session, state.spec, texts,
                           state.config.seq_overflow)
    return data, feeds


async def classify(request: web.Request) -> web.Response:
    state = _state(request)
    served.require_output(state.spec, LOGITS, 2, "/v1/classify", "use /v1/embed for an encoder")
    _, feeds = await _texts(request, state)
    outputs = await state.batcher.submit(feeds)
    _check_finite(request, LOGITS, outputs[LOGITS])
    return _json({"model": state.spec.name,
                  "results": served.classify(state.session, state.spec, outputs)})


async def embed(request: web.Request) -> web.Response:
    state = _state(request)
    served.require_output(state.spec, HIDDEN, 3, "/v1/embed",
                          "use /v1/classify for a classifier")
    data, feeds = await _texts(request, state)
    normalize = data.get("normalize", True)
    if not isinstance(normalize, bool):
        raise RequestError("'normalize' must be true or false", field="normalize")
    outputs = await state.batcher.submit(feeds)
    vectors = _check_finite(request, "embeddings",
                            served.embed(outputs, feeds["attention_mask"], normalize))
    return _json({"model": state.spec.name, "dim": int(vectors.shape[1]),
                  "embeddings": vectors.tolist()})


async def metrics(request: web.Request) -> web.Response:
    m = _state(request).metrics
    return web.Response(body=m.render(), headers={"Content-Type": m.content_type})


def _routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v2", server_metadata)
    r.add_get("/v2/health/live", live)
    r.add_get("/v2/health/ready", ready)
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        r.add_get(base, model_meta)
        r.add_get(base + "/ready", model_ready)
        r.add_post(base + "/infer", infer)
    r.add_post("/v1/classify", classify)
    r.add_post("/v1/embed", embed)
    r.add_get("/metrics", metrics)


def create_app(config: ServeConfig, session: ModelSession) -> web.Application:
    """The application over a loaded session; the batcher starts and stops with it."""
    spec = served.build_spec(config, session)
    m = Metrics()
    batcher = DynamicBatcher(session.run, max_batch=config.max_batch,
                             max_delay_s=config.max_delay_ms / 1e3, max_queue=config.max_queue,
                             pad_values=served.pad_values(session), metrics=m,
                             retry_after_s=config.retry_after_s)
    middlewares = [observe] + ([bearer_middleware(config.api_key)] if config.api_key else [])
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes)
    app[STATE] = ServerState(config, session, spec, m, batcher)
    _routes(app)
    app.on_startup.append(_start)
    app.on_shutdown.append(_not_ready)
    app.on_cleanup.append(_stop)
    return app


async def _start(app: web.Application) -> None:
    await app[STATE].batcher.start()
    app[STATE].ready = True


async def _not_ready(app: web.Application) -> None:
    """Shutdown begins: probes answer 503 while in-flight requests finish."""
    app[STATE].ready = False
    app[STATE].batcher.flush()
    log.info("shutting down: finishing %d in-flight request(s)", app[STATE].batcher.inflight)


async def _stop(app: web.Application) -> None:
    await app[STATE].batcher.stop()
    log.info("batcher stopped")
