"""The comparison servers' feed (``bench.servers.feed.Feed``) with ``keep_stream``: the ``raw-logged``
floor reads its classic queue while the broker writes every event to a stream as well, as it does for
the service, which keeps that stream as its log. The stream must really be written, or ``raw-logged``
would measure ``raw`` under another name."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from bench.servers.feed import Feed
from tests.support.broker import BrokerAdmin, existing_queues

pytestmark = pytest.mark.broker


async def test_the_kept_stream_holds_every_event_the_classic_queue_delivered(
    broker_url: str, broker_admin: BrokerAdmin
) -> None:
    name = f"test.feed.{uuid.uuid4().hex[:8]}"
    exchange, queue, stream = f"{name}.recommendations", f"{name}.queue", f"{name}.log"
    bodies = [orjson.dumps({"region": f"region-{index}"}) for index in range(3)]
    seen: list[bytes] = []
    all_seen = asyncio.Event()

    def handler(body: bytes) -> None:
        seen.append(body)
        if len(seen) == len(bodies):
            all_seen.set()

    feed = Feed(broker_url, exchange, queue, None, handler, keep_stream=stream)
    try:
        await feed.start()
        for body in bodies:
            await broker_admin.publish(exchange, body)
        await asyncio.wait_for(all_seen.wait(), 10)
        assert seen == bodies
        entries = await broker_admin.read_stream(stream, len(bodies))
        assert [message.body for _, message in entries] == bodies
    finally:
        await feed.stop()
        await broker_admin.delete(queues=[queue, stream], exchanges=[exchange])
    assert await existing_queues(broker_url, [queue, stream]) == []
