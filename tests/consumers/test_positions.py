"""Every stream entry is recorded at its offset; events carry "offset:check"; retries are delivered once.

The stream is the shared log: whatever an instance records must be the broker's own offsets and
entries (checked here by reading the stream directly), so that a position handed to a client names
the same entry on every instance.
"""

from __future__ import annotations

import orjson
import pytest

from config.settings import Settings
from consumers.handling import MARKER_HEADER
from publisher import EventPublisher, recommendation_ready
from schemas.log import entry_check
from tests.consumers.conftest import RecordingLog, metric, running
from tests.support.broker import BrokerAdmin

pytestmark = pytest.mark.broker


async def test_every_entry_is_recorded_at_its_stream_offset_and_events_carry_their_position(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    exchange = broker_settings.recommendations_exchange
    first, second = recommendation_ready(region="emea"), recommendation_ready(region="emea")
    async with running(broker_settings, sender):
        await broker_admin.publish(exchange, orjson.dumps(first), message_id="m-first", routing_key="a")
        await broker_admin.publish(exchange, b"{nope", message_id="m-bad", routing_key="b")
        await broker_admin.publish(exchange, orjson.dumps(first), message_id="m-first", routing_key="c")
        await broker_admin.publish(exchange, orjson.dumps(second), message_id="m-second", routing_key="d")
        await sender.wait_for_count(2)
        await broker_admin.take(broker_settings.dead_letter_queue, 1)
        entries = await broker_admin.read_stream(broker_settings.stream_name, 5)
    records = sender.records
    # The broker's entries, in its order, at its offsets: our marker, then the four publishes.
    assert [record.offset for record in records] == [offset for offset, _ in entries]
    assert [record.offset for record in records] == sorted({record.offset for record in records})
    for record, (_, message) in zip(records, entries, strict=True):
        assert record.check == entry_check(
            message.body,
            message_id=message.message_id,
            exchange=message.exchange or "",
            routing_key=message.routing_key or "",
        )
    marker, event, invalid, duplicate, later = records
    assert (entries[0][1].headers or {}).get(MARKER_HEADER)
    assert [marker.target, invalid.target, duplicate.target] == [None, None, None]  # recorded, not events
    assert [event.target, later.target] == ["RecommendationReady", "RecommendationReady"]
    assert [event.payload, later.payload] == [first, second]
    assert [sent.position for sent in sender.sent] == [
        f"{event.offset}:{event.check}",
        f"{later.offset}:{later.check}",
    ]
    assert sender.delivered == [event, later]


async def test_a_publisher_retry_is_recorded_but_delivered_once(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    exchange = broker_settings.recommendations_exchange
    with_id, without_id, other = (recommendation_ready(region="emea") for _ in range(3))
    duplicates_before = metric("realtime_events_duplicate_total")
    async with running(broker_settings, sender), EventPublisher.from_settings(broker_settings) as publisher:
        # A lost confirm makes a producer publish again: same message_id (here even another routing key).
        await publisher.publish(with_id, message_id="retry-1")
        await publisher.publish(with_id, message_id="retry-1", routing_key="elsewhere")
        # A producer that sets no message_id: the body is the key.
        await broker_admin.publish_without_message_id(exchange, orjson.dumps(without_id))
        await broker_admin.publish_without_message_id(exchange, orjson.dumps(without_id))
        await broker_admin.publish_without_message_id(exchange, orjson.dumps(other))
        await sender.wait_for_count(3)
        entries = await broker_admin.read_stream(broker_settings.stream_name, 6)
    assert sender.job_ids() == [with_id["jobId"], without_id["jobId"], other["jobId"]]
    assert [message.message_id for _, message in entries[3:]] == [None, None, None]
    _marker, first, retry, bare, bare_again, _other = sender.records
    assert (first.target, retry.target) == ("RecommendationReady", None)
    assert (bare.target, bare_again.target) == ("RecommendationReady", None)
    assert retry.offset > first.offset
    assert bare_again.check == bare.check  # the same entry published twice: same check, another offset
    assert bare_again.offset > bare.offset
    assert metric("realtime_events_duplicate_total") == duplicates_before + 2
    assert await broker_admin.depth(broker_settings.dead_letter_queue) == 0
