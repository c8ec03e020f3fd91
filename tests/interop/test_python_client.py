"""Independent Python clients from PyPI: ``pysignalr`` (WebSockets) and ``signalrcore`` (WS and SSE).

Both negotiate without ``negotiateVersion`` (version 0) and use the connection id as token.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest
from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.types import HttpTransportType

from tests.support.server import RunningService, hub_settings, running_service
from tests.support.tokens import TokenFactory

EVENT = {
    "type": "RecommendationReady",
    "jobId": "6f1d7a64-4a8c-4d52-9a51-0f3c2a1b9e77",
    "region": "north-america",
}


async def test_pysignalr_joins_and_receives(service: RunningService, token_factory: TokenFactory) -> None:
    token = token_factory.dispatcher(["north-america"])
    # pysignalr only applies its token factory after the first socket, so the header carries it.
    client = SignalRClient(service.hub_url, headers={"Authorization": f"Bearer {token}"})
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[None] = loop.create_future()
    joined: asyncio.Future[CompletionMessage] = loop.create_future()
    received: asyncio.Future[Any] = loop.create_future()

    async def on_open() -> None:
        opened.set_result(None)

    async def on_joined(message: Any) -> None:
        joined.set_result(message)

    async def on_event(arguments: Any) -> None:
        received.set_result(arguments)

    client.on_open(on_open)
    client.on("RecommendationReady", on_event)
    runner = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(opened, 10)
        await client.send("JoinDispatchGroup", ["north-america"], on_invocation=on_joined)  # type: ignore[list-item]
        completion = await asyncio.wait_for(joined, 10)
        assert completion.error is None
        assert (
            service.runtime.lifetime.send_groups(["dispatch/north-america"], "RecommendationReady", EVENT)
            == 1
        )
        assert await asyncio.wait_for(received, 10) == [EVENT]
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents"])
async def test_signalrcore_joins_and_receives(
    service: RunningService, token_factory: TokenFactory, transport: str
) -> None:
    """signalrcore (PyPI), a threaded client, on the transports it can authenticate on.

    Its Long Polling client sends no Authorization header on polls (signalrcore 1.0.2), so it cannot
    use a hub that requires authentication; that transport is covered by the official JS client.
    """
    # signalrcore's stop() joins its reader thread, which only wakes on the next server frame: a short
    # keep-alive keeps the test quick.
    async with running_service(hub_settings(token_factory, hub_keep_alive_interval=1.0)) as service:
        await _signalrcore_round_trip(service, token_factory, transport)


async def _signalrcore_round_trip(
    service: RunningService, token_factory: TokenFactory, transport: str
) -> None:
    token = token_factory.dispatcher(["north-america"])
    opened, joined, received = threading.Event(), threading.Event(), threading.Event()
    payloads: list[Any] = []

    def on_event(arguments: Any) -> None:
        payloads.append(arguments)
        received.set()

    def start() -> Any:
        builder = HubConnectionBuilder().with_url(
            service.hub_url,
            options={"access_token_factory": lambda: token, "transport": HttpTransportType(transport)},
        )
        connection = builder.build()
        connection.on_open(opened.set)
        connection.on("RecommendationReady", on_event)
        connection.start()
        return connection

    connection = await asyncio.to_thread(start)
    try:
        assert await asyncio.to_thread(opened.wait, 10)
        await asyncio.to_thread(
            connection.send, "JoinDispatchGroup", ["north-america"], lambda _: joined.set()
        )
        assert await asyncio.to_thread(joined.wait, 10)
        assert service.runtime.lifetime.group_size("dispatch/north-america") == 1
        service.runtime.lifetime.send_groups(["dispatch/north-america"], "RecommendationReady", EVENT)
        assert await asyncio.to_thread(received.wait, 10)
        assert payloads == [[EVENT]]
    finally:
        await asyncio.to_thread(connection.stop)
