"""Start, grace period, graceful stop, and the watchdog that never leaves the queue without a consumer."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from config.settings import Settings
from consumers import EventConsumer
from publisher import recommendation_ready
from tests.consumers.conftest import RecordingLog, Sent, eventually, metric, running
from tests.support.broker import BrokerAdmin, TcpProxy
from tests.support.broker_fixtures import SettingsFactory

pytestmark = pytest.mark.broker


async def _declare_then_leave(settings: Settings) -> None:
    """Run an instance once so its durable queue exists, then stop it (the instance "restarts")."""
    async with running(settings, RecordingLog()):
        pass


async def test_restarted_instance_waits_for_the_grace_period_before_draining_its_backlog(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    await _declare_then_leave(broker_settings)
    backlog = [recommendation_ready(region="north-america") for _ in range(3)]
    for body in backlog:  # published while the instance is down: they wait in its queue
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(body))
    grace = 1.0
    settings = broker_settings.model_copy(update={"consume_grace_seconds": grace})
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with running(settings, sender, wait=False) as consumer:
        await asyncio.wait_for(consumer.wait_connected(), timeout=10)
        assert consumer.is_connected  # ready for hub clients to reconnect and rejoin...
        assert not consumer.is_consuming  # ...but not yet draining into empty groups
        assert sender.sent == []
        await sender.wait_for_count(3)
        elapsed = loop.time() - started
    assert elapsed >= grace
    assert sender.job_ids() == [body["jobId"] for body in backlog]


async def test_zero_grace_consumes_at_once(broker_settings: Settings, sender: RecordingLog) -> None:
    async with running(broker_settings, sender, wait=False) as consumer:
        await asyncio.wait_for(consumer.wait_consuming(), timeout=5)


async def test_graceful_stop_finishes_the_current_message_and_leaves_the_rest_queued(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    await _declare_then_leave(broker_settings)
    bodies = [recommendation_ready(region="north-america", configVersion=i) for i in range(30)]
    for body in bodies:
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(body))
    consumer = EventConsumer(broker_settings, sender)
    stopping: list[asyncio.Task[None]] = []

    def stop_during_fifth(_sent: Sent, call: int) -> None:
        if call == 5:  # SIGTERM arrives while the fifth message is being handed off
            stopping.append(asyncio.get_running_loop().create_task(consumer.stop()))

    sender.hook = stop_during_fifth
    await consumer.start()
    await sender.wait_for_count(5)
    await asyncio.wait_for(stopping[0], timeout=10)
    assert sender.job_ids() == [body["jobId"] for body in bodies[:5]]
    assert not consumer.is_connected
    # The prefetched, unhandled messages were not acknowledged: they are back in the queue.
    assert await broker_admin.depth(consumer.queue_name) == 25

    second = RecordingLog()
    async with running(broker_settings, second):
        await second.wait_for_count(25)
    assert second.job_ids() == [body["jobId"] for body in bodies[5:]]


async def test_stop_is_bounded_even_while_the_broker_is_unreachable(
    broker_settings_factory: SettingsFactory, tcp_proxy: TcpProxy, sender: RecordingLog
) -> None:
    tcp_proxy.refuse(True)
    settings = broker_settings_factory(rabbitmq_url=tcp_proxy.url, shutdown_timeout_seconds=2.0)
    consumer = EventConsumer(settings, sender)
    await consumer.start()
    await tcp_proxy.wait_attempts(1)
    await asyncio.wait_for(consumer.stop(), timeout=3)
    assert not consumer.is_connected


async def test_start_twice_is_an_error_and_stop_is_idempotent(
    broker_settings: Settings, sender: RecordingLog
) -> None:
    never_started = EventConsumer(broker_settings, sender)
    await never_started.stop()
    async with running(broker_settings, sender) as consumer:
        with pytest.raises(RuntimeError, match="twice"):
            await consumer.start()
    await consumer.stop()
    assert not consumer.is_consuming


async def test_queue_deleted_by_the_broker_is_redeclared_and_consumed_again(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    restarts_before = metric("realtime_consumer_restarts_total", cause="cancelled")
    body = recommendation_ready(region="north-america")
    async with running(broker_settings, sender) as consumer:
        await broker_admin.delete(queues=[consumer.queue_name])  # broker sends basic.cancel
        await eventually(
            lambda: metric("realtime_consumer_restarts_total", cause="cancelled") == restarts_before + 1,
            what="consumer re-established after basic.cancel",
        )
        assert consumer.is_consuming
        assert await broker_admin.consumers(consumer.queue_name) == 1
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(body))
        await sender.wait_for_count(1)
    assert sender.sent[0].argument == body


async def test_watchdog_restores_a_consumer_lost_without_notice(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    restarts_before = metric("realtime_consumer_restarts_total", cause="watchdog")
    body = recommendation_ready(region="north-america")
    async with running(broker_settings, sender, watchdog_interval_seconds=0.3) as consumer:
        # Fault injection: the consumer disappears with no basic.cancel from the broker and no
        # callback (the aio-pika #334 / #231 class of bug). Only the periodic check can notice.
        channel, tag = consumer._consumer_channel, consumer._consumer_tag
        assert channel is not None
        assert tag is not None
        await channel.basic_cancel(tag)
        await eventually(
            lambda: metric("realtime_consumer_restarts_total", cause="watchdog") == restarts_before + 1,
            what="watchdog re-established the consumer",
        )
        assert await broker_admin.consumers(consumer.queue_name) == 1
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(body))
        await sender.wait_for_count(1)


async def test_channel_error_is_recovered_and_nothing_is_lost(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    restarts_before = metric("realtime_consumer_restarts_total", cause="channel_closed")
    first, second = recommendation_ready(region="north-america"), recommendation_ready(region="north-america")
    async with running(broker_settings, sender) as consumer:
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(first))
        await sender.wait_for_count(1)
        # Fault injection: acknowledging an unknown delivery tag is a channel error (406
        # PRECONDITION_FAILED) — the broker closes the consume channel under the consumer.
        channel = consumer._consumer_channel
        assert channel is not None
        await channel.basic_ack(delivery_tag=99_999)
        await eventually(
            lambda: metric("realtime_consumer_restarts_total", cause="channel_closed") == restarts_before + 1,
            what="consumer re-established after a channel error",
        )
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(second))
        await sender.wait_for_count(2)
        assert consumer.is_connected
    assert sender.job_ids() == [first["jobId"], second["jobId"]]
