"""Clients that stop reading are dropped, counted by reason, and closed as ``slow_client`` — on every
transport, whichever bound notices (issue 11, E29).

Raw sockets that join a group and then read nothing (``tests.support.silent``) against the real app
on loopback. Before: the send timeout never saw bytes that fit in the kernel's buffers (a silent
WebSocket took thousands of events to be dropped), drops by the send timeout were not counted, and a
stalled SSE write closed the connection as ``transport_closed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from prometheus_client import REGISTRY

from service.connections import ConnectionState, HttpConnection
from tests.support.server import RunningService, hub_settings, running_service
from tests.support.silent import (
    SilentClient,
    silent_long_polling,
    silent_server_sent_events,
    silent_websocket,
)
from tests.support.tokens import TokenFactory

pytestmark = [pytest.mark.timeout(60)]

Connect = Callable[[aiohttp.ClientSession, str, str], Awaitable[SilentClient]]
GROUP = "dispatch/north-america"
EVENT = {"jobId": "00000000-0000-4000-8000-000000000000", "note": "x" * 200}  # ~250 bytes on the wire


def _slow_drops(reason: str) -> float:
    return REGISTRY.get_sample_value("realtime_hub_slow_client_disconnects_total", {"reason": reason}) or 0.0


def _connection(service: RunningService, connection_id: str) -> HttpConnection:
    [connection] = [c for c in service.runtime.manager if c.connection_id == connection_id]
    return connection


async def _send(service: RunningService, count: int) -> None:
    """``count`` events to the group, letting the loop write between bursts (as the consumer does)."""
    for index in range(count):
        service.runtime.lifetime.send_groups([GROUP], "RecommendationReady", EVENT)
        if index % 20 == 19:
            await asyncio.sleep(0)


async def _send_until_closed(service: RunningService, connection: HttpConnection, *, limit: int) -> int:
    sent = 0
    while connection.state is not ConnectionState.CLOSED:
        assert sent < limit, f"still open after {sent} events"
        await _send(service, 20)
        sent += 20
    return sent


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.mark.parametrize(
    ("connect", "events"),
    [
        pytest.param(silent_websocket, 200, id="websocket-fits-in-the-kernel"),
        pytest.param(silent_server_sent_events, 200, id="sse-fits-in-the-kernel"),
        pytest.param(silent_server_sent_events, 4000, id="sse-fills-the-kernel"),
    ],
)
async def test_a_client_that_stops_reading_is_dropped_by_the_send_timeout_and_counted(
    connect: Connect, events: int, token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    """A few events that fit in the kernel's buffers (our own buffer stays empty), or enough to fill
    them: either way, no progress for HUB_TRANSPORT_SEND_TIMEOUT drops the client as slow."""
    settings = hub_settings(token_factory, hub_transport_send_timeout=1.0, hub_max_buffered_bytes=4 << 20)
    async with running_service(settings) as service:
        before = _slow_drops("send_timeout")
        client = await connect(session, service.hub_url, token_factory.dispatcher())
        connection = _connection(service, client.connection_id)
        await _send(service, events)
        assert await service.next_closed() == client.connection_id
        assert connection.close_reason == "slow_client"
        assert _slow_drops("send_timeout") - before == 1
        await client.close()


async def test_a_long_polling_client_that_stops_polling_with_messages_waiting_is_a_slow_client(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    settings = hub_settings(token_factory, hub_disconnect_timeout=1.0)
    async with running_service(settings) as service:
        before = _slow_drops("not_polling")
        client = await silent_long_polling(session, service.hub_url, token_factory.dispatcher())
        connection = _connection(service, client.connection_id)
        await _send(service, 10)
        assert await service.next_closed() == client.connection_id
        assert connection.close_reason == "slow_client"
        assert _slow_drops("not_polling") - before == 1


async def test_a_long_polling_client_gone_with_nothing_waiting_expires_and_is_not_counted_as_slow(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    settings = hub_settings(token_factory, hub_disconnect_timeout=1.0)
    async with running_service(settings) as service:
        before = {reason: _slow_drops(reason) for reason in ("not_polling", "send_timeout", "buffer_full")}
        client = await silent_long_polling(session, service.hub_url, token_factory.dispatcher())
        connection = _connection(service, client.connection_id)
        assert await service.next_closed() == client.connection_id
        assert connection.close_reason == "expired"
        assert {reason: _slow_drops(reason) for reason in before} == before


@pytest.mark.parametrize(
    "connect",
    [
        pytest.param(silent_websocket, id="websocket"),
        pytest.param(silent_server_sent_events, id="sse"),
        pytest.param(silent_long_polling, id="long-polling"),
    ],
)
async def test_a_client_that_stops_reading_under_a_steady_flow_is_dropped_at_the_buffer_bound(
    connect: Connect, token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    """Events faster than the send timeout: the buffer bound drops it, after HUB_MAX_BUFFERED_BYTES plus
    at most what the bounded kernel buffers hold — not after the megabytes an unbounded kernel takes."""
    settings = hub_settings(token_factory)
    async with running_service(settings) as service:
        before = _slow_drops("buffer_full")
        client = await connect(session, service.hub_url, token_factory.dispatcher())
        connection = _connection(service, client.connection_id)
        sent = await _send_until_closed(service, connection, limit=20_000)
        assert connection.close_reason == "slow_client"
        assert _slow_drops("buffer_full") - before == 1
        # Our bound, the server's SO_SNDBUF (HUB_SOCKET_SEND_BUFFER_BYTES' default, doubled by Linux),
        # the client's small receive buffer, and slack for frame headers and the kernel's accounting.
        absorbed = settings.hub_max_buffered_bytes + 2 * 65_536 + 64 * 1024
        assert sent * 250 <= absorbed * 1.5, f"{sent} events (~{sent * 250} bytes) before the drop"
        await client.close()
