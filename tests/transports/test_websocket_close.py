"""The server's side of a WebSocket close handshake (RFC 6455 §5.5.1, §7.1.1).

When the server ends a connection (shutdown, a protocol error, a token that expired), it sends its
Close frame and keeps the TCP connection open until the client's Close frame comes back (or the close
timeout passes): "the underlying TCP connection, in most normal cases, SHOULD be closed first by the
server" *after* the handshake. Closing the socket right after its own Close frame races the client's
reply: a client busy for a moment finds the socket gone when it answers and reports 1006 (abnormal)
instead of 1000 — the flaky SIGTERM test of ``tests/app/test_cli.py``.
"""

from __future__ import annotations

import asyncio

import aiohttp

from tests.support.server import RunningService
from tests.support.tokens import TokenFactory
from tests.support.wire import RawHubClient

# A client busy elsewhere (rendering, a GC pause, a loaded CI machine) between reading the SignalR
# Close message and the WebSocket Close frame behind it: the situation itself, not a wait for an event.
_BUSY_CLIENT_PAUSE = 0.3


async def test_a_client_busy_when_the_server_closes_still_sees_a_clean_close(
    service: RunningService, token_factory: TokenFactory
) -> None:
    async with aiohttp.ClientSession() as session:
        clients = [
            (await RawHubClient.connect(session, service.hub_url, token_factory.dispatcher()))[0]
            for _ in range(3)
        ]
        service.runtime.handler.close_all(allow_reconnect=True, reason="shutdown")
        for client in clients:
            assert await client.next_of_type(7) == {"type": 7, "allowReconnect": True}
        await asyncio.sleep(_BUSY_CLIENT_PAUSE)
        codes = [await client.wait_closed() for client in clients]
        assert codes == [1000, 1000, 1000]
        for _ in clients:
            await service.next_closed()


async def test_the_server_answers_a_client_initiated_close(
    service: RunningService, token_factory: TokenFactory
) -> None:
    async with aiohttp.ClientSession() as session:
        client, _ = await RawHubClient.connect(session, service.hub_url, token_factory.dispatcher())
        assert await client.ws.close() is True
        assert client.ws.close_code == 1000
        await service.next_closed()
        assert len(service.runtime.manager) == 0
