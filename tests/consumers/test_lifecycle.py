"""Start, graceful stop, and the supervisor that never leaves the stream without a consumer.

The phases (prefill, grace, backlog) and losing the place in the log are in ``test_continuity``.
"""

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
    """Run the instance once: the stream exists and its position is saved (the instance "restarts")."""
    async with running(settings, RecordingLog()):
        pass


async def test_zero_grace_consumes_at_once(broker_settings: Settings, sender: RecordingLog) -> None:
    async with running(broker_settings, sender, wait=False) as consumer:
        await asyncio.wait_for(consumer.wait_consuming(), timeout=5)
        await asyncio.wait_for(consumer.wait_caught_up(), timeout=5)


async def test_graceful_stop_finishes_the_current_entry_and_a_restart_delivers_the_rest(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    await _declare_then_leave(broker_settings)
    bodies = [recommendation_ready(region="north-america", configVersion=i) for i in range(30)]
    for body in bodies:
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(body))
    consumer = EventConsumer(broker_settings, sender)
    stopping: list[asyncio.Task[None]] = []

    def stop_during_fifth(_sent: Sent, call: int) -> None:
        if call == 5:  # SIGTERM arrives while the fifth event is being handed off
            stopping.append(asyncio.get_running_loop().create_task(consumer.stop()))

    sender.hook = stop_during_fifth
    await consumer.start()
    await sender.wait_for_count(5)
    await asyncio.wait_for(stopping[0], timeout=10)
    assert sender.job_ids() == [body["jobId"] for body in bodies[:5]]
    assert not consumer.is_connected
    assert sender.problems == []
    # The position saved at stop is the fifth event's: a restart delivers the other 25, once each.
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


async def test_watchdog_restores_a_consumer_lost_without_notice(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    restarts_before = metric("realtime_consumer_restarts_total", cause="watchdog")
    before, meanwhile, after = (recommendation_ready(region="north-america") for _ in range(3))
    exchange = broker_settings.recommendations_exchange
    async with running(broker_settings, sender, watchdog_interval_seconds=0.3) as consumer:
        await broker_admin.publish(exchange, orjson.dumps(before))
        await sender.wait_for_count(1)
        # Fault injection: the consumer disappears with no basic.cancel from the broker and no
        # callback (the aio-pika #334 / #231 class of bug). Only the periodic check can notice.
        channel, tag = consumer._link._consumer_channel, consumer._link._consumer_tag
        assert channel is not None
        assert tag is not None
        await channel.basic_cancel(tag)
        await broker_admin.publish(exchange, orjson.dumps(meanwhile))  # while nobody reads
        await eventually(
            lambda: metric("realtime_consumer_restarts_total", cause="watchdog") == restarts_before + 1,
            what="watchdog re-established the consumer",
        )
        assert consumer.is_consuming
        await broker_admin.publish(exchange, orjson.dumps(after))
        await sender.wait_for_count(3)
    # Re-attached after the last entry read: nothing missed, nothing twice, no reset.
    assert sender.job_ids() == [before["jobId"], meanwhile["jobId"], after["jobId"]]
    assert sender.resets == []


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
        channel = consumer._link._consumer_channel
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
    assert sender.resets == []


async def test_a_publish_channel_whose_confirms_never_come_is_replaced(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    """RabbitMQ 3.10.8 can leave a channel that published to a stream right after a node restart
    with a stale stream leader: that publish, and every later one on the channel, is never
    confirmed, while a new channel publishes at once (see the kill test in ``test_broker_faults``).
    Re-attaching writes a marker on the publish channel; a marker that times out must not leave
    the instance retrying on the same stuck channel for ever."""
    event = recommendation_ready(region="north-america")
    async with running(broker_settings, sender, operation_timeout_seconds=1.0) as consumer:
        link = consumer._link
        stuck = link._publish_channel
        assert stuck is not None
        underlay = await stuck.get_underlay_channel()

        async def no_confirm(_frame: object) -> None:
            """The broker's confirms for this channel stop coming (the client drops them here)."""

        underlay._on_confirm_frame = no_confirm  # type: ignore[attr-defined]
        await link.restart_consumer("test")
        await eventually(
            lambda: link.is_consuming and link._publish_channel is not stuck,
            what="re-attached on a new publish channel",
        )
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(event))
        await sender.wait_for_count(1)
    assert sender.job_ids() == [event["jobId"]]
