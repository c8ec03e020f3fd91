"""The official JS client in every transport × protocol combination a real frontend uses.

{WebSockets, ServerSentEvents, LongPolling} × {JSON, MessagePack} (SSE is text-only), plus automatic
reconnect after a server restart, stateful reconnect across a dropped socket, and token expiry.
"""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from config.settings import Transport
from service.transports.websockets import WebSocketSink
from tests.support.jsclient import JsConnection, NodeDriver
from tests.support.server import RunningService, hub_settings, running_service
from tests.support.tokens import TokenFactory

pytestmark = pytest.mark.node

COMBINATIONS = [
    pytest.param("WebSockets", "json", id="ws-json"),
    pytest.param("WebSockets", "messagepack", id="ws-msgpack"),
    pytest.param("ServerSentEvents", "json", id="sse-json"),
    pytest.param("LongPolling", "json", id="lp-json"),
    pytest.param("LongPolling", "messagepack", id="lp-msgpack"),
]
LISTEN = ("RecommendationReady", "JobAssigned", "Marker")


def _event(index: int = 0, region: str = "north-america") -> dict[str, object]:
    return {
        "type": "JobAssigned",
        "jobId": str(uuid.uuid4()),
        "contractorId": "3b241101-e2bb-4255-8caf-4136c566a962",
        "assignmentId": str(uuid.uuid4()),
        "startUtc": "2026-11-27T08:00:00Z",
        "endUtc": "2026-11-27T12:30:00+00:00",
        "region": region,
        "source": "auto",
        "auditId": str(uuid.uuid4()),
        "seq": index,
        "nested": {"list": [1, 2.5, None, True, "ß"]},
    }


def _server_connection(service: RunningService, connection_id: str | None) -> object:
    for connection in service.runtime.manager:
        if connection.connection_id == connection_id:
            return connection
    raise AssertionError(f"no server-side connection {connection_id}")


@pytest.mark.parametrize(("transport", "protocol"), COMBINATIONS)
async def test_connect_join_receive_leave_stop(
    service: RunningService, js: NodeDriver, token_factory: TokenFactory, transport: str, protocol: str
) -> None:
    lifetime = service.runtime.lifetime
    client = await js.connect(
        service.hub_url, token_factory.dispatcher(), transport=transport, protocol=protocol, listen=LISTEN
    )
    server_side = _server_connection(service, client.connection_id)
    assert server_side.transport is Transport(transport)  # type: ignore[attr-defined]
    hub_connection = service.runtime.handler.get(client.connection_id or "")
    assert hub_connection is not None
    assert hub_connection.protocol is not None
    assert hub_connection.protocol.name == protocol

    await client.invoke("JoinDispatchGroup", "north-america")
    sent = [_event(i) for i in range(5)]
    for event in sent:
        assert lifetime.send_groups(["dispatch/north-america"], "JobAssigned", event) == 1
    received = [(await client.next_message("JobAssigned"))["args"] for _ in sent]
    assert received == [[event] for event in sent]  # payload intact, order kept

    await client.invoke("LeaveDispatchGroup", "north-america")
    assert lifetime.send_groups(["dispatch/north-america"], "JobAssigned", _event()) == 0
    lifetime.send_connection(client.connection_id or "", "Marker", "end")
    assert (await client.next_message())["target"] == "Marker"

    await client.stop()
    assert (await client.next_event("close"))["error"] is None
    assert len(service.runtime.handler) == 0


def _accepted(credential: str) -> float:
    return REGISTRY.get_sample_value("realtime_auth_accepted_total", {"credential": credential}) or 0.0


@pytest.mark.parametrize(("transport", "protocol"), COMBINATIONS)
async def test_the_official_client_presents_the_connection_ticket_after_negotiate(
    service: RunningService, js: NodeDriver, token_factory: TokenFactory, transport: str, protocol: str
) -> None:
    """The JS client takes negotiate's ``accessToken`` for every later request of the connection: its
    1-4 KiB token is sent once, and an open WebSocket keeps ~40 bytes of credential instead."""
    tokens, tickets = _accepted("token"), _accepted("ticket")
    client = await js.connect(
        service.hub_url, token_factory.dispatcher(), transport=transport, protocol=protocol, listen=LISTEN
    )
    await client.invoke("JoinDispatchGroup", "north-america")
    assert _accepted("token") - tokens == 1  # the negotiate
    assert _accepted("ticket") - tickets >= 1  # the socket or stream, every poll and post
    await client.stop()
    assert (await client.next_event("close"))["error"] is None


async def _start(token_factory: TokenFactory, port: int = 0) -> tuple[RunningService, object]:
    context = running_service(hub_settings(token_factory), port=port)
    running = await context.__aenter__()
    return running, context


@pytest.mark.parametrize(("transport", "protocol"), COMBINATIONS)
async def test_automatic_reconnect_after_server_restart(
    js: NodeDriver, token_factory: TokenFactory, transport: str, protocol: str
) -> None:
    first, first_context = await _start(token_factory)
    port = int(first.url.rsplit(":", 1)[1])
    client: JsConnection = await js.connect(
        first.hub_url,
        token_factory.dispatcher(),
        transport=transport,
        protocol=protocol,
        listen=LISTEN,
        automaticReconnect=[0, 250, 500, 1000, 1000, 1000, 2000, 2000, 2000],
    )
    await client.invoke("JoinDispatchGroup", "north-america")
    old_id = client.connection_id

    await first_context.__aexit__(None, None, None)  # type: ignore[attr-defined]
    reconnecting = await client.next_event("reconnecting")
    assert reconnecting["name"] == client.name

    second, second_context = await _start(token_factory, port=port)
    try:
        reconnected = await client.next_event("reconnected", timeout=30)
        assert reconnected["connectionId"] not in (None, old_id)  # a new connection: groups are rejoined
        await client.invoke("JoinDispatchGroup", "north-america")  # what onreconnected does in an app
        event = _event(42)
        assert second.runtime.lifetime.send_groups(["dispatch/north-america"], "JobAssigned", event) == 1
        assert (await client.next_message("JobAssigned"))["args"] == [event]
        await client.stop()
    finally:
        await second_context.__aexit__(None, None, None)  # type: ignore[attr-defined]


@pytest.mark.parametrize("spelling", ["trailing slash", "other letter case"])
@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents", "LongPolling"])
async def test_a_hub_url_spelled_as_aspnet_accepts_it_works(
    service: RunningService, js: NodeDriver, token_factory: TokenFactory, transport: str, spelling: str
) -> None:
    # ASP.NET Core matches routes without regard to letter case, and the JS client given a URL
    # ending in "/" negotiates at ".../negotiate" and connects at ".../".
    url = service.hub_url + "/" if spelling == "trailing slash" else service.hub_url.replace("/hub/", "/HUB/")
    assert url != service.hub_url
    client = await js.connect(url, token_factory.dispatcher(), transport=transport, listen=LISTEN)
    await client.invoke("JoinDispatchGroup", "north-america")
    event = _event(1)
    assert service.runtime.lifetime.send_groups(["dispatch/north-america"], "JobAssigned", event) == 1
    assert (await client.next_message("JobAssigned"))["args"] == [event]
    await client.stop()


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_stateful_reconnect_resumes_same_connection_without_loss(
    service: RunningService, js: NodeDriver, token_factory: TokenFactory, protocol: str
) -> None:
    lifetime = service.runtime.lifetime
    client = await js.connect(
        service.hub_url, token_factory.dispatcher(), protocol=protocol, statefulReconnect=True, listen=LISTEN
    )
    await client.invoke("JoinDispatchGroup", "north-america")
    connection = _server_connection(service, client.connection_id)
    assert connection.resumable  # type: ignore[attr-defined]

    for index in range(3):
        lifetime.send_groups(["dispatch/north-america"], "JobAssigned", _event(index))
    for index in range(3):
        assert (await client.next_message("JobAssigned"))["args"][0]["seq"] == index

    # Drop the socket the hard way (no close frame), then keep sending while it is gone.
    sink = connection.sink  # type: ignore[attr-defined]
    assert isinstance(sink, WebSocketSink)
    sink.abort()
    for index in range(3, 10):
        lifetime.send_groups(["dispatch/north-america"], "JobAssigned", _event(index))

    for index in range(3, 10):
        message = await client.next_message("JobAssigned", timeout=20)
        assert message["args"][0]["seq"] == index  # nothing lost, nothing twice, in order
    assert connection.sink is not sink  # type: ignore[attr-defined]  # a new socket …
    assert (await client.state())["connectionId"] == client.connection_id  # … for the same connection
    assert lifetime.group_size("dispatch/north-america") == 1  # with its groups
    lifetime.send_groups(["dispatch/north-america"], "JobAssigned", _event(10))
    assert (await client.next_message("JobAssigned"))["args"][0]["seq"] == 10
    assert not [e for e in client.received() if e["event"] in ("close", "reconnecting")]


async def test_a_stateful_resume_that_would_lose_events_is_refused_and_the_client_reconnects_afresh(
    js: NodeDriver, token_factory: TokenFactory
) -> None:
    settings = hub_settings(token_factory, hub_stateful_reconnect_buffer_size=1_024)
    async with running_service(settings) as service:
        lifetime = service.runtime.lifetime
        client = await js.connect(
            service.hub_url,
            token_factory.dispatcher(),
            statefulReconnect=True,
            automaticReconnect=[0, 500, 1000],
            listen=LISTEN,
        )
        await client.invoke("JoinDispatchGroup", "north-america")
        connection = _server_connection(service, client.connection_id)
        sink = connection.sink  # type: ignore[attr-defined]
        assert isinstance(sink, WebSocketSink)
        sink.abort()
        for index in range(20):  # far over 1,024 bytes while the socket is gone: the oldest are dropped
            lifetime.send_groups(["dispatch/north-america"], "JobAssigned", _event(index))
        # The resume is refused before the upgrade, so the client starts a new connection instead of
        # carrying on with a gap (accepted and then closed, the client's stateful reconnect and its
        # automatic reconnect raced, and now and then it was left with no connection at all).
        reconnecting = await client.next_event("reconnecting", timeout=10)
        assert reconnecting["error"] is not None
        assert connection.close_reason == "resume_lossy"  # type: ignore[attr-defined]
        reconnected = await client.next_event("reconnected", timeout=10)
        assert reconnected["connectionId"] != client.connection_id
        assert not [e for e in client.received() if e["event"] == "message"]
        await client.invoke("JoinDispatchGroup", "north-america")
        assert lifetime.send_groups(["dispatch/north-america"], "JobAssigned", _event(99)) == 1
        assert (await client.next_message("JobAssigned"))["args"][0]["seq"] == 99
        await client.stop()


async def test_token_expiry_closes_with_reconnect_allowed(
    js: NodeDriver, token_factory: TokenFactory
) -> None:
    async with running_service(hub_settings(token_factory)) as service:
        client = await js.connect(
            service.hub_url,
            token_factory.dispatcher(ttl_seconds=2),
            listen=LISTEN,
            automaticReconnect=[0, 500, 1000],
        )
        old_id = client.connection_id
        await client.set_token(token_factory.dispatcher())  # what the accessTokenFactory returns next
        reconnecting = await client.next_event("reconnecting", timeout=10)
        assert reconnecting["error"] is None  # a Close with allowReconnect and no error
        reconnected = await client.next_event("reconnected", timeout=10)
        assert reconnected["connectionId"] != old_id
