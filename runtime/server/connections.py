"""Connection admission: a cap on open connections, a header timeout, quiet malformed requests.

smp-serve listens through ``GatedSite``, whose protocol factory is a ``ConnectionGate``:

* at most ``max_connections`` connections are served at once. One more is answered 503
  (JSON, ``Connection: close``) as soon as it sends its request, or closed after at most
  ``REFUSAL_WAIT_S``, and counted in ``smp_serve_connections_refused_total``;
* a connection must send a complete request head within ``header_timeout_s`` of opening and
  of its previous response, or it is closed: aiohttp's keep-alive timer does this (it closes a
  connection still waiting for a complete request), so idle keep-alive connections close after
  the same time and cannot hold a slot forever;
* a request aiohttp cannot parse (request line, headers, chunking) is answered 400 with the
  protocol's ``{"error": ...}`` body and logged as one WARNING line, not a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .config import ServeConfig
from .logs import escape_control
from .metrics import Metrics
from .protocol import dumps

log = logging.getLogger(__name__)

REFUSAL_WAIT_S = 1.0        # how long a refused connection may take to send its request


def handler_kwargs(config: ServeConfig) -> dict[str, Any]:
    """aiohttp request-handler settings: header timeout, no aiohttp access log (ours is richer)."""
    return {"keepalive_timeout": config.header_timeout_s, "access_log": None}


def _refusal_response(limit: int) -> bytes:
    body = json.dumps({"error": f"too many connections (limit {limit}, --max-connections); "
                                "retry later"}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class GatedHandler(web.RequestHandler):
    """aiohttp's request handler, releasing its connection slot when the connection ends."""

    def __init__(self, manager: web.Server, release: Callable[[], None], metrics: Metrics,
                 **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._release: Callable[[], None] | None = release
        self._metrics = metrics

    def connection_lost(self, exc: BaseException | None) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
        super().connection_lost(exc)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not parse: JSON 400 and one WARNING line (others: aiohttp's)."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        detail = escape_control(" ".join(str(exc.message or message or type(exc).__name__).split()))
        log.warning("malformed HTTP request from %s: %s", request.remote, detail,
                    extra={"remote": request.remote, "status": status})
        self._metrics.malformed.inc()
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent: cannot answer the error")
        response = web.json_response({"error": f"malformed HTTP request: {detail}"}, status=status,
                                     dumps=dumps)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """A body aiohttp cannot decode (already answered 400) is not worth a traceback."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, (HttpProcessingError, web.RequestPayloadError)):
            log.debug("dropped the connection after an undecodable request body: %s", exc)
            return
        super().log_exception(*args, **kwargs)


class _Refusal(asyncio.Protocol):
    """A connection past the limit: 503 once the client speaks, closed either way."""

    def __init__(self, response: bytes, wait_s: float, done: Callable[["_Refusal"], None]):
        self._response = response
        self._wait_s = wait_s
        self._done = done
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(self._wait_s, self.close)

    def data_received(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self._response)
            self.transport.close()

    def eof_received(self) -> bool:
        return False                             # close

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._done(self)


class ConnectionGate:
    """The protocol factory: aiohttp handlers up to ``max_connections``, refusals past it."""

    def __init__(self, server: web.Server, config: ServeConfig, metrics: Metrics):
        self._server = server
        self._loop = asyncio.get_running_loop()
        self.max_connections = config.max_connections
        self._kwargs = handler_kwargs(config)
        self._metrics = metrics
        self._wait_s = min(REFUSAL_WAIT_S, config.header_timeout_s)
        self._response = _refusal_response(config.max_connections)
        self._refusals: set[_Refusal] = set()
        self.open = 0

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.max_connections:
            self._metrics.connections_refused.inc()
            refusal = _Refusal(self._response, self._wait_s, self._refusals.discard)
            self._refusals.add(refusal)
            return refusal
        self.open += 1
        self._metrics.connections.set(self.open)
        return GatedHandler(self._server, self._release, self._metrics, loop=self._loop,
                            **self._kwargs)

    def _release(self) -> None:
        self.open -= 1
        self._metrics.connections.set(self.open)

    def close(self) -> None:
        """Drop the refused connections still waiting (at shutdown)."""
        for refusal in list(self._refusals):
            refusal.close()


class GatedSite(web.BaseSite):
    """A TCP site whose connections are admitted by a ``ConnectionGate``."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: ConnectionGate,
                 backlog: int = 128):
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._gate = gate

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._gate, self._host, self._port,
                                                backlog=self._backlog)
