"""The stream as a shared log: prefill, grace and backlog; re-attaching; losing the place (gap, recreated).

A fresh instance reads recent history without delivering it, up to the marker it wrote at start. A
restarted instance delivers exactly what was published after the position it saved, once its
clients had ``CONSUME_GRACE_SECONDS`` to come back. After any broker trouble it continues after
the last entry it read; when that is impossible (retention removed it, or the stream was deleted
and recreated) the hub is told to reset — and only then.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from broker.topology import Topology
from config.settings import Settings
from consumers.handling import MARKER_HEADER
from consumers.place import GAP_TOLERANCE
from publisher import recommendation_ready
from tests.consumers.conftest import LogEvents, RecordingLog, eventually, metric, running
from tests.support.broker import BrokerAdmin, TcpProxy
from tests.support.broker_fixtures import SettingsFactory

pytestmark = pytest.mark.broker

SHARED = (
    "stream_name",
    "recommendations_exchange",
    "assignments_exchange",
    "dead_letter_exchange",
    "dead_letter_queue",
)


def _bodies(tag: str, count: int) -> list[dict[str, Any]]:
    return [recommendation_ready(region=tag, configVersion=i) for i in range(count)]


def _ids(bodies: list[dict[str, Any]]) -> list[str]:
    return [body["jobId"] for body in bodies]


async def _publish(admin: BrokerAdmin, settings: Settings, bodies: list[dict[str, Any]]) -> None:
    for body in bodies:
        await admin.publish(settings.recommendations_exchange, orjson.dumps(body))


def _another_instance(make: SettingsFactory, settings: Settings, **overrides: Any) -> Settings:
    """Another instance (its own INSTANCE_ID and position queue) on the same stream and exchanges."""
    return make(**{name: getattr(settings, name) for name in SHARED}, **overrides)


# --- phases ---------------------------------------------------------------------------------------


async def test_a_new_instance_records_the_history_and_delivers_only_what_follows_its_marker(
    broker_settings_factory: SettingsFactory, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    first = broker_settings_factory()
    async with running(first, RecordingLog()):  # the stream exists, and has our history
        await _publish(broker_admin, first, history := _bodies("history", 5))
    newcomer = _another_instance(broker_settings_factory, first)
    caught_up_when_recorded: list[tuple[str | None, bool]] = []
    async with running(newcomer, sender, wait=False) as consumer:
        sender.on_record = lambda record: caught_up_when_recorded.append(
            (record.payload["jobId"] if record.payload else None, consumer.is_caught_up)
        )
        await asyncio.wait_for(consumer.wait_caught_up(), timeout=15)
        assert sender.recorded_job_ids() == _ids(history)  # all of it, before being caught up
        await _publish(broker_admin, newcomer, live := _bodies("live", 3))
        await sender.wait_for_count(3)
    assert sender.job_ids() == _ids(live)  # the history was recorded, never delivered
    assert sender.recorded_job_ids() == _ids(history + live)
    # Caught up exactly at its own marker: false for the first instance's marker and the history,
    # true from the newcomer's marker on.
    assert caught_up_when_recorded == [
        (None, False),
        *((job_id, False) for job_id in _ids(history)),
        (None, True),
        *((job_id, True) for job_id in _ids(live)),
    ]


async def test_a_restarted_instance_delivers_exactly_its_backlog_after_the_grace_period(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    async with running(broker_settings, before := RecordingLog()):
        await _publish(broker_admin, broker_settings, earlier := _bodies("earlier", 3))
        await before.wait_for_count(3)
    # Stopped gracefully (its position saved); these are published while it is down.
    await _publish(broker_admin, broker_settings, backlog := _bodies("backlog", 5))
    grace = 1.5
    restarted = broker_settings.model_copy(update={"consume_grace_seconds": grace})
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with running(restarted, sender, wait=False) as consumer:
        await asyncio.wait_for(consumer.wait_caught_up(), timeout=10)
        caught_up_after = loop.time() - started
        assert sender.sent == []  # ready for clients to rejoin, but nothing delivered yet
        await sender.wait_for_count(len(backlog), timeout=15)
        delivered_after = loop.time() - started
        # Everything up to the restarted instance's own marker (the last entry) has been read.
        await sender.wait_for(lambda: len(sender.records) == 1 + 3 + 5 + 1, what="all entries recorded")
    assert caught_up_after < grace <= delivered_after
    assert sender.job_ids() == _ids(backlog)  # exactly the backlog, in order, once
    assert sender.recorded_job_ids() == _ids(earlier + backlog)  # the earlier ones only recorded


async def test_a_retry_of_an_event_delivered_before_a_restart_is_not_delivered_again(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    exchange = broker_settings.recommendations_exchange
    event, later = recommendation_ready(region="emea"), recommendation_ready(region="emea")
    async with running(broker_settings, before := RecordingLog()):
        await broker_admin.publish(exchange, orjson.dumps(event), message_id="m-1")
        await before.wait_for_count(1)
    duplicates_before = metric("realtime_events_duplicate_total")
    await broker_admin.publish(exchange, orjson.dumps(event), message_id="m-1")  # the producer's retry
    await broker_admin.publish(exchange, orjson.dumps(later))
    async with running(broker_settings, sender):
        await sender.wait_for_count(1)
    assert sender.job_ids() == [later["jobId"]]
    assert metric("realtime_events_duplicate_total") == duplicates_before + 1


async def test_stop_during_the_grace_period_is_prompt_and_delivers_nothing(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    async with running(broker_settings, RecordingLog()):
        pass
    await _publish(broker_admin, broker_settings, backlog := _bodies("backlog", 3))
    waiting = broker_settings.model_copy(update={"consume_grace_seconds": 4.0})
    consumer_stopped_in = 0.0
    async with running(waiting, sender, wait=False) as consumer:
        await asyncio.wait_for(consumer.wait_caught_up(), timeout=10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(consumer.stop(), timeout=3)
        consumer_stopped_in = loop.time() - started
    assert consumer_stopped_in < 1.0
    assert sender.sent == []
    # Nothing was delivered, so nothing was skipped: the next start delivers the whole backlog.
    async with running(broker_settings, again := RecordingLog()):
        await again.wait_for_count(3)
    assert again.job_ids() == _ids(backlog)


# --- re-attaching and losing the place ---------------------------------------------------------


async def test_a_reconnect_during_the_grace_period_is_not_mistaken_for_a_recreated_stream(
    broker_settings_factory: SettingsFactory,
    tcp_proxy: TcpProxy,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
) -> None:
    settings = broker_settings_factory(rabbitmq_url=tcp_proxy.url)
    async with running(settings, RecordingLog()):
        pass
    await _publish(broker_admin, settings, backlog := _bodies("backlog", 3))
    waiting = settings.model_copy(update={"consume_grace_seconds": 3.0})
    async with running(waiting, sender, wait=False, first_delivery_timeout_seconds=1.0) as consumer:
        await asyncio.wait_for(consumer.wait_caught_up(), timeout=10)
        assert tcp_proxy.disconnect_all() == 1  # while it waits out the grace period
        await sender.wait_for_count(3, timeout=15)
        await _publish(broker_admin, settings, later := _bodies("later", 2))
        await sender.wait_for_count(5)
    assert sender.job_ids() == _ids(backlog + later)
    assert sender.resets == []


async def test_stream_deleted_while_consuming_is_recreated_and_read_from_its_start(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    cancelled_before = metric("realtime_consumer_restarts_total", cause="cancelled")
    recreated_before = metric("realtime_log_resets_total", reason="recreated")
    async with running(broker_settings, sender, first_delivery_timeout_seconds=1.0) as consumer:
        await _publish(broker_admin, broker_settings, before := _bodies("before", 4))
        await sender.wait_for_count(4)
        # The broker cancels the consumer; it re-declares the stream (empty, offsets from 0) and
        # attaches after the last entry it read, where nothing arrives: the stream is new.
        await broker_admin.delete(queues=[broker_settings.stream_name])
        assert await sender.wait_for_reset() == ["recreated"]
        await eventually(lambda: consumer.is_consuming, what="consuming the new stream")
        await _publish(broker_admin, broker_settings, after := _bodies("after", 3))
        await sender.wait_for_count(7)
    assert sender.job_ids() == _ids(before + after)
    assert sender.resets == ["recreated"]
    # The history after the reset is the new stream's, read from its first entry (offset 0).
    assert sender.records[0].offset == 0
    assert sender.recorded_job_ids() == _ids(after)
    assert metric("realtime_consumer_restarts_total", cause="cancelled") == cancelled_before + 1
    assert metric("realtime_log_resets_total", reason="recreated") == recreated_before + 1


async def test_after_a_recreated_stream_a_reconnect_continues_after_the_last_entry(
    broker_settings_factory: SettingsFactory,
    tcp_proxy: TcpProxy,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
    logged: LogEvents,
) -> None:
    settings = broker_settings_factory(rabbitmq_url=tcp_proxy.url)
    # The last offset read on the old connection, taken when the new one is up (the old channel is
    # closed by then, so nothing more is read from it), and the offsets the consumer attaches at.
    read_before_reconnect: list[int] = []
    logged.on["broker.reconnected"] = lambda _: read_before_reconnect.append(sender.records[-1].offset)
    attached: list[str] = []
    logged.on["consumer.attached"] = lambda fields: attached.append(fields["offset"])
    async with running(settings, sender, first_delivery_timeout_seconds=1.0) as consumer:
        await _publish(broker_admin, settings, before := _bodies("before", 2))
        await sender.wait_for_count(2)
        await broker_admin.delete(queues=[settings.stream_name])
        await sender.wait_for_reset()
        await eventually(lambda: consumer.is_consuming, what="consuming the new stream")
        await _publish(broker_admin, settings, after := _bodies("after", 2))
        await sender.wait_for_count(4)
        attaches = len(attached)
        tcp_proxy.disconnect_all()
        await eventually(lambda: len(attached) > attaches, what="re-attached after the drop")
        await _publish(broker_admin, settings, later := _bodies("later", 2))
        await sender.wait_for_count(6)
    assert sender.job_ids() == _ids(before + after + later)
    assert sender.resets == ["recreated"]
    assert len(read_before_reconnect) == 1
    assert attached[-1] == str(read_before_reconnect[0])  # the last entry read, not "first" again


async def _recreate_past_the_last_read_while_away(
    settings: Settings, tcp_proxy: TcpProxy, sender: RecordingLog, broker_admin: BrokerAdmin
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An instance reads two entries; while its link is down an operator recreates the log and
    producers fill it past the offset read last; the link comes back and everything is awaited.
    The bodies published before and after."""
    async with running(settings, sender, first_delivery_timeout_seconds=30.0) as consumer:
        await _publish(broker_admin, settings, before := _bodies("before", 2))
        await sender.wait_for_count(2)
        last_read = sender.records[-1].offset
        tcp_proxy.refuse(True)
        tcp_proxy.disconnect_all()
        await eventually(lambda: not consumer.is_connected, what="link down")
        # An operator recreates the log meanwhile, and producers fill it past that offset.
        await broker_admin.delete(queues=[settings.stream_name])
        channel = await broker_admin.channel()
        topology = Topology.from_settings(settings)
        stream = await channel.declare_queue(
            settings.stream_name, durable=True, arguments=topology.stream_arguments()
        )
        for exchange in topology.event_exchanges:
            await stream.bind(exchange, routing_key="#")
        await _publish(broker_admin, settings, after := _bodies("after", last_read + 3))
        tcp_proxy.refuse(False)
        await sender.wait_for_count(len(before) + len(after), timeout=20)
    return before, after


async def test_a_stream_recreated_and_grown_past_the_last_offset_read_is_read_from_its_start(
    broker_settings_factory: SettingsFactory,
    tcp_proxy: TcpProxy,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
) -> None:
    """The new stream already holds the offset this instance read last: only its check tells."""
    before, after = await _recreate_past_the_last_read_while_away(
        broker_settings_factory(rabbitmq_url=tcp_proxy.url), tcp_proxy, sender, broker_admin
    )
    assert sender.job_ids() == _ids(before + after)  # nothing of the new stream skipped
    assert sender.resets == ["recreated"]
    assert sender.records[0].offset == 0


async def test_a_recreated_stream_seen_before_the_attach_returned_its_tag_is_still_read_from_its_start(
    broker_settings_factory: SettingsFactory,
    tcp_proxy: TcpProxy,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The re-attach after the reconnect delivers the new stream's entry at the old offset before
    ``basic.consume`` has returned (seen on a slow box in CI): the worker starts the log afresh while
    that attach is still in flight. The attach must not then stand as the consumer of the new start:
    its deliveries belong to an attachment given up on, so nothing was read any more."""
    from consumers import attach
    from consumers.amqp import consume

    async def slow_consume_ok(*args: Any, **kwargs: Any) -> str:
        tag = await consume(*args, **kwargs)
        if isinstance(kwargs["arguments"]["x-stream-offset"], int):  # the re-attach at the last read
            await asyncio.sleep(0.5)  # its first deliveries are handled before the caller learns the tag
        return tag

    monkeypatch.setattr(attach, "consume", slow_consume_ok)
    before, after = await _recreate_past_the_last_read_while_away(
        broker_settings_factory(rabbitmq_url=tcp_proxy.url), tcp_proxy, sender, broker_admin
    )
    assert sender.job_ids() == _ids(before + after)
    assert sender.resets == ["recreated"]


async def test_a_restart_after_the_stream_was_recreated_while_away_catches_up(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    async with running(broker_settings, before := RecordingLog()):
        await _publish(broker_admin, broker_settings, _bodies("old", 5))
        await before.wait_for_count(5)
    # Its saved position names offset ~5 of a stream that no longer exists.
    await broker_admin.delete(queues=[broker_settings.stream_name])
    async with running(broker_settings, sender, wait=False) as consumer:
        await asyncio.wait_for(consumer.wait_caught_up(), timeout=10)
        await _publish(broker_admin, broker_settings, new := _bodies("new", 2))
        await sender.wait_for_count(2)
    assert sender.job_ids() == _ids(new)
    assert sender.records[0].offset == 0


async def test_retention_gap_while_disconnected_resets_the_history(
    broker_settings_factory: SettingsFactory,
    tcp_proxy: TcpProxy,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
) -> None:
    # Tiny retention: 1 MB in segments of 100 kB; 2 MB published while the link is down.
    settings = broker_settings_factory(
        rabbitmq_url=tcp_proxy.url, stream_max_bytes=1_000_000, stream_segment_bytes=100_000
    )
    gaps_before = metric("realtime_log_resets_total", reason="gap")
    async with running(settings, sender) as consumer:
        await _publish(broker_admin, settings, before := _bodies("before", 3))
        await sender.wait_for_count(3)
        last_read = sender.records[-1].offset
        tcp_proxy.refuse(True)
        tcp_proxy.disconnect_all()
        await eventually(lambda: not consumer.is_connected, what="link down")
        filler = b"x" * 50_000
        for _ in range(40):  # markers of nobody: recorded if still there, never dead-lettered
            await broker_admin.publish(
                settings.recommendations_exchange,
                filler,
                content_type=None,
                headers={MARKER_HEADER: "filler"},
            )
        first_retained = await broker_admin.first_offset(settings.stream_name)
        assert first_retained > last_read + 1 + GAP_TOLERANCE, "retention did not drop the old segments"
        await _publish(broker_admin, settings, after := _bodies("after", 3))
        tcp_proxy.refuse(False)
        await sender.wait_for_count(6, timeout=20)
    assert sender.job_ids() == _ids(before + after)
    assert sender.resets == ["gap"]
    assert sender.records[0].offset >= first_retained  # the history restarts at the first retained
    assert metric("realtime_log_resets_total", reason="gap") == gaps_before + 1


async def test_every_entry_is_recorded_with_when_it_was_written(
    broker_settings: Settings, broker_admin: BrokerAdmin, sender: RecordingLog
) -> None:
    """The history ages entries by their write time. A marker or a dead letter recorded with the time
    it was *read* — during a restart's prefill, up to a window after it was written — held back the
    eviction of every entry behind it: the soak's instances kept ~11,000 entries for a 6,000-entry
    window after a restart."""
    written = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with running(broker_settings, sender):
        await broker_admin.publish(broker_settings.recommendations_exchange, b"not json", timestamp=written)
        await _publish(broker_admin, broker_settings, _bodies("after", 1))
        await sender.wait_for_count(1)
    marker, dead_letter, event = sender.records[-3:]
    assert marker.target is None
    assert marker.published_at is not None  # the consumer stamps its own markers
    assert dead_letter.target is None
    assert dead_letter.published_at == written.timestamp()
    assert event.published_at is not None
