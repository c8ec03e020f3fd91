"""Connection management against the shared broker, with a TCP proxy to cut the network.

Broker unreachable at startup, the connection cut with entries in flight (re-attach after the last
entry read: nothing lost, nothing twice), readiness, configuration errors reported once.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from yarl import URL

from broker import BrokerConfigurationError, Topology
from config.settings import Settings
from consumers import EventConsumer
from publisher import recommendation_ready
from tests.consumers.conftest import LogEvents, RecordingLog, Sent, eventually, metric, running
from tests.support.broker import BrokerAdmin, TcpProxy
from tests.support.broker_fixtures import SettingsFactory

pytestmark = pytest.mark.broker


def _bodies(count: int) -> list[dict[str, object]]:
    return [recommendation_ready(region="north-america", configVersion=i) for i in range(count)]


async def _publish(admin: BrokerAdmin, settings: Settings, bodies: list[dict[str, object]]) -> None:
    for body in bodies:
        await admin.publish(settings.recommendations_exchange, orjson.dumps(body))


async def test_start_returns_at_once_and_connects_when_the_broker_appears(
    broker_settings_factory: SettingsFactory,
    tcp_proxy: TcpProxy,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
) -> None:
    tcp_proxy.refuse(True)
    settings = broker_settings_factory(rabbitmq_url=tcp_proxy.url, broker_connect_timeout_seconds=2.0)
    consumer = EventConsumer(settings, sender, reconnect_interval_seconds=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await consumer.start()
    try:
        assert loop.time() - started < 0.5
        await tcp_proxy.wait_attempts(3)
        assert not consumer.is_connected
        assert not consumer.is_consuming
        assert metric("realtime_broker_connected") == 0
        tcp_proxy.refuse(False)
        await asyncio.wait_for(consumer.wait_consuming(), timeout=20)
        assert consumer.is_connected
        assert metric("realtime_broker_connected") == 1
        body = recommendation_ready(region="north-america")
        await broker_admin.publish(settings.recommendations_exchange, orjson.dumps(body))
        await sender.wait_for_count(1)
    finally:
        await consumer.stop()
    assert sender.sent[0].argument == body
    assert not consumer.is_connected


async def test_connection_drop_midstream_reattaches_at_the_last_entry_read(
    broker_settings_factory: SettingsFactory,
    tcp_proxy: TcpProxy,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
    logged: LogEvents,
) -> None:
    settings = broker_settings_factory(rabbitmq_url=tcp_proxy.url, prefetch_count=20)
    bodies = _bodies(80)
    sentinel = recommendation_ready(region="sentinel")
    drops = 0

    def drop_network_on_tenth(_sent: Sent, call: int) -> None:
        nonlocal drops
        if call == 10:
            drops = tcp_proxy.disconnect_all()

    sender.hook = drop_network_on_tenth
    # The last offset read on the old connection, taken when the new one is up (the old channel is
    # closed by then, so nothing more is read from it), and the offsets the consumer attaches at.
    read_before_reconnect: list[int] = []
    logged.on["broker.reconnected"] = lambda _: read_before_reconnect.append(sender.records[-1].offset)
    attached: list[str] = []
    logged.on["consumer.attached"] = lambda fields: attached.append(fields["offset"])
    restarts_before = metric("realtime_consumer_restarts_total", cause="reconnected")
    duplicates_before = metric("realtime_events_duplicate_total")
    async with running(settings, sender) as consumer:
        await _publish(broker_admin, settings, [*bodies, sentinel])
        await sender.wait_until(lambda sent: any(s.argument["jobId"] == sentinel["jobId"] for s in sent), 30)
        assert consumer.is_consuming
    assert drops == 1
    # Exactly once and in order: the prefetched entries the old channel still held were dropped,
    # and the new consumer started right after the last entry that was read.
    assert sender.job_ids() == [body["jobId"] for body in bodies] + [sentinel["jobId"]]
    assert len(read_before_reconnect) == 1
    # At the last entry read, which comes back unchanged (proving the same log) and is not read twice.
    assert attached[1:] == [str(read_before_reconnect[0])]
    assert sender.resets == []
    assert metric("realtime_events_duplicate_total") == duplicates_before  # nothing was read twice
    assert metric("realtime_consumer_restarts_total", cause="reconnected") == restarts_before + 1
    assert await broker_admin.depth(settings.dead_letter_queue) == 0


async def test_readiness_follows_the_connection(
    broker_settings_factory: SettingsFactory, tcp_proxy: TcpProxy, sender: RecordingLog
) -> None:
    settings = broker_settings_factory(rabbitmq_url=tcp_proxy.url)
    async with running(settings, sender) as consumer:
        assert consumer.is_connected
        assert consumer.is_consuming
        tcp_proxy.refuse(True)
        tcp_proxy.disconnect_all()
        await eventually(lambda: not consumer.is_connected, what="disconnected")
        assert not consumer.is_consuming
        assert metric("realtime_broker_connected") == 0
        assert metric("realtime_broker_consuming") == 0
        await tcp_proxy.wait_attempts(2)  # aio-pika keeps reconnecting meanwhile
        tcp_proxy.refuse(False)
        await asyncio.wait_for(consumer.wait_consuming(), timeout=20)
        assert consumer.is_connected
        assert metric("realtime_broker_consuming") == 1


async def test_wrong_credentials_are_reported_once_and_not_retried(
    broker_settings_factory: SettingsFactory, broker_url: str, sender: RecordingLog
) -> None:
    url = str(URL(broker_url).with_password("definitely-wrong"))
    settings = broker_settings_factory(rabbitmq_url=url)
    reported: list[BrokerConfigurationError] = []
    done = asyncio.get_running_loop().create_future()

    def on_fatal(error: BrokerConfigurationError) -> None:
        reported.append(error)
        done.set_result(None)

    consumer = EventConsumer(settings, sender, on_fatal=on_fatal)
    await consumer.start()
    try:
        await asyncio.wait_for(done, timeout=15)
    finally:
        await consumer.stop()
    assert len(reported) == 1
    assert consumer.fatal_error is reported[0]
    assert "RABBITMQ_URL" in str(reported[0])
    assert "definitely-wrong" not in str(reported[0])
    assert not consumer.is_connected


async def test_unknown_vhost_is_a_configuration_error(
    broker_settings_factory: SettingsFactory, broker_url: str, sender: RecordingLog
) -> None:
    url = str(URL(broker_url).with_path(f"/no-such-vhost-{uuid.uuid4().hex[:6]}"))
    settings = broker_settings_factory(rabbitmq_url=url)
    done: asyncio.Future[BrokerConfigurationError] = asyncio.get_running_loop().create_future()
    consumer = EventConsumer(settings, sender, on_fatal=done.set_result)
    await consumer.start()
    try:
        error = await asyncio.wait_for(done, timeout=15)
    finally:
        await consumer.stop()
    assert "vhost" in str(error)


@pytest.mark.parametrize(
    "conflict",
    [
        "position-queue-arguments",
        "position-queue-type",
        "dead-letter-queue-type",
        "exchange-type",
        "stream-retention",
        "stream-not-a-stream",
    ],
)
async def test_conflicting_declarations_are_one_clear_configuration_error(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin, conflict: str
) -> None:
    topology = Topology.from_settings(broker_settings)
    channel = await broker_admin.channel()
    if conflict == "position-queue-arguments":
        await channel.declare_queue(topology.position_queue, durable=True, arguments={"x-expires": 120_000})
        expected = "QUEUE_TYPE / QUEUE_EXPIRES_MS"
    elif conflict == "position-queue-type":
        await channel.declare_queue(
            topology.position_queue,
            durable=True,
            arguments={**topology.position_queue_arguments(), "x-queue-type": "quorum"},
        )
        expected = "QUEUE_TYPE / QUEUE_EXPIRES_MS"
    elif conflict == "dead-letter-queue-type":
        await channel.declare_queue(
            topology.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        expected = "DEAD_LETTER_QUEUE / QUEUE_TYPE"
    elif conflict == "exchange-type":
        await channel.declare_exchange(broker_settings.assignments_exchange, "fanout", durable=True)
        expected = "durable topic exchange"
    elif conflict == "stream-retention":  # the broker compares x-max-age as a string: "2h" is not "1h"
        await channel.declare_queue(
            topology.stream, durable=True, arguments={**topology.stream_arguments(), "x-max-age": "2h"}
        )
        expected = "STREAM_MAX_AGE / STREAM_MAX_BYTES / STREAM_SEGMENT_BYTES"
    else:
        await channel.declare_queue(topology.stream, durable=True)  # a classic queue of that name
        expected = "STREAM_MAX_AGE / STREAM_MAX_BYTES / STREAM_SEGMENT_BYTES"
    reported: list[BrokerConfigurationError] = []
    done = asyncio.get_running_loop().create_future()

    def on_fatal(error: BrokerConfigurationError) -> None:
        reported.append(error)
        done.set_result(None)

    consumer = EventConsumer(broker_settings, sender, on_fatal=on_fatal, watchdog_interval_seconds=0.2)
    await consumer.start()
    try:
        await asyncio.wait_for(done, timeout=15)
        # Given time to retry (five watchdog intervals), it does not: reported exactly once. (An
        # absence has no event to await.)
        await asyncio.sleep(1.0)
    finally:
        await consumer.stop()
    assert len(reported) == 1
    assert expected in str(reported[0])
    assert "PRECONDITION_FAILED" in str(reported[0])
    assert not consumer.is_connected
    assert not consumer.is_consuming
