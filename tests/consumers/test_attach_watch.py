"""The "attached beyond the end" watch must not fire on a quiet stream.

A stream where nothing is published after an instance started holds only that instance's marker.
The marker arrives at once — possibly before ``basic.consume`` has even returned its consumer tag
(seen with uvloop in the benchmark) — and nothing after it. That is a healthy, idle log, not a
recreated one: no reset, no restart.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aio_pika.queue import Queue

from config.settings import Settings

from .conftest import RecordingLog, running


async def test_a_quiet_stream_after_start_is_not_taken_for_a_recreated_one(
    broker_settings: Settings, sender: RecordingLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    consume = Queue.consume

    async def slow_consume_ok(self: Queue, *args: Any, **kwargs: Any) -> Any:
        tag = await consume(self, *args, **kwargs)
        await asyncio.sleep(0.1)  # the first delivery is handled before the caller learns the tag
        return tag

    monkeypatch.setattr(Queue, "consume", slow_consume_ok)
    timeout = 0.3
    async with running(broker_settings, sender, first_delivery_timeout_seconds=timeout) as consumer:
        assert consumer.is_caught_up
        # Nothing can be awaited for "did not happen": give the watch three times its timeout.
        await asyncio.sleep(3 * timeout)
        assert sender.resets == []
        assert consumer.is_consuming
        assert len(sender.records) == 1  # just the marker, read once
