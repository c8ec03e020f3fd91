"""The endpoint's refusals: each typed error becomes .NET's status, body and headers in one middleware."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from aiohttp import ClientResponse, hdrs, web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from config.settings import Settings
from service.app import create_app
from service.transports import EndpointOptions, HubHttpError, refusal_middleware
from service.transports.errors import (
    AtCapacityError,
    ConnectionIdRequiredError,
    ConnectionNotFoundError,
    ConnectionOfAnotherUserError,
    DeleteNotSupportedError,
    EarlyInputTooLargeError,
    MethodNotAllowedError,
    OriginNotAllowedError,
    PostToWebSocketError,
    ResumeLossyError,
    ShuttingDownError,
    TooManyConnectionsError,
    TooManyNewConnectionsError,
    TransportChangeError,
    TransportConflictError,
    TransportNotSupportedError,
    UnauthorizedError,
)
from tests.support.server import hub_settings
from tests.support.tokens import TokenFactory

TEXT_REFUSALS = [
    (ConnectionIdRequiredError(), 400, "Connection ID required"),
    (TransportChangeError(), 400, "Cannot change transports mid-connection"),
    (DeleteNotSupportedError(), 400, "Cannot terminate this connection using the DELETE endpoint."),
    (OriginNotAllowedError(), 403, "Origin not allowed"),
    (ConnectionOfAnotherUserError(), 403, "This connection belongs to another user."),
    (ConnectionNotFoundError(), 404, "No Connection with that ID"),
    (
        ResumeLossyError(),
        404,
        "Messages were dropped while the connection was away; start a new connection.",
    ),
    (
        TransportNotSupportedError("ServerSentEvents"),
        404,
        "ServerSentEvents transport not supported by this end point type",
    ),
    (MethodNotAllowedError(), 405, "Method Not Allowed"),
    (PostToWebSocketError(), 405, "POST requests are not allowed for WebSocket connections."),
    (TransportConflictError(), 409, "Connection already has an active transport."),
    (ShuttingDownError(), 503, "The server is shutting down; connect again to reach another instance."),
    (EarlyInputTooLargeError(), 413, "Too much data before a transport was started."),
    (
        TooManyConnectionsError(20),
        429,
        "This user already has the most connections allowed (20); close one before opening another.",
    ),
    (
        TooManyNewConnectionsError(60, 10, 7),
        429,
        "This user opened connections faster than allowed (10 at once, then 60 a minute); retry after 7 s.",
    ),
    (AtCapacityError(), 503, "The server has reached its connection limit; try again later."),
]


async def _client(app: web.Application) -> TestClient[web.Request, web.Application]:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def _raising(error: HubHttpError) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise error

    app = web.Application(middlewares=[refusal_middleware])
    app.router.add_route("*", "/", handler)
    return app


@pytest.mark.parametrize(("error", "status", "text"), TEXT_REFUSALS, ids=lambda v: type(v).__name__)
async def test_each_refusal_is_its_status_and_plain_text(error: HubHttpError, status: int, text: str) -> None:
    client = await _client(_raising(error))
    try:
        response = await client.get("/")
        assert response.status == status
        assert await response.text() == text
        assert response.content_type == "text/plain"
        assert hdrs.WWW_AUTHENTICATE not in response.headers
    finally:
        await client.close()


async def test_unauthorized_has_an_empty_body_and_the_challenge() -> None:
    challenge = 'Bearer error="invalid_token", error_description="The token expired at 2025-01-01T00:00:00Z"'
    client = await _client(_raising(UnauthorizedError(challenge)))
    try:
        response = await client.post("/")
        assert response.status == 401
        assert await response.read() == b""
        assert response.headers[hdrs.WWW_AUTHENTICATE] == challenge
    finally:
        await client.close()


async def test_too_many_new_connections_says_when_to_retry() -> None:
    client = await _client(_raising(TooManyNewConnectionsError(60, 10, 7)))
    try:
        response = await client.post("/")
        assert response.status == 429
        assert response.headers[hdrs.RETRY_AFTER] == "7"
    finally:
        await client.close()


async def test_other_exceptions_are_not_refusals() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound(text="plain aiohttp")

    app = web.Application(middlewares=[refusal_middleware])
    app.router.add_get("/", handler)
    client = await _client(app)
    try:
        response = await client.get("/")
        assert (response.status, await response.text()) == (404, "plain aiohttp")
    finally:
        await client.close()


# --- the real endpoint, through the app's middleware ----------------------------------------------


def _settings(token_factory: TokenFactory, **overrides: Any) -> Settings:
    return hub_settings(token_factory, hub_max_connections=2, **overrides)


@contextlib.asynccontextmanager
async def _hub(settings: Settings) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client = await _client(create_app(settings, consumer_factory=False))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def hub(token_factory: TokenFactory) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with _hub(_settings(token_factory)) as client:
        yield client


PATH = "/hub/recommendations"


def _bearer(token_factory: TokenFactory, **claims: Any) -> dict[str, str]:
    return {hdrs.AUTHORIZATION: f"Bearer {token_factory.dispatcher(**claims)}"}


def _auth_failures(reason: str) -> float:
    return REGISTRY.get_sample_value("realtime_auth_failures_total", {"reason": reason}) or 0.0


async def _negotiate(hub: TestClient[web.Request, web.Application], headers: dict[str, str]) -> str:
    async with hub.post(f"{PATH}/negotiate", params={"negotiateVersion": "1"}, headers=headers) as response:
        assert response.status == 200
        token: str = (await response.json())["connectionToken"]
        return token


async def _expect(request: Awaitable[ClientResponse], status: int, text: str) -> None:
    response = await request
    try:
        assert response.status == status
        assert await response.text() == text
        assert response.content_type == "text/plain"
    finally:
        response.release()


async def test_endpoint_refusals(
    hub: TestClient[web.Request, web.Application], token_factory: TokenFactory
) -> None:
    path, auth = PATH, _bearer(token_factory)
    await _expect(hub.get(f"{path}/negotiate", headers=auth), 405, "Method Not Allowed")
    await _expect(hub.put(path, headers=auth), 405, "Method Not Allowed")
    await _expect(
        hub.post(f"{path}/negotiate", headers={**auth, hdrs.ORIGIN: "https://evil.example"}),
        403,
        "Origin not allowed",
    )
    await _expect(hub.post(path, headers=auth), 400, "Connection ID required")
    await _expect(hub.get(path, headers=auth), 400, "Connection ID required")
    await _expect(hub.post(path, params={"id": "nope"}, headers=auth), 404, "No Connection with that ID")
    await _expect(hub.delete(path, params={"id": "nope"}, headers=auth), 404, "No Connection with that ID")

    token = await _negotiate(hub, auth)
    await _expect(
        hub.delete(path, params={"id": token}, headers=auth),
        400,
        "Cannot terminate this connection using the DELETE endpoint.",
    )
    other = _bearer(token_factory, subject="someone-else")
    await _expect(
        hub.post(path, params={"id": token}, headers=other), 403, "This connection belongs to another user."
    )
    # Bytes before the first poll are kept up to one frame's worth (also the request size limit).
    limit = EndpointOptions.from_settings(_settings(token_factory)).max_frame_size
    await _expect(hub.post(path, params={"id": token}, headers=auth, data=b"x" * limit), 200, "")
    await _expect(
        hub.post(path, params={"id": token}, headers=auth, data=b"x"),
        413,
        "Too much data before a transport was started.",
    )
    # HUB_MAX_CONNECTIONS=2 and two connections exist.
    await _negotiate(hub, auth)
    await _expect(
        hub.post(f"{path}/negotiate", headers=auth),
        503,
        "The server has reached its connection limit; try again later.",
    )


async def test_endpoint_refusals_of_transport_requests(
    hub: TestClient[web.Request, web.Application], token_factory: TokenFactory
) -> None:
    path, auth = PATH, _bearer(token_factory)
    sse = {**auth, hdrs.ACCEPT: "text/event-stream"}

    polled = await _negotiate(hub, auth)
    async with hub.get(path, params={"id": polled}, headers=auth) as first_poll:
        assert first_poll.status == 200
    await _expect(
        hub.get(path, params={"id": polled}, headers=sse), 400, "Cannot change transports mid-connection"
    )

    streamed = await _negotiate(hub, auth)
    async with hub.get(path, params={"id": streamed}, headers=sse) as stream:
        assert stream.status == 200
        assert await stream.content.readline() == b":\r\n"  # the stream is open and attached
        await _expect(
            hub.get(path, params={"id": streamed}, headers=sse),
            409,
            "Connection already has an active transport.",
        )


async def test_endpoint_refuses_posts_for_websocket_connections(
    hub: TestClient[web.Request, web.Application], token_factory: TokenFactory
) -> None:
    path, auth = PATH, _bearer(token_factory)
    token = await _negotiate(hub, auth)
    ws = await hub.ws_connect(path, params={"id": token}, headers=auth)
    try:
        await _expect(
            hub.post(path, params={"id": token}, headers=auth, data=b"{}\x1e"),
            405,
            "POST requests are not allowed for WebSocket connections.",
        )
    finally:
        await ws.close()


async def test_endpoint_refuses_transports_it_does_not_offer(token_factory: TokenFactory) -> None:
    auth = _bearer(token_factory)
    async with _hub(_settings(token_factory, hub_transports=["LongPolling"])) as hub:
        await _expect(
            hub.get(PATH, headers={**auth, hdrs.ACCEPT: "text/event-stream"}),
            404,
            "ServerSentEvents transport not supported by this end point type",
        )
        await _expect(
            hub.get(PATH, headers={**auth, hdrs.UPGRADE: "websocket"}),
            404,
            "WebSockets transport not supported by this end point type",
        )


@pytest.mark.parametrize(
    ("headers", "reason", "challenge"),
    [
        ({}, "missing", "Bearer"),
        (
            {hdrs.AUTHORIZATION: "Bearer not.a.jwt"},
            "malformed",
            'Bearer error="invalid_token", '
            'error_description="The token header is not base64url-encoded JSON"',
        ),
    ],
)
async def test_endpoint_unauthorized_is_empty_with_its_challenge_and_counted(
    hub: TestClient[web.Request, web.Application], headers: dict[str, str], reason: str, challenge: str
) -> None:
    before = _auth_failures(reason)
    async with hub.post(f"{PATH}/negotiate", headers=headers) as response:
        assert response.status == 401
        assert await response.read() == b""
        assert response.headers[hdrs.WWW_AUTHENTICATE] == challenge
    assert _auth_failures(reason) == before + 1
