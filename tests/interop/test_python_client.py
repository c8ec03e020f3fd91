"""A second, independent client: ``pysignalr`` from PyPI (WebSockets, negotiate version 0)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage

from tests.support.server import RunningService
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
            service.runtime.handler.lifetime.send_to_groups(
                ["dispatch/north-america"], "RecommendationReady", EVENT
            )
            == 1
        )
        assert await asyncio.wait_for(received, 10) == [EVENT]
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
