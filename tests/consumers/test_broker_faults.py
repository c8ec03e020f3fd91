"""Broker-side faults on a private RabbitMQ node: all connections closed, node SIGKILLed and restarted.

The consumer recovers, and messages published meanwhile are delivered exactly once. The checker idea
of Jepsen's queue tests (https://jepsen.io): everything the broker confirmed is handed to the hub
once — none lost, none duplicated — and in order. The stream survives the restart with its offsets,
so the consumer continues after the last entry it read and the hub is never reset.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from config.settings import Settings
from devkit.local_broker import PrivateBroker
from publisher import recommendation_ready
from tests.consumers.conftest import RecordingLog, Sent, eventually, metric, running
from tests.support.broker import BrokerAdmin
from tests.support.broker_fixtures import SettingsFactory

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _bodies(tag: str, count: int) -> list[dict[str, object]]:
    return [recommendation_ready(region=tag, configVersion=i) for i in range(count)]


async def _publish(url: str, exchange: str, bodies: list[dict[str, object]]) -> None:
    admin = BrokerAdmin(url)
    await admin.open()
    try:
        for body in bodies:
            await admin.publish(exchange, orjson.dumps(body))
    finally:
        await admin.close()


async def _declare_then_leave(settings: Settings) -> None:
    """Run the instance once: the stream exists and its position is saved; what is published next
    is its backlog."""
    async with running(settings, RecordingLog()):
        pass


async def test_close_all_connections_midstream_loses_and_duplicates_nothing(
    private_broker: PrivateBroker, private_broker_settings: SettingsFactory, sender: RecordingLog
) -> None:
    settings = private_broker_settings(prefetch_count=25)
    first, later = _bodies("first", 60), _bodies("later", 20)
    closed = asyncio.Event()

    def close_everything_on_tenth(_sent: Sent, call: int) -> None:
        if call == 10:
            task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(private_broker.close_all_connections)
            )
            task.add_done_callback(lambda _: closed.set())

    sender.hook = close_everything_on_tenth
    restarts_before = metric("realtime_consumer_restarts_total", cause="reconnected")
    await _declare_then_leave(settings)
    # Confirmed before the fault, so the test's own publishing connection is not among those closed.
    await _publish(private_broker.url, settings.recommendations_exchange, first)
    async with running(settings, sender) as consumer:
        await asyncio.wait_for(closed.wait(), timeout=30)
        await eventually(lambda: consumer.is_consuming, what="consuming again")
        await _publish(private_broker.url, settings.recommendations_exchange, later)
        await sender.wait_for_count(len(first) + len(later), timeout=30)
    assert sender.job_ids() == [body["jobId"] for body in first + later]
    assert sender.resets == []
    assert metric("realtime_consumer_restarts_total", cause="reconnected") >= restarts_before + 1


async def test_node_killed_and_restarted_loses_and_duplicates_nothing(
    private_broker: PrivateBroker, private_broker_settings: SettingsFactory, sender: RecordingLog
) -> None:
    settings = private_broker_settings(prefetch_count=25)
    before, during, after = _bodies("before", 40), _bodies("during", 15), _bodies("after", 15)

    def crash_on_tenth(_sent: Sent, call: int) -> None:
        if call == 10:
            # SIGKILL while the tenth event is being handed off: its credit never reaches the
            # broker, the prefetched entries behind it are lost with the channel, and 30 confirmed
            # entries are not read yet.
            private_broker.kill()

    sender.hook = crash_on_tenth
    await _declare_then_leave(settings)
    await _publish(private_broker.url, settings.recommendations_exchange, before)
    async with running(settings, sender, reconnect_interval_seconds=0.3) as consumer:
        await eventually(lambda: not private_broker.running, what="node killed")
        await eventually(lambda: not consumer.is_connected, what="loss noticed")
        assert metric("realtime_broker_connected") == 0
        await asyncio.to_thread(private_broker.start)
        # Published as soon as the node is back, racing the consumer's reconnect.
        await _publish(private_broker.url, settings.recommendations_exchange, during)
        await eventually(lambda: consumer.is_consuming, timeout=30, what="consuming again after restart")
        await _publish(private_broker.url, settings.recommendations_exchange, after)
        await sender.wait_for_count(len(before) + len(during) + len(after), timeout=30)
    expected = [body["jobId"] for body in before + during + after]
    assert sender.job_ids() == expected
    assert sender.resets == []
    admin = BrokerAdmin(private_broker.url)
    await admin.open()
    try:
        assert await admin.depth(settings.dead_letter_queue) == 0
    finally:
        await admin.close()
