"""Valid events reach exactly their groups, with the payload as published, in order, once."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
import pytest
from aio_pika.message import IncomingMessage
from aiormq.abc import DeliveredMessage

from broker import Topology
from config.settings import Settings
from consumers import EventConsumer
from consumers.consumer import POSITION_SAVE_INTERVAL
from consumers.settle import Settler
from consumers.worker import HOLD_MAX_ENTRIES
from publisher import EventPublisher, job_assigned, recommendation_ready
from tests.consumers.conftest import RecordingLog, metric, running
from tests.support.broker import BrokerAdmin
from tests.support.broker_fixtures import SettingsFactory

pytestmark = pytest.mark.broker


async def test_recommendation_ready_goes_to_its_region_only(
    broker_settings: Settings, sender: RecordingLog
) -> None:
    body = recommendation_ready(region="North-America")
    consumed_before = metric("realtime_events_consumed_total", type="RecommendationReady")
    delivered_before = metric("realtime_events_delivered_total", type="RecommendationReady")
    async with running(broker_settings, sender), EventPublisher.from_settings(broker_settings) as publisher:
        await publisher.publish(body)
        [sent] = await sender.wait_for_count(1)
    assert sent.groups == ("dispatch/north-america",)
    assert sent.target == "RecommendationReady"
    assert sent.argument == body
    assert metric("realtime_events_consumed_total", type="RecommendationReady") == consumed_before + 1
    assert metric("realtime_events_delivered_total", type="RecommendationReady") == delivered_before + 1


async def test_job_assigned_goes_to_region_and_contractor(
    broker_settings: Settings, sender: RecordingLog
) -> None:
    contractor = uuid.uuid4()
    body = job_assigned(region="emea", contractor_id=str(contractor).upper(), source="manual")
    async with running(broker_settings, sender), EventPublisher.from_settings(broker_settings) as publisher:
        await publisher.publish(body)
        [sent] = await sender.wait_for_count(1)
    assert sent.groups == ("dispatch/emea", f"contractor/{contractor}")
    assert sent.target == "JobAssigned"
    # Values exactly as published: the upper-case UUID stays upper-case in the payload.
    assert sent.argument == body
    assert sent.argument["contractorId"] == str(contractor).upper()


async def test_unknown_fields_are_dropped_and_values_kept_verbatim(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    body = recommendation_ready(
        region="apac",
        generatedAt="2025-03-01T08:15:00.1234567+05:30",
        jobId="6F9619FF-8B86-D011-B42D-00C04FC964FF",
    )
    published = {**body, "futureField": {"nested": [1, 2]}, "priority": "high"}
    async with running(broker_settings, sender):
        await broker_admin.publish(broker_settings.recommendations_exchange, orjson.dumps(published))
        [sent] = await sender.wait_for_count(1)
    assert sent.argument == body
    assert "futureField" not in sent.argument
    assert sent.argument["generatedAt"] == "2025-03-01T08:15:00.1234567+05:30"
    assert sent.argument["jobId"] == "6F9619FF-8B86-D011-B42D-00C04FC964FF"


async def test_routing_keys_are_advisory(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    # Bound with '#': any routing key reaches the stream; the body's type decides the route.
    body = job_assigned(region="latam", contractor_id=str(uuid.uuid4()))
    async with running(broker_settings, sender):
        await broker_admin.publish(
            broker_settings.assignments_exchange, orjson.dumps(body), routing_key="x.y.z"
        )
        await broker_admin.publish(
            broker_settings.recommendations_exchange, orjson.dumps(body), routing_key=""
        )
        sent = await sender.wait_for_count(2)
    assert [s.target for s in sent] == ["JobAssigned", "JobAssigned"]


async def test_order_is_preserved(broker_settings: Settings, sender: RecordingLog) -> None:
    contractor = str(uuid.uuid4())
    bodies = [
        recommendation_ready(region="north-america")
        if i % 3
        else job_assigned(region="emea", contractor_id=contractor)
        for i in range(120)
    ]
    settings = broker_settings.model_copy(update={"prefetch_count": 50})
    async with running(settings, sender), EventPublisher.from_settings(settings) as publisher:
        for body in bodies:
            await publisher.publish(body)
        await sender.wait_for_count(len(bodies))
    assert sender.job_ids() == [body["jobId"] for body in bodies]


async def test_queue_type_quorum_applies_to_the_dead_letter_and_position_queues(
    broker_settings_factory: SettingsFactory, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    settings = broker_settings_factory(queue_type="quorum")
    body = recommendation_ready(region="north-america")
    async with running(settings, sender):
        await broker_admin.publish(settings.recommendations_exchange, b"not json")
        await broker_admin.publish(settings.recommendations_exchange, orjson.dumps(body))
        await sender.wait_for_count(1)
        [dead] = await broker_admin.take(settings.dead_letter_queue, 1)
    assert sender.sent[0].argument == body
    assert dead.body == b"not json"
    topology = Topology.from_settings(settings)
    channel = await broker_admin.channel()
    # Equivalent re-declarations succeed: the broker compares x-queue-type, so these are the quorum
    # queues we asked for (a classic one would answer PRECONDITION_FAILED).
    for name, arguments in (
        (topology.dead_letter_queue, topology.dead_letter_queue_arguments()),
        (topology.position_queue, topology.position_queue_arguments()),
    ):
        assert arguments["x-queue-type"] == "quorum"
        declared = await channel.declare_queue(name, durable=True, arguments=arguments)
        assert declared.name == name
    # The stream is a stream whatever QUEUE_TYPE says.
    declared = await channel.declare_queue(
        topology.stream, durable=True, arguments=topology.stream_arguments()
    )
    assert declared.name == settings.stream_name


async def test_prefetch_bounds_what_is_held_unacknowledged(
    broker_settings_factory: SettingsFactory, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    settings = broker_settings_factory(prefetch_count=4)
    await _declare_then_leave(settings)
    bodies = [recommendation_ready(region="north-america") for _ in range(40)]
    for body in bodies:
        await broker_admin.publish(settings.recommendations_exchange, orjson.dumps(body))
    held: list[int] = []
    consumer_box: list[EventConsumer] = []
    # Each hand-off looks at the inbox: the in-flight message plus those waiting never exceed prefetch.
    sender.hook = lambda _sent, _call: held.append(1 + len(consumer_box[0]._inbox))
    async with running(settings, sender, wait=False) as consumer:
        consumer_box.append(consumer)
        await sender.wait_for_count(len(bodies))
    assert max(held) <= 4
    assert max(held) > 1  # prefetch was actually used


async def _declare_then_leave(settings: Settings) -> None:
    """Run the instance once: the stream exists, and a restart delivers what was published meanwhile."""
    async with running(settings, RecordingLog()):
        pass


async def test_logs_carry_ids_but_never_the_body(
    broker_settings: Settings,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "body-secret-7f3a"
    valid = recommendation_ready(region="north-america")
    invalid = {**recommendation_ready(region="north-america"), "jobId": secret, "note": secret}
    async with running(broker_settings, sender):
        await broker_admin.publish(
            broker_settings.recommendations_exchange, orjson.dumps(invalid), message_id="m-bad"
        )
        await broker_admin.publish(
            broker_settings.recommendations_exchange, orjson.dumps(valid), message_id="m-good"
        )
        await sender.wait_for_count(1)
        await broker_admin.take(broker_settings.dead_letter_queue, 1)
    assert secret not in caplog.text
    assert "m-bad" in caplog.text
    assert valid["jobId"] in caplog.text
    assert valid["requestId"] in caplog.text


@pytest.mark.parametrize("per_event", [True, False])
async def test_one_line_per_delivered_event_only_when_asked(
    broker_settings_factory: SettingsFactory,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
    caplog: pytest.LogCaptureFixture,
    per_event: bool,
) -> None:
    """LOG_EVENT_DELIVERIES=false keeps INFO's lifecycle lines without one line per event (the only
    way to lose that line was LOG_LEVEL=WARNING, which loses the rest too)."""
    settings = broker_settings_factory(log_event_deliveries=per_event)
    event = recommendation_ready(region="north-america")
    with caplog.at_level(logging.INFO):
        async with running(settings, sender):
            await broker_admin.publish(settings.recommendations_exchange, orjson.dumps(event))
            await sender.wait_for_count(1)
    assert ("event.delivered" in caplog.text) is per_event
    assert "consumer.caught_up" in caplog.text  # INFO lines go on either way


async def test_a_steady_trickle_is_credited_in_bulk_not_once_per_entry(
    broker_settings_factory: SettingsFactory, sender: RecordingLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ack per entry cost a frame and a write to the broker per event (issue 12); a stream keeps
    its entries, so credit goes back every half window or about once a second."""
    settings = broker_settings_factory(prefetch_count=100)
    credits: list[object] = []
    original = Settler.credit

    async def counting(self: Settler, message: DeliveredMessage) -> None:
        credits.append(message)
        await original(self, message)

    monkeypatch.setattr(Settler, "credit", counting)
    async with running(settings, sender), EventPublisher.from_settings(settings) as publisher:
        started = time.monotonic()
        credits.clear()
        for count in range(1, 21):  # one at a time: every entry arrives alone
            await publisher.publish(recommendation_ready(region="north-america"))
            await sender.wait_for_count(count)
        elapsed = time.monotonic() - started
    assert len(credits) <= 2 + elapsed / POSITION_SAVE_INTERVAL < 20


async def test_a_delivered_event_costs_no_aio_pika_message_and_no_second_task(
    broker_settings: Settings,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aio-pika's ``Queue.consume`` wrapped every delivery in an ``IncomingMessage`` and ran the
    callback in a task of its own: 77 instead of 52 µs of CPU per delivery (issue 12). The stream
    consumer takes aiormq's message as parsed; only a dead letter builds aio-pika's."""
    built: list[object] = []
    original_init = IncomingMessage.__init__

    def counting_init(self: IncomingMessage, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(IncomingMessage, "__init__", counting_init)
    exchange = broker_settings.recommendations_exchange
    async with running(broker_settings, sender):
        for count in range(1, 6):
            await broker_admin.publish(exchange, orjson.dumps(recommendation_ready(region="north-america")))
            await sender.wait_for_count(count)
        assert built == []  # nor for the start's marker
        await broker_admin.publish(exchange, b"{not json", routing_key="rk.bad")
        [dead] = await broker_admin.take(broker_settings.dead_letter_queue, 1)
    assert dead.body == b"{not json"  # a dead letter still copies every property (test_dead_letter)


async def test_a_small_window_never_runs_dry_between_credits(
    broker_settings_factory: SettingsFactory, sender: RecordingLog
) -> None:
    settings = broker_settings_factory(prefetch_count=3)  # credit every entry past half of 3
    async with running(settings, sender), EventPublisher.from_settings(settings) as publisher:
        for count in range(1, 13):
            await publisher.publish(recommendation_ready(region="north-america"))
            await sender.wait_for_count(count)


class _CountingWrites:
    """The write batch as the worker sees it: counts what it was told."""

    def __init__(self) -> None:
        self.held = False
        self.flushes = 0

    def hold(self) -> None:
        self.held = True

    def flush(self) -> None:
        self.flushes += 1

    def release(self) -> None:
        self.held = False
        self.flushes += 1


async def test_a_deep_backlog_holds_the_writes_of_a_bounded_number_of_entries(
    broker_settings_factory: SettingsFactory, sender: RecordingLog, broker_admin: BrokerAdmin
) -> None:
    """Holding writes under a backlog is bounded by entries (HOLD_MAX_ENTRIES), not by the credit
    cadence of a large prefetch window (500 entries at 1,000): the first of them would wait."""
    settings = broker_settings_factory(prefetch_count=1000)
    await _declare_then_leave(settings)
    for _ in range(300):
        body = recommendation_ready(region="north-america")
        await broker_admin.publish(settings.recommendations_exchange, orjson.dumps(body))
    writes = _CountingWrites()
    since_flush: list[int] = []
    last = {"flushes": 0, "count": 0}

    def observe(_sent: object, _call: int) -> None:
        if writes.flushes != last["flushes"]:
            last["flushes"], last["count"] = writes.flushes, 0
        last["count"] += 1
        if writes.held:
            since_flush.append(last["count"])

    sender.hook = observe
    async with running(settings, sender, writes=writes):
        await sender.wait_for_count(300)
    assert since_flush, "the backlog was drained while holding"
    assert max(since_flush) <= HOLD_MAX_ENTRIES
