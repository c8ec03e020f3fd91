"""Fixtures for the auth tests: a movable clock, the token factory, and a real local JWKS HTTP server.

The JWKS server is an ``aiohttp.test_utils.TestServer`` whose behaviour a test switches at run time
(serve, fail with 500, hang, send garbage), and which records every path requested, so tests can
prove that no request went anywhere but the configured URL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.tokens import TokenFactory

__all__ = ["FakeClock", "JwksEndpoint"]

JWKS_PATH = "/us-east-1_TestPool1/.well-known/jwks.json"
Mode = Literal["ok", "error", "hang", "bad_json", "no_keys", "redirect", "huge", "huge_chunked"]


class FakeClock:
    """A clock a test moves by hand: ``clock()`` reads it, ``clock.advance(s)`` moves it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class JwksEndpoint:
    """State of the local JWKS server; tests change ``mode`` and ``document`` between requests."""

    def __init__(self, server: TestServer, document: dict[str, Any]) -> None:
        self.server = server
        self.document = document
        self.mode: Mode = "ok"
        self.requests: list[str] = []
        self.release = asyncio.Event()

    @property
    def url(self) -> str:
        return str(self.server.make_url(JWKS_PATH))

    def url_for(self, path: str) -> str:
        return str(self.server.make_url(path))

    def jwks_requests(self) -> int:
        return self.requests.count(JWKS_PATH)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if request.path != JWKS_PATH:
            raise web.HTTPNotFound()
        if self.mode == "error":
            return web.Response(status=500, text="internal error")
        if self.mode == "hang":
            await self.release.wait()
        if self.mode == "bad_json":
            return web.Response(text="{not json", content_type="application/json")
        if self.mode == "no_keys":
            return web.json_response({"keys": [{"kty": "EC", "kid": "ec"}]})
        if self.mode == "redirect":
            raise web.HTTPFound(self.url_for("/elsewhere/jwks.json"))
        if self.mode == "huge":
            return web.Response(body=b" " * (512 * 1024) + json.dumps(self.document).encode())
        if self.mode == "huge_chunked":
            # No Content-Length: the client must stop reading by itself.
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(64):
                await response.write(b" " * 16 * 1024)
            await response.write(json.dumps(self.document).encode())
            await response.write_eof()
            return response
        return web.json_response(self.document)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timed_factory(tmp_path: Any, clock: FakeClock) -> TokenFactory:
    """A token factory whose tokens are minted at ``clock``'s time (for exp/nbf/iat edges)."""
    return TokenFactory(tmp_path / "timed", clock=clock)


@pytest.fixture
async def jwks_server(token_factory: TokenFactory) -> AsyncIterator[JwksEndpoint]:
    """A real HTTP JWKS endpoint publishing ``token_factory``'s key."""
    app = web.Application()
    server = TestServer(app)
    endpoint = JwksEndpoint(server, token_factory.dev.jwks())
    app.router.add_route("GET", "/{tail:.*}", endpoint.handle)
    await server.start_server()
    try:
        yield endpoint
    finally:
        endpoint.release.set()  # let a hanging handler finish so the server can stop at once
        await server.close()
