"""CORS for the browser SignalR client, which sends credentials (``withCredentials`` defaults to true).

Rules (the Fetch standard's CORS protocol with credentials): only the configured origins, echoed exactly, with
``Access-Control-Allow-Credentials: true`` and ``Vary: Origin``; never ``*`` and never ``null``.
Headers are added in ``on_response_prepare`` so that streaming responses (SSE) carry them too.
Preflights are answered by ``OPTIONS`` routes, not a middleware: with any middleware installed
aiohttp wraps every handler in one more coroutine, whose frame stays alive under every open
WebSocket for its whole life (issue 12, memory per connection).
Written by hand rather than with aiohttp-cors because that library reflects any origin when
configured with ``"*"`` and cannot attach to routes that accept every method.
"""

from __future__ import annotations

from aiohttp import hdrs, web

__all__ = ["CorsPolicy"]

_ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
# What @microsoft/signalr sends from a browser (its FetchHttpClient.ts / XhrHttpClient.ts).
_ALLOWED_HEADERS = "authorization, content-type, x-requested-with, x-signalr-user-agent"


class CorsPolicy:
    def __init__(self, origins: frozenset[str]) -> None:
        self._origins = origins

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and origin.rstrip("/").lower() in self._origins

    def install(self, app: web.Application, *, paths: tuple[str, ...]) -> None:
        """Answer preflights on ``paths`` — the hub's endpoints, the only ones a browser client calls
        with credentials from another origin (the rest need no preflight: simple GETs, same-origin
        pages). They are routed with every method too, so call this before adding those routes: the
        ``OPTIONS`` route must come first. Headers go on every response."""
        for path in paths:
            app.router.add_route(hdrs.METH_OPTIONS, path, self._answer_preflight)
        app.on_response_prepare.append(self._decorate)

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
