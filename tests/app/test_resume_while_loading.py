"""A ``Resume`` that reaches an instance still loading its history waits for it, and misses nothing.

Found by the soak (``bench.soak``): clients reconnecting to a restarted instance as soon as its port
opened resumed while the consumer was still reading its history (entries recorded, not delivered,
up to where the instance left off). The resume replayed what was loaded so far and joined; the rest
of the loaded stretch was never sent to it, yet it was told ``recovered: true``, and its position
moved past the gap with the next live event. Here a stand-in consumer loads the history by hand
(the hub's side of the wiring is what is under test: ``create_app`` and the journal).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestClient, TestServer

from config.settings import Settings
from consumers.ports import EventLog
from schemas.log import LogRecord
from service.app import create_app
from service.write_batch import WriteBatch
from tests.support.server import hub_settings
from tests.support.tokens import TokenFactory

RS = b"\x1e"
GROUP = "dispatch/north-america"


class LoadingConsumer:
    """Records entries into the hub's log as a starting consumer does; delivers only once caught up."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._caught_up = asyncio.Event()

    @property
    def is_connected(self) -> bool:
        return True

    @property
    def is_consuming(self) -> bool:
        return True

    @property
    def is_caught_up(self) -> bool:
        return self._caught_up.is_set()

    async def wait_caught_up(self) -> None:
        await self._caught_up.wait()

    async def start(self) -> None:
        return None

    async def stop(self, timeout: float | None = None) -> None:
        return None

    def load(self, offset: int) -> None:
        self.log.record(_record(offset))

    def caught_up(self) -> None:
        self._caught_up.set()

    def live(self, offset: int) -> None:
        self.log.record(_record(offset))
        self.log.deliver(_record(offset))


def _record(offset: int) -> LogRecord:
    return LogRecord(
        offset=offset,
        check=f"{offset:08x}",
        target="RecommendationReady",
        groups=(GROUP,),
        payload={"n": offset},
    )


async def _messages(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> list[dict[str, Any]]:
    message = await ws.receive(timeout=timeout)
    data = message.data.encode() if isinstance(message.data, str) else bytes(message.data)
    return [orjson.loads(part) for part in data.split(RS) if part]


async def test_a_resume_during_the_history_load_waits_and_misses_nothing(token_factory: TokenFactory) -> None:
    consumers: list[LoadingConsumer] = []

    def factory(_settings: Settings, log: EventLog, _batch: WriteBatch) -> LoadingConsumer:
        consumers.append(LoadingConsumer(log))
        return consumers[-1]

    client = TestClient(TestServer(create_app(hub_settings(token_factory), consumer_factory=factory)))
    await client.start_server()
    try:
        [consumer] = consumers
        for offset in (1, 2, 3):  # loaded so far
            consumer.load(offset)
        headers = {"Authorization": f"Bearer {token_factory.dispatcher()}"}
        url = "/hub/recommendations"
        async with client.post(
            f"{url}/negotiate?negotiateVersion=1&positions=true", headers=headers
        ) as response:
            token = (await response.json())["connectionToken"]
        ws = await client.ws_connect(f"{url}?positions=true&id={token}", headers=headers)
        await ws.send_bytes(b'{"protocol":"json","version":1}' + RS)
        assert await _messages(ws, timeout=5) == [{}]
        resume = {"type": 1, "invocationId": "r", "target": "Resume", "arguments": [[GROUP], "1:00000001"]}
        await ws.send_bytes(orjson.dumps(resume) + RS)

        # While the history is loading, the Resume is not answered (it was at once, with 2 and 3)…
        answered_at_once: list[dict[str, Any]] = []
        with contextlib.suppress(TimeoutError):
            answered_at_once = await _messages(ws, timeout=1.0)
        # …the load goes on to where this instance left off, then the consumer is live.
        consumer.load(4)
        consumer.load(5)
        consumer.caught_up()
        received = list(answered_at_once)
        while not any(m.get("invocationId") == "r" for m in received):
            received += await _messages(ws, timeout=5)
        consumer.live(6)
        while not any(
            m.get("target") == "RecommendationReady" and m["arguments"][1] == "6:00000006" for m in received
        ):
            received += await _messages(ws, timeout=5)
        await ws.close()
    finally:
        await client.close()

    events = [m["arguments"][1] for m in received if m.get("target") == "RecommendationReady"]
    assert events == ["2:00000002", "3:00000003", "4:00000004", "5:00000005", "6:00000006"]
    [completion] = [m for m in received if m.get("invocationId") == "r"]
    assert completion["result"]["recovered"] is True
    assert completion["result"]["replayed"] == 4
