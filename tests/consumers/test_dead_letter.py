"""Every invalid message lands in the dead-letter queue with its reason, and never blocks the next one.

Bad JSON / not UTF-8 / empty, schema violations, oversized, and a hub that
keeps failing — each is dead-lettered once, with headers saying why, and the valid message
published right behind it is still delivered. The stream keeps the original (a stream cannot
reject), so a dead letter that cannot be published is counted and the consumer goes on.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from config.settings import Settings
from consumers.dead_letter import (
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    INSTANCE_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    REDELIVERED_HEADER,
)
from publisher import job_assigned, recommendation_ready
from schemas.log import LogRecord
from tests.consumers.conftest import RecordingLog, Sent, metric, running
from tests.support.broker import BrokerAdmin, header_text

pytestmark = pytest.mark.broker

CONTRACTOR = str(uuid.uuid4())


def _ready(**fields: Any) -> bytes:
    return orjson.dumps({**recommendation_ready(region="north-america"), **fields})


def _assigned(**fields: Any) -> bytes:
    return orjson.dumps({**job_assigned(region="north-america", contractor_id=CONTRACTOR), **fields})


def _without(body: dict[str, Any], field: str) -> bytes:
    return orjson.dumps({key: value for key, value in body.items() if key != field})


# (id, body, content_type, expected reason, text expected in the error header)
INVALID = [
    ("bad-json", b'{"type": "RecommendationReady", ', "application/json", "not_json", "not JSON"),
    ("not-utf8", b'{"type": "\xff\xfe"}', "application/json", "not_utf8", "UTF-8"),
    ("empty", b"", "application/json", "empty", "empty"),
    ("json-array", b"[1, 2, 3]", "application/json", "not_object", "list"),
    ("wrong-type-int", _ready(configVersion="7"), "application/json", "schema", "configVersion"),
    ("wrong-type-region", _ready(region=42), "application/json", "schema", "region"),
    ("bool-as-int", _ready(configVersion=True), "application/json", "schema", "configVersion"),
    ("bad-uuid", _ready(jobId="not-a-uuid"), "application/json", "schema", "jobId: must be a UUID"),
    ("bad-contractor-uuid", _assigned(contractorId="1234"), "application/json", "schema", "contractorId"),
    ("missing-field", _without(recommendation_ready(region="x"), "requestId"), None, "schema", "requestId"),
    ("missing-type", _without(recommendation_ready(region="x"), "type"), None, "schema", "type"),
    (
        "unknown-type",
        orjson.dumps({"type": "JobCancelled", "jobId": str(uuid.uuid4())}),
        None,
        "unknown_type",
        "JobCancelled",
    ),
    ("oversized", _ready(padding="x" * 3000), "application/json", "too_large", "limit is 2048"),
    ("wrong-content-type", _ready(), "text/plain", "content_type", "text/plain"),
    ("wrong-charset", _ready(), "application/json; charset=latin-1", "content_type", "charset"),
    (
        "end-before-start",
        _assigned(startUtc="2025-05-01T10:00:00Z", endUtc="2025-05-01T09:00:00Z"),
        None,
        "schema",
        "endUtc must be after startUtc",
    ),
    (
        "equal-start-end",
        _assigned(startUtc="2025-05-01T10:00:00Z", endUtc="2025-05-01T12:00:00+02:00"),
        None,
        "schema",
        "after",
    ),
    ("naive-timestamp", _ready(generatedAt="2025-05-01T10:00:00"), None, "schema", "generatedAt"),
    ("negative-config-version", _ready(configVersion=-1), None, "schema", "greater than or equal to 0"),
    ("bad-region-slug", _ready(region="north america"), None, "schema", "region: must be a slug"),
    ("empty-region", _ready(region=""), None, "schema", "region"),
    ("bad-source", _assigned(source="robot"), None, "schema", "source"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "reason", "error_text"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
async def test_invalid_message_is_dead_lettered_and_the_next_one_delivered(
    broker_settings: Settings,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
    body: bytes,
    content_type: str | None,
    reason: str,
    error_text: str,
) -> None:
    valid = recommendation_ready(region="north-america")
    dead_before = metric("realtime_events_dead_lettered_total", reason=reason)
    invalid_before = metric("realtime_events_consumed_total", type="invalid")
    exchange = broker_settings.recommendations_exchange
    async with running(broker_settings, sender):
        bad_id = await broker_admin.publish(exchange, body, content_type=content_type, routing_key="rk.bad")
        await broker_admin.publish(exchange, orjson.dumps(valid))
        [sent] = await sender.wait_for_count(1)
        [dead] = await broker_admin.take(broker_settings.dead_letter_queue, 1)
    assert sent.argument == valid  # the invalid one reached no client
    _marker, refused, delivered = sender.records
    assert refused.target is None  # recorded (it has a position) but not an event
    assert delivered.payload == valid
    assert dead.body == body
    assert dead.message_id == bad_id
    headers = dead.headers
    assert header_text(headers, REASON_HEADER) == reason
    assert error_text in header_text(headers, ERROR_HEADER)
    assert header_text(headers, INSTANCE_HEADER) == broker_settings.instance_id
    assert header_text(headers, QUEUE_HEADER) == broker_settings.stream_name
    assert header_text(headers, ORIGINAL_EXCHANGE_HEADER) == exchange
    assert header_text(headers, ORIGINAL_ROUTING_KEY_HEADER) == "rk.bad"
    assert headers[REDELIVERED_HEADER] is False  # a stream never redelivers
    assert header_text(headers, DEAD_LETTERED_AT_HEADER)
    assert "x-stream-offset" in headers  # where it is in the log
    assert metric("realtime_events_dead_lettered_total", reason=reason) == dead_before + 1
    assert metric("realtime_events_consumed_total", type="invalid") == invalid_before + 1
    assert await broker_admin.depth(broker_settings.dead_letter_queue) == 0


async def test_a_burst_of_poison_does_not_block_or_stop_the_consumer(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    exchange = broker_settings.assignments_exchange
    expected: list[str] = []
    async with running(broker_settings, sender) as consumer:
        for i, (_, body, content_type, _reason, _text) in enumerate(INVALID * 3):
            await broker_admin.publish(exchange, body, content_type=content_type)
            if i % 5 == 0:
                valid = job_assigned(region="emea", contractor_id=CONTRACTOR)
                expected.append(valid["jobId"])
                await broker_admin.publish(exchange, orjson.dumps(valid))
        await sender.wait_for_count(len(expected))
        dead = await broker_admin.take(broker_settings.dead_letter_queue, len(INVALID) * 3)
        assert consumer.is_consuming
    assert sender.job_ids() == expected
    assert len(dead) == len(INVALID) * 3


async def test_hub_failure_is_retried_then_dead_lettered_without_losing_the_next(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    poisoned = recommendation_ready(region="north-america")
    fine = recommendation_ready(region="north-america")

    def hook(sent: Sent, _call: int) -> None:
        if sent.argument["jobId"] == poisoned["jobId"]:
            raise RuntimeError("hub exploded")

    sender.hook = hook
    failures_before = metric("realtime_event_send_failures_total")
    async with running(broker_settings, sender, send_attempts=3):
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(poisoned))
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(fine))
        await sender.wait_for_count(1)
        [dead] = await broker_admin.take(broker_settings.dead_letter_queue, 1)
    assert sender.job_ids() == [fine["jobId"]]
    assert sender.calls == 4  # three attempts for the poisoned one, one for the next
    assert orjson.loads(dead.body) == poisoned
    assert header_text(dead.headers, REASON_HEADER) == "send_failed"
    assert metric("realtime_event_send_failures_total") == failures_before + 3


async def test_a_fault_of_ours_dead_letters_the_entry_and_the_next_is_delivered(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    """An exception of our own (classification, history) skipped the entry with a log line only: no
    client got it and nothing kept it to replay by hand once the fault is fixed."""
    poisoned = recommendation_ready(region="north-america")
    fine = recommendation_ready(region="north-america")

    def on_record(record: LogRecord) -> None:
        if isinstance(record.payload, dict) and record.payload.get("jobId") == poisoned["jobId"]:
            raise RuntimeError("a bug of ours")

    sender.on_record = on_record
    async with running(broker_settings, sender):
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(poisoned))
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(fine))
        await sender.wait_for_count(1)
        [dead] = await broker_admin.take(broker_settings.dead_letter_queue, 1)
    assert sender.job_ids() == [fine["jobId"]]
    assert orjson.loads(dead.body) == poisoned
    assert header_text(dead.headers, REASON_HEADER) == "internal_error"
    assert header_text(dead.headers, ERROR_HEADER) == "RuntimeError (logged as log.entry_failed)"


async def test_hub_failing_once_is_retried_in_place(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    bodies = [recommendation_ready(region="north-america") for _ in range(3)]

    def hook(_sent: Sent, call: int) -> None:
        if call == 2:
            raise RuntimeError("transient hub trouble")

    sender.hook = hook
    async with running(broker_settings, sender):
        for body in bodies:
            await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(body))
        await sender.wait_for_count(3)
    assert sender.job_ids() == [body["jobId"] for body in bodies]  # in order, each once
    assert await broker_admin.depth(broker_settings.dead_letter_queue) == 0


async def test_a_dead_letter_that_cannot_be_published_is_counted_and_the_consumer_goes_on(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    fine = recommendation_ready(region="north-america")
    failures_before = metric("realtime_dead_letter_failures_total")
    dead_before = metric("realtime_events_dead_lettered_total", reason="not_json")
    restarts_before = sum(
        metric("realtime_consumer_restarts_total", cause=cause)
        for cause in ("cancelled", "reconnected", "channel_closed", "watchdog", "recreated")
    )
    async with running(broker_settings, sender) as consumer:
        # A real broker fault: the dead-letter queue is gone, so the dead-letter exchange routes
        # nowhere and the mandatory, confirmed publish of the dead letter comes back unroutable.
        await broker_admin.delete(queues=[broker_settings.dead_letter_queue])
        await broker_admin.publish(broker_settings.recommendations_exchange, b"{nope")
        await broker_admin.publish(broker_settings.recommendations_exchange, b"{nope again")
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(fine))
        await sender.wait_for_count(1)
        assert consumer.is_consuming
    assert sender.job_ids() == [fine["jobId"]]
    assert metric("realtime_dead_letter_failures_total") == failures_before + 2
    assert metric("realtime_events_dead_lettered_total", reason="not_json") == dead_before
    # Nothing was rejected (a reject on a stream closes the connection): the link never broke.
    assert (
        sum(
            metric("realtime_consumer_restarts_total", cause=cause)
            for cause in ("cancelled", "reconnected", "channel_closed", "watchdog", "recreated")
        )
        == restarts_before
    )
    assert [record.target for record in sender.records[1:]] == [None, None, "RecommendationReady"]


async def test_a_restart_dead_letters_the_backlog_but_not_the_history_again(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    exchange = broker_settings.recommendations_exchange
    async with running(broker_settings, RecordingLog()):
        await broker_admin.publish(exchange, b"{seen live by the first run", message_id="bad-1")
        await broker_admin.take(broker_settings.dead_letter_queue, 1)
    await broker_admin.publish(exchange, b"{published while it was away", message_id="bad-2")
    fine = recommendation_ready(region="north-america")
    await broker_admin.publish(exchange, orjson.dumps(fine))
    async with running(broker_settings, sender):
        await sender.wait_for_count(1)
        [dead] = await broker_admin.take(broker_settings.dead_letter_queue, 1)
    assert dead.message_id == "bad-2"
    assert await broker_admin.depth(broker_settings.dead_letter_queue) == 0
    assert sender.job_ids() == [fine["jobId"]]
