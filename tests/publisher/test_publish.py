"""The producer API and ``python -m publisher``: validated, persistent, confirmed, and received.

What is published is read back through a real ``EventConsumer`` on the stream.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aio_pika import DeliveryMode

from broker.errors import PublishError, UnroutableError
from config.settings import Settings
from consumers.dead_letter import REASON_HEADER
from publisher import EventPublisher, job_assigned, recommendation_ready
from tests.consumers.conftest import RecordingLog, running
from tests.support.broker import BrokerAdmin, header_text

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]


async def _cli(settings: Settings, *args: str, stdin: bytes | None = None) -> tuple[int, list[Any], str]:
    env = {
        **os.environ,
        "RABBITMQ_URL": settings.amqp_url,
        "RECOMMENDATIONS_EXCHANGE": settings.recommendations_exchange,
        "ASSIGNMENTS_EXCHANGE": settings.assignments_exchange,
        "CONFIG_FILE": os.devnull,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "publisher",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    lines = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    return process.returncode or 0, lines, err.decode()


async def test_cli_round_trip_for_both_events(broker_settings: Settings, sender: RecordingLog) -> None:
    contractor = str(uuid.uuid4())
    job = str(uuid.uuid4())
    async with running(broker_settings, sender):
        code, ready, err = await _cli(
            broker_settings,
            "recommendation-ready",
            "--region",
            "north-america",
            "--job-id",
            job,
            "--count",
            "2",
        )
        assert code == 0, err
        code, assigned, err = await _cli(
            broker_settings,
            "--count",
            "1",
            "job-assigned",
            "--region",
            "emea",
            "--contractor-id",
            contractor,
            "--source",
            "manual",
        )
        assert code == 0, err
        sent = await sender.wait_for_count(3)
    assert [line["body"] for line in ready + assigned] == [s.argument for s in sent]
    assert [s.argument["jobId"] for s in sent[:2]] == [job, job]
    assert sent[0].argument["requestId"] != sent[1].argument["requestId"]  # generated per message
    assert sent[2].groups == ("dispatch/emea", f"contractor/{contractor}")
    assert sent[2].argument["source"] == "manual"
    assert ready[0]["exchange"] == broker_settings.recommendations_exchange
    assert ready[0]["routingKey"] == "recommendation.ready.north-america"
    assert assigned[0]["routingKey"] == "job.assigned.emea"
    assert len({line["messageId"] for line in ready + assigned}) == 3


async def test_cli_refuses_an_invalid_event_and_publishes_nothing(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({**recommendation_ready(region="x"), "jobId": "nope"}))
    async with running(broker_settings, sender):
        code, lines, err = await _cli(broker_settings, "--json", str(bad))
        assert code == 1
        assert lines == []
        assert "jobId" in err
        code, lines, err = await _cli(broker_settings, "recommendation-ready", "--region", "not a slug")
        assert code == 1, err
        assert lines == []
        code, [published], err = await _cli(broker_settings, "recommendation-ready", "--region", "emea")
        assert code == 0, err
        await sender.wait_for_count(1)
    # The stream holds the consumer's start marker and the valid event, nothing in between.
    _marker, only = sender.records
    assert only.payload == published["body"]
    assert await broker_admin.depth(broker_settings.dead_letter_queue) == 0


async def test_cli_json_publishes_a_raw_body_even_an_invalid_one_on_request(
    broker_settings: Settings, sender: RecordingLog, broker_admin: BrokerAdmin, tmp_path: Path
) -> None:
    good = tmp_path / "good.json"
    body = job_assigned(region="apac", contractor_id=str(uuid.uuid4()))
    good.write_bytes(orjson.dumps(body))
    async with running(broker_settings, sender):
        code, lines, err = await _cli(broker_settings, "--json", str(good))
        assert code == 0, err
        assert lines[0]["exchange"] == broker_settings.assignments_exchange
        code, lines, err = await _cli(
            broker_settings,
            "--json",
            "-",
            "--no-validate",
            "--exchange",
            broker_settings.assignments_exchange,
            stdin=b'{"type": "Gibberish"}',
        )
        assert code == 0, err
        [dead] = await broker_admin.take(broker_settings.dead_letter_queue, 1)
        await sender.wait_for_count(1)
    assert sender.sent[0].argument == body
    assert header_text(dead.headers, REASON_HEADER) == "unknown_type"


async def test_publisher_sets_the_contract_properties(
    broker_settings: Settings, broker_admin: BrokerAdmin
) -> None:
    channel = await broker_admin.channel()
    async with EventPublisher.from_settings(broker_settings) as publisher:
        probe = await channel.declare_queue(exclusive=True)
        await probe.bind(broker_settings.recommendations_exchange, routing_key="#")
        published = await publisher.publish(recommendation_ready(region="north-america"), message_id="m-1")
    message = await probe.get(timeout=5)
    assert message.body == published.body
    assert message.content_type == "application/json"
    assert message.delivery_mode == DeliveryMode.PERSISTENT
    assert message.message_id == "m-1"
    assert message.timestamp is not None
    assert message.routing_key == "recommendation.ready.north-america"


async def test_publisher_validates_and_reports_unroutable(broker_settings: Settings) -> None:
    async with EventPublisher.from_settings(broker_settings) as publisher:
        with pytest.raises(PublishError, match="invalid event"):
            await publisher.publish({"type": "RecommendationReady"})
        with pytest.raises(PublishError, match="too_large"):
            await publisher.publish({**recommendation_ready(region="x"), "pad": "x" * 4096})
        # Exchanges exist (the publisher declares them) but the stream is not bound yet (no
        # instance has declared it).
        with pytest.raises(UnroutableError, match="no queue bound"):
            await publisher.publish(recommendation_ready(region="north-america"))


async def test_publisher_without_connection_or_broker(broker_settings: Settings) -> None:
    publisher = EventPublisher.from_settings(broker_settings)
    with pytest.raises(PublishError, match="not connected"):
        await publisher.publish(recommendation_ready(region="x"))
    unreachable = EventPublisher("amqp://guest:guest@127.0.0.1:1/", timeout_seconds=2)
    with pytest.raises(PublishError, match="cannot connect"):
        await unreachable.connect()


async def test_publisher_leaves_a_channel_whose_confirms_stopped_coming(
    broker_settings: Settings, broker_admin: BrokerAdmin
) -> None:
    """RabbitMQ 3.10.8 can stop confirming everything on one channel after a node restart, while a
    new channel publishes at once (see ``tests/consumers/test_broker_faults``): one publish times
    out with a clear error, and the next one goes out on a new channel."""
    channel = await broker_admin.channel()
    async with EventPublisher.from_settings(broker_settings, timeout_seconds=1.0) as publisher:
        probe = await channel.declare_queue(exclusive=True)
        await probe.bind(broker_settings.recommendations_exchange, routing_key="#")
        assert publisher._channel is not None
        underlay = await publisher._channel.get_underlay_channel()

        async def no_confirm(_frame: object) -> None:
            """The broker's confirms for this channel stop coming (the client drops them here)."""

        underlay._on_confirm_frame = no_confirm  # type: ignore[attr-defined]
        with pytest.raises(PublishError, match="not confirmed"):
            await publisher.publish(recommendation_ready(region="north-america"))
        published = await publisher.publish(recommendation_ready(region="north-america"))
    first, second = await probe.get(timeout=5), await probe.get(timeout=5)
    assert second.body == published.body  # the first was delivered too: a timeout is not a refusal
    assert first.body != second.body
