"""Broker-side faults on a private RabbitMQ node: all connections closed, node SIGKILLed and restarted.

The consumer recovers, and messages published meanwhile are delivered exactly once. The checker idea
of Jepsen's queue tests (https://jepsen.io): everything the broker confirmed is handed to the hub
once — none lost, none duplicated — and in order. The stream survives the restart with its offsets,
so the consumer continues after the last entry it read and the hub is never reset.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

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
    """The consumer delivers exactly what the stream holds after the crash, in order, once each.

    The stream itself is the reference, read back after the run: RabbitMQ 3.10.8 sometimes loses
    what is published right after an unclean restart. Seen two ways: a batch confirmed and missing
    from the stream (12 of about 70 kill/restart cycles on the test machine, more often under load),
    and a channel whose first publish is never confirmed at all, nor anything after it on that
    channel (CI hung on it once; here 1 run in about 30, ``rabbitmqctl list_channels`` showing it
    unconfirmed for minutes while a new connection published at once). That is the broker's loss,
    not the consumer's; what the consumer controls — everything confirmed before the crash, and
    everything the stream kept — is checked exactly, and a publish after the restart is given a
    bounded wait.
    """
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
        await _publish_after_restart(private_broker.url, settings.recommendations_exchange, during)
        await eventually(lambda: consumer.is_consuming, timeout=30, what="consuming again after restart")
        await _publish_after_restart(private_broker.url, settings.recommendations_exchange, after)
        stored = await _settled_stream(private_broker.url, settings)
        last = stored[-1]
        await sender.wait_until(lambda sent: last in {s.argument["jobId"] for s in sent}, 30)
    # The instance's saved position was its first marker, so every event in the stream is backlog.
    # A publish given up on may still land in the stream after the last sentinel: only what the
    # stream held up to it is compared, and nothing of it may come twice.
    delivered = sender.job_ids()
    assert delivered[: delivered.index(last) + 1] == stored
    assert not set(delivered[delivered.index(last) + 1 :]) & set(stored)
    assert set(_ids(before)) <= set(stored)  # confirmed before the crash: kept and delivered
    assert sender.resets == []
    admin = BrokerAdmin(private_broker.url)
    await admin.open()
    try:
        assert await admin.depth(settings.dead_letter_queue) == 0
    finally:
        await admin.close()


async def _publish_after_restart(
    url: str, exchange: str, bodies: list[dict[str, object]], *, confirm_within: float = 5.0
) -> None:
    """Publish each body, giving each confirm a bounded wait; after one that does not come, go on
    on a new connection (the stuck channel stays stuck, see the kill test's docstring). Whether
    each body made it into the stream is read back from the stream, not assumed."""
    admin: BrokerAdmin | None = None
    try:
        for body in bodies:
            if admin is None:
                admin = BrokerAdmin(url)
                await admin.open()
            try:
                await admin.publish(exchange, orjson.dumps(body), timeout=confirm_within)
            except TimeoutError:
                print(f"broker: no confirm within {confirm_within} s; going on on a new connection")
                await _close_quietly(admin)
                admin = None
    finally:
        if admin is not None:
            await _close_quietly(admin)


async def _close_quietly(admin: BrokerAdmin) -> None:
    with contextlib.suppress(TimeoutError, *CONNECTION_EXCEPTIONS):
        async with asyncio.timeout(5):
            await admin.close()


async def _settled_stream(url: str, settings: Settings, *, attempts: int = 6) -> list[str]:
    """The job ids of every event in the stream, up to a sentinel the stream is seen to hold.

    A sentinel is published and looked for in the stream; one the broker lost is replaced by
    another, each on a new connection (see the test's docstring), so this returns once the stream
    is readable to its end.
    """
    for _ in range(attempts):
        admin = BrokerAdmin(url)
        await admin.open()
        try:
            sentinel = recommendation_ready(region="sentinel")
            try:
                await admin.publish(settings.recommendations_exchange, orjson.dumps(sentinel), timeout=5)
            except TimeoutError:
                continue
            marker = str(sentinel["jobId"]).encode()

            def is_sentinel(message: AbstractIncomingMessage, marker: bytes = marker) -> bool:
                return marker in message.body

            entries = await admin.read_stream_until(settings.stream_name, is_sentinel, timeout=5)
            if entries is not None:
                return [
                    body["jobId"]
                    for body in (_json(message.body) for message in entries)
                    if isinstance(body, dict) and body.get("type") == "RecommendationReady"
                ]
        finally:
            await _close_quietly(admin)
    raise AssertionError(f"none of {attempts} sentinels published after the restart showed up in the stream")


def _json(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _ids(bodies: list[dict[str, object]]) -> list[object]:
    return [body["jobId"] for body in bodies]
