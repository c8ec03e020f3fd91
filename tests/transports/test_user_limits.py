"""Per-user bounds on new connections: how many at once, how many new ones a minute (issue 11).

The real app on a loopback port, driven with plain HTTP and WebSocket requests as a client would.
A connection's end is awaited (``RunningService.next_closed``), never slept for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import hdrs
from prometheus_client import REGISTRY

from tests.support.server import RunningService, hub_settings, running_service
from tests.support.tokens import TokenFactory

HANDSHAKE = '{"protocol":"json","version":1}\x1e'


def _limited(limit: str) -> float:
    return REGISTRY.get_sample_value("realtime_hub_rate_limited_total", {"limit": limit}) or 0.0


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _auth(token: str) -> dict[str, str]:
    return {hdrs.AUTHORIZATION: f"Bearer {token}"}


async def _negotiate(
    session: aiohttp.ClientSession, service: RunningService, token: str
) -> aiohttp.ClientResponse:
    response = await session.post(f"{service.hub_url}/negotiate?negotiateVersion=1", headers=_auth(token))
    await response.read()
    return response


async def _websocket(
    session: aiohttp.ClientSession, service: RunningService, token: str
) -> aiohttp.ClientWebSocketResponse:
    """A WebSocket that skips negotiation, through its handshake."""
    ws = await session.ws_connect(service.ws_hub_url, headers=_auth(token))
    await ws.send_str(HANDSHAKE)
    assert (await ws.receive()).data == "{}\x1e"
    return ws


def _settings(token_factory: TokenFactory, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "hub_max_connections_per_user": 0,
        "hub_max_negotiates_per_user_per_minute": 0,
    }
    values.update(overrides)
    return hub_settings(token_factory, **values)


# --- connections per user ------------------------------------------------------------------------


async def test_the_connection_past_the_users_cap_is_refused_with_429_and_a_closed_one_frees_a_slot(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    token = token_factory.dispatcher()
    before = _limited("connections_per_user")
    async with running_service(_settings(token_factory, hub_max_connections_per_user=2)) as service:
        first = await _websocket(session, service, token)
        second = await _websocket(session, service, token)

        refused = await _negotiate(session, service, token)
        assert refused.status == 429
        assert refused.content_type == "text/plain"
        assert await refused.text() == (
            "This user already has the most connections allowed (2); close one before opening another."
        )
        with pytest.raises(aiohttp.WSServerHandshakeError) as upgrade:
            await session.ws_connect(service.ws_hub_url, headers=_auth(token))  # skipNegotiation too
        assert upgrade.value.status == 429
        assert _limited("connections_per_user") == before + 2

        # Somebody else is not affected.
        other = await _negotiate(session, service, token_factory.dispatcher())
        assert other.status == 200

        await first.close()
        await service.next_closed()
        third = await _websocket(session, service, token)
        assert [second.closed, third.closed] == [False, False]
        await second.close()
        await third.close()


async def test_a_negotiated_connection_holds_its_slot_until_it_is_gone(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    # negotiate creates the connection: a client that negotiates and never connects holds a slot
    # until HUB_DISCONNECT_TIMEOUT ends it (else a loop of negotiates would bypass the cap).
    token = token_factory.dispatcher()
    async with running_service(_settings(token_factory, hub_max_connections_per_user=1)) as service:
        assert (await _negotiate(session, service, token)).status == 200
        assert (await _negotiate(session, service, token)).status == 429
        for connection in list(service.runtime.manager):
            service.runtime.manager.dispose(connection, "expired")
        assert (await _negotiate(session, service, token)).status == 200


# --- new connections per user per minute -----------------------------------------------------------


async def test_a_reconnect_storm_gets_the_burst_at_once_then_one_at_a_time(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    # 6 a minute but at most 2 at once: a storm gets two connections, then one every 10 s.
    token = token_factory.dispatcher()
    settings = _settings(token_factory, hub_max_negotiates_per_user_per_minute=6, hub_negotiate_burst=2)
    async with running_service(settings) as service:
        for _ in range(2):
            assert (await _negotiate(session, service, token)).status == 200
        refused = await _negotiate(session, service, token)
        assert refused.status == 429
        assert refused.headers[hdrs.RETRY_AFTER] == "10"
        assert await refused.text() == (
            "This user opened connections faster than allowed (2 at once, then 6 a minute); retry after 10 s."
        )


async def test_negotiates_past_the_users_rate_are_refused_with_429_and_retry_after(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    token = token_factory.dispatcher()
    before = _limited("negotiates_per_user")
    settings = _settings(token_factory, hub_max_negotiates_per_user_per_minute=3)
    async with running_service(settings) as service:
        for _ in range(2):
            assert (await _negotiate(session, service, token)).status == 200
        ws = await _websocket(
            session, service, token
        )  # a WebSocket without negotiate is a new connection too

        refused = await _negotiate(session, service, token)
        assert refused.status == 429
        # Three a minute: the next one is possible in twenty seconds.
        assert refused.headers[hdrs.RETRY_AFTER] == "20"
        assert await refused.text() == (
            "This user opened connections faster than allowed (3 at once, then 3 a minute); retry after 20 s."
        )
        with pytest.raises(aiohttp.WSServerHandshakeError) as upgrade:
            await session.ws_connect(service.ws_hub_url, headers=_auth(token))
        assert upgrade.value.status == 429
        assert upgrade.value.headers is not None
        assert upgrade.value.headers[hdrs.RETRY_AFTER] == "20"
        assert _limited("negotiates_per_user") == before + 2

        assert (await _negotiate(session, service, token_factory.dispatcher())).status == 200  # another user
        # The connections already open are not touched.
        await ws.send_str('{"type":6}\x1e')
        assert not ws.closed
        await ws.close()
