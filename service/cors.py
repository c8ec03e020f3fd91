"""CORS for the browser SignalR client, which sends credentials (``withCredentials`` defaults to true).

Rules (the Fetch standard's CORS protocol with credentials): only the configured origins, echoed exactly, with
``Access-Control-Allow-Credentials: true`` and ``Vary: Origin``; never ``*`` and never ``null``.
Headers are added in ``on_response_prepare`` so that streaming responses (SSE) carry them too.
Written by hand rather than with aiohttp-cors because that library reflects any origin when
configured with ``"*"`` and cannot attach to routes that accept every method.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

__all__ = ["CorsPolicy"]

_ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
# What @microsoft/signalr sends from a browser (its FetchHttpClient.ts / XhrHttpClient.ts).
_ALLOWED_HEADERS = "authorization, content-type, x-requested-with, x-signalr-user-agent"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CorsPolicy:
    def __init__(self, origins: frozenset[str]) -> None:
        self._origins = origins

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and origin.rstrip("/").lower() in self._origins

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self._preflight)
        app.on_response_prepare.append(self._decorate)

    @web.middleware
    def _preflight(self, request: web.Request, handler: _Handler) -> Awaitable[web.StreamResponse]:
        # Not a coroutine: for anything but a preflight it hands back the handler's own awaitable, so
        # no frame of this middleware stays alive under a long-lived request (a WebSocket).
        if request.method != hdrs.METH_OPTIONS or hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers:
            return handler(request)
        return self._answer_preflight(request)

    async def _answer_preflight(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(status=204)
        origin = request.headers.get(hdrs.ORIGIN)
        if self.allowed(origin):
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = _ALLOWED_METHODS
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = _ALLOWED_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
        return response

    async def _decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.add(hdrs.VARY, "Origin")
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and self.allowed(origin):
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
