"""Wire-level behaviour of negotiate and the WebSocket transport, byte for byte (raw client)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from service.auth import is_ticket
from tests.support.server import RunningService, hub_settings, running_service
from tests.support.tokens import TokenFactory
from tests.support.waiting import eventually
from tests.support.wire import RS, RawHubClient, RawLongPollingClient, negotiate, parse_records


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


# --- negotiate --------------------------------------------------------------------------------------


async def test_negotiate_version_1_gives_a_separate_secret_token(
    service: RunningService, session: aiohttp.ClientSession, token_factory: TokenFactory
) -> None:
    body = await negotiate(session, service.hub_url, token_factory.dispatcher())
    assert list(body) == [
        "negotiateVersion",
        "connectionId",
        "connectionToken",
        "availableTransports",
        "accessToken",
    ]
    assert is_ticket(body["accessToken"])  # the clients send it instead of their token from here on
    assert body["negotiateVersion"] == 1
    assert body["connectionId"] != body["connectionToken"]
    assert len(body["connectionId"]) == 22
    assert len(body["connectionToken"]) == 22
    assert body["availableTransports"] == [
        {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
        {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
        {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
    ]


async def test_negotiate_version_0_and_errors(
    service: RunningService, session: aiohttp.ClientSession, token_factory: TokenFactory
) -> None:
    token = token_factory.dispatcher()
    body = await negotiate(session, service.hub_url, token, version=None)
    assert body["negotiateVersion"] == 0
    assert "connectionToken" not in body
    assert (await negotiate(session, service.hub_url, token, version=7))["negotiateVersion"] == 1  # clamped
    bad = await negotiate(session, service.hub_url, token, version=None, negotiateVersion="x")
    assert bad == {"error": "The client requested a non-integer protocol version."}
    stateful = await negotiate(session, service.hub_url, token, useStatefulReconnect="true")
    assert next(iter(stateful)) == "useStatefulReconnect"
    assert stateful["useStatefulReconnect"] is True
    async with session.get(f"{service.hub_url}/negotiate") as response:
        assert response.status == 405


async def test_the_negotiated_ticket_authenticates_only_its_own_connections_requests(
    service: RunningService, session: aiohttp.ClientSession, token_factory: TokenFactory
) -> None:
    """What the official clients do after negotiate: every request of the connection presents the
    ``accessToken`` of the answer (WebSocket header or ``access_token`` query, polls and posts)."""
    token = token_factory.dispatcher()
    ws_url = service.hub_url.replace("http", "ws", 1)
    first = await negotiate(session, service.hub_url, token)
    ticket = first["accessToken"]
    ws = await session.ws_connect(
        ws_url, params={"id": first["connectionToken"]}, headers={"Authorization": f"Bearer {ticket}"}
    )
    client = RawHubClient(ws)
    await client.send({"protocol": "json", "version": 1})
    assert await client.next_record() == {}
    # A browser puts it in the query, as it does a token.
    second = await negotiate(session, service.hub_url, token)
    by_query = await session.ws_connect(
        ws_url, params={"id": second["connectionToken"], "access_token": second["accessToken"]}
    )
    await by_query.close()

    def refused_with(description: str) -> Callable[[str], bool]:
        return lambda header: header.startswith('Bearer error="invalid_token"') and description in header

    # Not for another connection, not to start one (negotiate, skipNegotiation), not after it is gone.
    third = await negotiate(session, service.hub_url, token)
    with pytest.raises(aiohttp.WSServerHandshakeError) as other:
        await session.ws_connect(
            ws_url, params={"id": third["connectionToken"]}, headers={"Authorization": f"Bearer {ticket}"}
        )
    assert other.value.status == 401
    assert other.value.headers is not None
    assert refused_with("not valid for this connection")(other.value.headers["WWW-Authenticate"])
    async with session.post(
        f"{service.hub_url}/negotiate",
        params={"id": first["connectionToken"], "negotiateVersion": "1"},
        headers={"Authorization": f"Bearer {ticket}"},
    ) as response:
        assert response.status == 401
        assert refused_with("negotiate with your bearer token")(response.headers["WWW-Authenticate"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as skip:
        await session.ws_connect(ws_url, headers={"Authorization": f"Bearer {ticket}"})
    assert skip.value.status == 401
    await ws.close()
    await eventually(lambda: service.runtime.manager.get(first["connectionToken"]) is None)
    with pytest.raises(aiohttp.WSServerHandshakeError) as gone:
        await session.ws_connect(
            ws_url, params={"id": first["connectionToken"]}, headers={"Authorization": f"Bearer {ticket}"}
        )
    assert gone.value.status == 404  # the ticket is good, the connection is not: as with a token


async def test_long_polling_polls_and_posts_with_the_ticket(
    service: RunningService, session: aiohttp.ClientSession, token_factory: TokenFactory
) -> None:
    token = token_factory.dispatcher()
    negotiated = await negotiate(session, service.hub_url, token)
    client = RawLongPollingClient(session, service.hub_url, negotiated["accessToken"], negotiated)
    assert await client.poll() == (200, b"")
    invocation = {
        "type": 1,
        "target": "JoinDispatchGroup",
        "arguments": ["north-america"],
        "invocationId": "0",
    }
    assert (
        await client.post(b'{"protocol":"json","version":1}\x1e' + json.dumps(invocation).encode() + RS)
        == 200
    )
    received: list[dict[str, object]] = []
    while len(received) < 2:
        status, body = await client.poll()
        assert status == 200
        received += parse_records(body)
    assert received[:2] == [{}, {"type": 3, "invocationId": "0"}]
    async with session.delete(service.hub_url, params=client.params, headers=client.headers) as response:
        assert response.status == 202


async def test_401_has_empty_body_and_bearer_challenge(
    service: RunningService, session: aiohttp.ClientSession, token_factory: TokenFactory
) -> None:
    async with session.post(f"{service.hub_url}/negotiate") as response:
        assert response.status == 401
        assert response.reason == "Unauthorized"
        assert await response.read() == b""
        assert response.headers["WWW-Authenticate"] == "Bearer"
    headers = {"Authorization": f"Bearer {token_factory.expired()}"}
    async with session.post(f"{service.hub_url}/negotiate", headers=headers) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith(
            'Bearer error="invalid_token", error_description='
        )
    # The WebSocket upgrade is refused before any upgrade happens.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(service.hub_url.replace("http", "ws", 1), params={"access_token": "x.y.z"})
    assert refused.value.status == 401


async def test_transport_request_errors(
    service: RunningService, session: aiohttp.ClientSession, token_factory: TokenFactory
) -> None:
    token = token_factory.dispatcher()
    auth = {"Authorization": f"Bearer {token}"}
    ws_url = service.hub_url.replace("http", "ws", 1)
    async with session.get(service.hub_url, headers=auth) as response:
        assert (response.status, await response.text()) == (400, "Connection ID required")
    with pytest.raises(aiohttp.WSServerHandshakeError) as unknown:
        await session.ws_connect(ws_url, params={"id": "nope"}, headers=auth)
    assert unknown.value.status == 404
    client, negotiated = await RawHubClient.connect(session, service.hub_url, token)
    with pytest.raises(aiohttp.WSServerHandshakeError) as second:
        await session.ws_connect(ws_url, params={"id": negotiated["connectionToken"]}, headers=auth)
    assert second.value.status == 409
    # The public connection id is not a credential.
    with pytest.raises(aiohttp.WSServerHandshakeError) as by_id:
        await session.ws_connect(ws_url, params={"id": negotiated["connectionId"]}, headers=auth)
    assert by_id.value.status == 404
    async with session.post(
        service.hub_url, params={"id": negotiated["connectionToken"]}, headers=auth
    ) as response:
        assert response.status == 405
    async with session.delete(
        service.hub_url, params={"id": negotiated["connectionToken"]}, headers=auth
    ) as response:
        assert response.status == 400
    async with session.put(service.hub_url, headers=auth) as response:
        assert response.status == 405
    # Another user may not use a connection negotiated by someone else.
    other = await negotiate(session, service.hub_url, token_factory.dispatcher())
    intruder = {"Authorization": f"Bearer {token_factory.mint(subject='someone-else', roles=['Dispatcher'])}"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as hijack:
        await session.ws_connect(ws_url, params={"id": other["connectionToken"]}, headers=intruder)
    assert hijack.value.status == 403
    await client.ws.close()


async def test_foreign_origin_websocket_is_refused(
    service: RunningService, session: aiohttp.ClientSession, token_factory: TokenFactory
) -> None:
    token = token_factory.dispatcher()
    negotiated = await negotiate(session, service.hub_url, token)
    ws_url = service.hub_url.replace("http", "ws", 1)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(
            ws_url,
            params={"id": negotiated["connectionToken"], "access_token": token},
            headers={"Origin": "https://evil.example"},
        )
    assert refused.value.status == 403
    ws = await session.ws_connect(
        ws_url,
        params={"id": negotiated["connectionToken"], "access_token": token},
        headers={"Origin": "http://localhost:3000"},
    )
    await ws.close()


async def test_foreign_origin_is_refused_on_every_transport_request(
    service: RunningService, session: aiohttp.ClientSession, token_factory: TokenFactory
) -> None:
    token = token_factory.dispatcher()
    negotiated = await negotiate(session, service.hub_url, token)
    params = {"id": negotiated["connectionToken"], "access_token": token}
    foreign = {"Origin": "https://evil.example"}
    requests = [
        ("POST", f"{service.hub_url}/negotiate", {}, {}),
        ("GET", service.hub_url, params, {"Accept": "text/event-stream"}),  # Server-Sent Events
        ("GET", service.hub_url, params, {}),  # a long poll
        ("POST", service.hub_url, params, {}),  # a send
        ("DELETE", service.hub_url, params, {}),
    ]
    for method, url, query, headers in requests:
        async with session.request(method, url, params=query, headers={**headers, **foreign}) as response:
            assert response.status == 403, (method, url, headers)
            assert "Access-Control-Allow-Origin" not in response.headers
    # No Origin at all is a non-browser client (the .NET, Java and Python clients send none): allowed.
    async with session.get(service.hub_url, params=params) as response:
        assert response.status == 200


async def test_a_stateful_reconnect_that_would_miss_messages_is_refused_before_the_upgrade(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    settings = hub_settings(token_factory, hub_stateful_reconnect_buffer_size=1024)
    async with running_service(settings) as service:
        token = token_factory.dispatcher()
        client, negotiated = await RawHubClient.connect(
            session,
            service.hub_url,
            token,
            handshake=b'{"protocol":"json","version":2}\x1e',
            useStatefulReconnect="true",
        )
        join = {"type": 1, "target": "JoinDispatchGroup", "arguments": ["north-america"], "invocationId": "1"}
        await client.send(join)
        while (await client.next_record()).get("type") != 3:
            pass
        (connection,) = list(service.runtime.manager)
        connection.sink.abort()  # type: ignore[union-attr]  # the socket drops, no close frame
        await eventually(lambda: connection.sink is None)
        for n in range(20):  # far over 1,024 bytes while it is away: the oldest are dropped
            service.runtime.lifetime.send_groups(["dispatch/north-america"], "E", {"n": n, "pad": "x" * 40})
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(
                service.hub_url.replace("http://", "ws://", 1),
                params={"id": negotiated["connectionToken"]},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert refused.value.status == 404
        assert connection.close_reason == "resume_lossy"


async def test_cors_preflight_and_credentials(
    service: RunningService, session: aiohttp.ClientSession
) -> None:
    preflight = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,x-requested-with,x-signalr-user-agent",
    }
    async with session.options(f"{service.hub_url}/negotiate", headers=preflight) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        allowed = {h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "x-requested-with", "x-signalr-user-agent", "content-type"} <= allowed
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
    for refused in ("null", "https://evil.example"):
        async with session.options(
            f"{service.hub_url}/negotiate", headers={**preflight, "Origin": refused}
        ) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
            assert "Access-Control-Allow-Credentials" not in response.headers
    async with session.post(
        f"{service.hub_url}/negotiate", headers={"Origin": "http://localhost:3000"}
    ) as response:
        assert response.status == 401  # and still readable by the page, so the client can say why
        assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert "Origin" in response.headers.getall("Vary")


# --- handshake and framing --------------------------------------------------------------------------


async def test_handshake_errors(
    service: RunningService, session: aiohttp.ClientSession, token_factory: TokenFactory
) -> None:
    token = token_factory.dispatcher()
    cases = [
        (b'{"protocol":"xml","version":1}\x1e', "The protocol 'xml' is not supported."),
        (
            b'{"protocol":"json","version":3}\x1e',
            "The server does not support version 3 of the 'json' protocol.",
        ),
        (b"not json\x1e", "An unexpected error occurred during connection handshake."),
    ]
    for handshake, error in cases:
        client, _ = await RawHubClient.connect(session, service.hub_url, token, handshake=None)
        await client.ws.send_bytes(handshake)
        assert await client.next_record() == {"error": error}
        assert await client.wait_closed() == 1000


async def test_pipelined_batched_and_split_records(
    service: RunningService, session: aiohttp.ClientSession, token_factory: TokenFactory
) -> None:
    client, _ = await RawHubClient.connect(
        session, service.hub_url, token_factory.dispatcher(), handshake=None
    )
    # Handshake and the first invocation in one frame, a second invocation split over two frames,
    # 'type' last and unknown fields present, as real clients send them.
    first = json.dumps(
        {"target": "JoinDispatchGroup", "arguments": ["north-america"], "invocationId": "0", "type": 1}
    )
    second = (
        json.dumps(
            {
                "arguments": ["north-america"],
                "streamIds": [],
                "headers": {},
                "x": 1,
                "target": "leavedispatchgroup",
                "invocationId": "1",
                "type": 1,
            }
        ).encode()
        + RS
    )
    await client.ws.send_bytes(b'{"protocol":"json","version":1}\x1e' + first.encode() + RS + second[:17])
    assert await client.next_record() == {}
    assert await client.next_record() == {"type": 3, "invocationId": "0"}
    await client.ws.send_str(second[17:].decode())
    assert await client.next_record() == {"type": 3, "invocationId": "1"}
    await client.send(
        {"type": 6},
        {"type": 1, "target": "JoinDispatchGroup", "arguments": ["north-america"]},
        {"type": 1, "target": "Nope", "arguments": [], "invocationId": "2"},
    )
    assert await client.next_record() == {
        "type": 3,
        "invocationId": "2",
        "error": "Failed to invoke 'Nope' due to an error on the server. "
        "HubException: Method does not exist.",
    }
    assert service.runtime.lifetime.group_size("dispatch/north-america") == 1
    await client.send({"type": 7})
    assert await client.next_record() == {"type": 7}
    assert await client.wait_closed() == 1000


async def test_oversized_message_closes_only_that_connection(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    settings = hub_settings(token_factory, hub_max_receive_message_size=4096)
    async with running_service(settings) as service:
        big, _ = await RawHubClient.connect(session, service.hub_url, token_factory.dispatcher())
        small, _ = await RawHubClient.connect(session, service.hub_url, token_factory.dispatcher())
        await small.send(
            {"type": 1, "target": "JoinDispatchGroup", "arguments": ["north-america"], "invocationId": "a"}
        )
        await small.next_of_type(3)
        await big.send(
            {"type": 1, "target": "JoinDispatchGroup", "arguments": ["x" * 5000], "invocationId": "b"}
        )
        close = await big.next_of_type(7)
        assert close["allowReconnect"] is True
        assert close["error"].startswith("Connection closed with an error.")
        assert "The maximum message size of 4096B was exceeded" in close["error"]
        await big.wait_closed()
        service.runtime.lifetime.send_groups(["dispatch/north-america"], "RecommendationReady", {"ok": 1})
        assert (await small.next_of_type(1))["arguments"] == [{"ok": 1}]


async def test_a_frame_over_the_frame_limit_is_a_counted_protocol_error_and_not_resumable(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    settings = hub_settings(token_factory, hub_max_receive_message_size=4096)  # frames: 64 KB at most
    async with running_service(settings) as service:
        before = _protocol_errors("too_large")
        client, _ = await RawHubClient.connect(
            session,
            service.hub_url,
            token_factory.dispatcher(),
            handshake=b'{"protocol":"json","version":2}\x1e',
            useStatefulReconnect="true",
        )
        (connection,) = list(service.runtime.manager)
        small = {"type": 6}
        await client.send(*([small] * 7000))  # ~84 KB of tiny records in one frame
        await client.wait_closed()
        assert client.ws.close_code == 1009
        # Counted like any message over the limit, and the connection ends: a stateful client does not
        # get to resume after sending what the server refused.
        await eventually(lambda: connection.close_reason is not None)
        assert connection.close_reason == "protocol_error"
        assert _protocol_errors("too_large") == before + 1


def _protocol_errors(kind: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("realtime_hub_protocol_errors_total", {"kind": kind}) or 0.0


# --- timers -----------------------------------------------------------------------------------------


async def test_keep_alive_client_timeout_and_handshake_timeout(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    settings = hub_settings(
        token_factory, hub_keep_alive_interval=1.0, hub_client_timeout_interval=2.0, hub_handshake_timeout=1.0
    )
    async with running_service(settings) as service:
        token = token_factory.dispatcher()
        pinged, _ = await RawHubClient.connect(session, service.hub_url, token)
        assert await pinged.next_record(timeout=5) == {"type": 6}  # the server keeps the socket alive
        # After the client's first Ping the client timeout runs: silence then means a dead client.
        await pinged.send({"type": 6})
        close = await pinged.next_of_type(7, timeout=10)
        assert close == {
            "type": 7,
            "error": "Connection closed with an error. "
            "Client hasn't sent a message/ping within the configured ClientTimeoutInterval.",
            "allowReconnect": True,
        }
        silent, _ = await RawHubClient.connect(session, service.hub_url, token, handshake=None)
        assert await silent.next_record(timeout=5) == {"error": "Handshake was canceled."}
        assert await silent.wait_closed() == 1000


# --- slow clients -----------------------------------------------------------------------------------


async def _stalled_websocket(
    service: RunningService, token: str, session: aiohttp.ClientSession
) -> socket.socket:
    """A WebSocket that joined its group and then never reads again (tiny receive buffer)."""
    negotiated = await negotiate(session, service.hub_url, token)
    host, port = service.url.removeprefix("http://").split(":")
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(raw, (host, int(port)))
    request = (
        f"GET {service.settings.hub_path}?id={negotiated['connectionToken']} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    await loop.sock_sendall(raw, request)
    response = b""
    while b"\r\n\r\n" not in response:
        response += await loop.sock_recv(raw, 1)
    assert response.startswith(b"HTTP/1.1 101"), response

    def masked(payload: bytes) -> bytes:
        assert len(payload) < 126
        return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload  # zero mask: payload unchanged

    await loop.sock_sendall(raw, masked(b'{"protocol":"json","version":1}\x1e'))
    join = {"type": 1, "target": "JoinDispatchGroup", "arguments": ["north-america"]}
    await loop.sock_sendall(raw, masked(json.dumps(join).encode() + RS))
    return raw


async def test_slow_client_is_dropped_and_others_get_everything(
    token_factory: TokenFactory, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    settings = hub_settings(token_factory, hub_max_buffered_bytes=65_536)
    async with running_service(settings) as service:
        lifetime = service.runtime.lifetime
        fast, _ = await RawHubClient.connect(session, service.hub_url, token_factory.dispatcher())
        await fast.send(
            {"type": 1, "target": "JoinDispatchGroup", "arguments": ["north-america"], "invocationId": "0"}
        )
        await fast.next_of_type(3)
        stalled = await _stalled_websocket(service, token_factory.dispatcher(), session)
        try:
            await eventually(
                lambda: lifetime.group_size("dispatch/north-america") == 2, what="the stalled join"
            )
            payload = {"blob": "x" * 1000}
            sent = 0
            received = 0
            for index in range(3000):
                lifetime.send_groups(
                    ["dispatch/north-america"], "RecommendationReady", {"i": index, **payload}
                )
                sent += 1
                if index % 50 == 49:  # keep reading the fast client as a real one would
                    while received < sent:
                        record = await fast.next_of_type(1)
                        assert record["arguments"][0]["i"] == received
                        received += 1
            while received < sent:
                assert (await fast.next_of_type(1))["arguments"][0]["i"] == received
                received += 1
            assert lifetime.group_size("dispatch/north-america") == 1  # the stalled one is gone
        finally:
            stalled.close()


async def test_access_log_never_shows_tokens(
    service: RunningService,
    session: aiohttp.ClientSession,
    token_factory: TokenFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = token_factory.dispatcher()
    caplog.set_level(logging.INFO)
    negotiated = await negotiate(session, service.hub_url, token)
    ws = await session.ws_connect(
        service.hub_url.replace("http", "ws", 1),
        params={"id": negotiated["connectionToken"], "access_token": token},
    )
    await ws.send_bytes(b'{"protocol":"json","version":1}\x1e')
    await ws.receive()
    await ws.close()
    async with session.post(f"{service.hub_url}/negotiate", params={"access_token": token}) as response:
        assert response.status == 200
        second = await response.json()
    ticket = second["accessToken"]
    by_ticket = await session.ws_connect(
        service.hub_url.replace("http", "ws", 1),
        params={"id": second["connectionId"], "access_token": ticket},  # version 0: the id is the token
    )
    await by_ticket.close()
    text = caplog.text
    assert ticket not in text
    assert "http.access" in text
    assert token not in text
    assert token.split(".")[2] not in text
    assert negotiated["connectionToken"] not in text
