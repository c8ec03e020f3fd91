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
import gc
import socket
import struct

import aiohttp
from aiohttp import web

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


async def test_a_socket_the_client_drops_leaves_no_reference_cycle_behind(
    service: RunningService, token_factory: TokenFactory
) -> None:
    """A reset socket is freed by reference counting, frozen or not (``service.gc_freeze``).

    aiohttp's ``WebSocketResponse.close()`` stores the error of writing the Close frame to a reset
    socket, and that error's traceback holds ``close()``'s frame, which holds the response: ~37
    objects per dropped client that only a full collection frees — a refreeze's ~0.5 s stop at
    10,000 connections (``python -m bench.gc_pause``)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        async with aiohttp.ClientSession() as session:
            client, _ = await RawHubClient.connect(session, service.hub_url, token_factory.dispatcher())
            (serving,) = [task for task in asyncio.all_tasks() if _runs(task, "serve_websocket")]
            sock = client.ws.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        await service.next_closed()
        done, _ = await asyncio.wait([serving], timeout=10)  # the server is through with the socket
        assert done
        del serving, done, client, sock
        gc.collect()
        left = [found for found in gc.garbage if isinstance(found, web.WebSocketResponse)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


def _runs(task: asyncio.Task[object], name: str) -> bool:
    awaited: object = task.get_coro()
    while awaited is not None and hasattr(awaited, "cr_code"):
        if getattr(awaited, "__qualname__", "") == name:
            return True
        awaited = getattr(awaited, "cr_await", None)
    return False
