"""What an open WebSocket keeps alive on the server: the coroutine frames awaiting it for its whole life.

Every coroutine between aiohttp's request handler and the socket's read loop stays alive as long as
the socket (a frame, its locals, its coroutine object: ~0.2–0.5 KB per connection each). A refusal
middleware, a CORS middleware that awaited, and routing coroutines (``_get``, ``_serve``, a
``bound_contextvars`` context manager) made the service's idle WebSocket ~1.5 KB heavier than it
needs to be (issue 12, memory per connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import hdrs
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.runtime import HUB
from service.transports.websockets import WebSocketSink
from tests.support.server import hub_settings
from tests.support.tokens import TokenFactory
from tests.support.waiting import eventually

RS = "\x1e"


def _chain(task: asyncio.Task[Any]) -> Iterator[Any]:
    """The coroutines a task is suspended in, outermost first."""
    awaited: Any = task.get_coro()
    while awaited is not None and hasattr(awaited, "cr_code"):
        yield awaited
        awaited = awaited.cr_await


def _ours(coroutine: Any) -> bool:
    frame = coroutine.cr_frame
    return frame is not None and str(frame.f_globals.get("__name__", "")).startswith("service.")


async def test_an_open_websocket_keeps_only_the_endpoint_and_the_read_loop_frames(
    token_factory: TokenFactory,
) -> None:
    async with _open_websocket(token_factory) as (_client, ws):
        assert (await ws.receive()).data == "{}" + RS  # the socket is open and past its handshake

        chains = [list(_chain(task)) for task in asyncio.all_tasks()]
        serving = [chain for chain in chains if any(c.__qualname__ == "serve_websocket" for c in chain)]
        assert len(serving) == 1
        ours = [coroutine.__qualname__ for coroutine in serving[0] if _ours(coroutine)]
        assert ours == ["HubEndpoint.connect", "serve_websocket"]
        # No middleware at all: with one, aiohttp wraps every handler in one more coroutine
        # (``_fix_request_current_app``) that stays alive under the socket too.
        assert not any("_fix_request_current_app" in c.__qualname__ for c in serving[0])


async def test_an_open_websocket_keeps_one_slotted_object_for_its_sink_mask_check_and_stall_watch(
    token_factory: TokenFactory,
) -> None:
    """The sink is also the transport's protocol (the mask check) and keeps the send timeout's
    bookkeeping: one object per socket, with slots only (a mixin without ``__slots__`` would give
    every instance a ``__dict__`` again)."""
    async with _open_websocket(token_factory) as (client, ws):
        assert (await ws.receive()).data == "{}" + RS

        (connection,) = list(client.app[HUB].manager)
        sink = connection.sink
        assert isinstance(sink, WebSocketSink)
        assert not hasattr(sink, "__dict__")
        transports = [request.transport for request in _open_requests()]
        assert any(transport is not None and transport.get_protocol() is sink for transport in transports)


async def test_an_idle_websocket_keeps_nothing_of_the_last_message_it_received(
    token_factory: TokenFactory,
) -> None:
    """The read loop waits in ``receive()`` for as long as the client sends nothing (hours): the message
    before, here the handshake, must not stay alive in its frame meanwhile (~0.3 KB per connection)."""
    async with _open_websocket(token_factory) as (_client, ws):
        assert (await ws.receive()).data == "{}" + RS  # the handshake was read and answered

        (serving,) = [
            c for task in asyncio.all_tasks() for c in _chain(task) if c.__qualname__ == "serve_websocket"
        ]
        # Back in receive() once the handshake's handling returned (it may still be on its way there).
        await eventually(lambda: serving.cr_await is not None and "message" not in serving.cr_frame.f_locals)


def _open_requests() -> Iterator[Any]:
    """The requests of the WebSocket handlers still running (their coroutines' ``request`` locals)."""
    for task in asyncio.all_tasks():
        for coroutine in _chain(task):
            request = coroutine.cr_frame.f_locals.get("request") if coroutine.cr_frame else None
            if request is not None:
                yield request


@contextlib.asynccontextmanager
async def _open_websocket(token_factory: TokenFactory) -> AsyncIterator[tuple[TestClient[Any, Any], Any]]:
    """The app with one dispatcher's WebSocket open and its JSON handshake sent (the reply is the
    caller's to read)."""
    client = TestClient(TestServer(create_app(hub_settings(token_factory), consumer_factory=False)))
    await client.start_server()
    try:
        auth = {hdrs.AUTHORIZATION: f"Bearer {token_factory.dispatcher()}"}
        ws = await client.ws_connect("/hub/recommendations", headers=auth)
        await ws.send_str(json.dumps({"protocol": "json", "version": 1}) + RS)
        yield client, ws
        await ws.close()
    finally:
        await client.close()
