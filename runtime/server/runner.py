"""Run the server: in the foreground with signal handling, or in a background thread.

Connections go through ``connections.ConnectionGate`` (``--max-connections``,
``--header-timeout``). Shutdown (SIGTERM / SIGINT, or ``BackgroundServer.stop``) stops
listening, marks the model not ready, waits up to ``shutdown_timeout_s`` for in-flight
requests, runs what is still queued, then exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Callable

from aiohttp import web

from ..session import ModelSession, SessionConfig
from .app import STATE, create_app
from .config import ServeConfig
from .connections import ConnectionGate, GatedSite, handler_kwargs

log = logging.getLogger(__name__)


def load_session(config: ServeConfig) -> ModelSession:
    """The onnxruntime session for ``config.export_dir``."""
    return ModelSession.load(config.export_dir, SessionConfig(device=config.device,
                                                              intra_op_threads=config.intra_op_threads))


async def _serve(config: ServeConfig, session: ModelSession, stop: asyncio.Event,
                 on_listening: Callable[[int], None] | None = None) -> None:
    app = create_app(config, session)
    runner = web.AppRunner(app, shutdown_timeout=config.shutdown_timeout_s, **handler_kwargs(config))
    await runner.setup()
    assert runner.server is not None
    gate = ConnectionGate(runner.server, config, app[STATE].metrics)
    try:
        site = GatedSite(runner, config.host, config.port, gate)
        await site.start()
        port = runner.addresses[0][1]
        log.info("serving %s as %r on http://%s:%d", config.export_dir, config.model_name,
                 config.host, port, extra={"host": config.host, "port": port,
                                           "model": config.model_name})
        if not config.is_loopback and not config.api_key:
            log.warning("listening on %s without --api-key-file: anyone who can reach it can "
                        "use the model", config.host)
        if on_listening is not None:
            on_listening(port)
        await stop.wait()
        log.info("shutdown requested")
    finally:
        await runner.cleanup()
        gate.close()
        log.info("shutdown complete")


def serve(config: ServeConfig, session: ModelSession | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    session = session or load_session(config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await _serve(config, session, stop)

    asyncio.run(main())


class BackgroundServer:
    """The server on its own event loop in a daemon thread (tests, notebooks, embedding).

    ``with BackgroundServer(config) as server: requests.get(server.url + "/v2/health/ready")``
    """

    def __init__(self, config: ServeConfig, session: ModelSession | None = None,
                 start_timeout_s: float = 30.0):
        self.config = config
        self.session = session or load_session(config)
        self.port: int | None = None
        self._start_timeout_s = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="smp-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def start(self) -> "BackgroundServer":
        self._thread.start()
        if not self._listening.wait(self._start_timeout_s) or self._error is not None:
            raise RuntimeError(f"smp-serve did not start: {self._error!r}")
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """Graceful shutdown; returns when the server thread has ended."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await _serve(self.config, self.session, self._stop, self._listened)

        try:
            asyncio.run(main())
        except (OSError, RuntimeError) as exc:  # e.g. the port is taken: reported by start()
            self._error = exc
            self._listening.set()

    def _listened(self, port: int) -> None:
        self.port = port
        self._listening.set()
