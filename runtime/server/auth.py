"""Optional bearer-token auth: ``Authorization: Bearer <key>`` on every route but the probes."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from .protocol import dumps

# Liveness/readiness probes stay open, as orchestrators call them without credentials.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_matches(header: str | None, api_key: str) -> bool:
    """Constant-time check of an Authorization header against the key.

    Any header is compared, never raises: non-ASCII or non-UTF-8 bytes (which aiohttp hands
    over as lone surrogates) are encoded with ``surrogatepass``.
    """
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode("utf-8", "surrogatepass"),
                               api_key.encode("utf-8", "surrogatepass"))


def bearer_middleware(api_key: str) -> Callable:
    """An aiohttp middleware answering 401 (JSON, with WWW-Authenticate) without the right token."""

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or token_matches(request.headers.get("Authorization"), api_key):
            return await handler(request)
        return web.json_response({"error": "missing or invalid bearer token"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="smp-serve"'},
                                 dumps=dumps)

    return check_token
