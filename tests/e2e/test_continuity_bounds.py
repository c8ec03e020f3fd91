"""The edges of the continuity promise, with a real broker, the real service and the official JS client:
what is not recovered is said so (``recovered: false``), clients that did not ask for positions see
exactly what they saw before, resuming is authorized like joining, and a broker restart loses nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from broker.errors import PublishError
from config.settings import Settings
from devkit.local_broker import PrivateBroker
from publisher import EventPublisher, job_assigned, recommendation_ready
from schemas.log import Position
from tests.support.broker import BrokerAdmin
from tests.support.jsclient import JsClientError, JsConnection, NodeDriver
from tests.support.server import RunningService, running_service
from tests.support.tokens import TokenFactory

pytestmark = [pytest.mark.node, pytest.mark.broker]

NA = "dispatch/north-america"
LISTEN = ("RecommendationReady", "JobAssigned")
SettingsFactory = Callable[..., Settings]
TRANSPORTS = [
    ("WebSockets", "json"),
    ("WebSockets", "messagepack"),
    ("ServerSentEvents", "json"),
    ("LongPolling", "json"),
    ("LongPolling", "messagepack"),
]


def _settings(make: SettingsFactory, tokens: TokenFactory, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "http_host": "127.0.0.1",
        "http_port": 0,
        "auth_dev_mode": False,
        "auth_jwks_url": tokens.jwks_url,
        "auth_issuer": tokens.issuer,
        "auth_audience": tokens.audience,
        "log_format": "console",
        **overrides,
    }
    return make(**values)


@pytest.fixture
async def service(
    broker_settings_factory: SettingsFactory, token_factory: TokenFactory, request: pytest.FixtureRequest
) -> AsyncIterator[RunningService]:
    overrides = getattr(request, "param", {})
    settings = _settings(broker_settings_factory, token_factory, **overrides)
    async with running_service(settings, consumer_factory=True) as running:
        consumer = running.runtime.consumer
        assert consumer is not None
        await asyncio.wait_for(consumer.wait_caught_up(), 20)
        yield running


@pytest.fixture
async def publisher(service: RunningService) -> AsyncIterator[EventPublisher]:
    async with EventPublisher.from_settings(service.settings) as publisher:
        yield publisher


async def _tracking(
    js: NodeDriver, service: RunningService, token: str, position: str | None, **options: Any
) -> tuple[JsConnection, dict[str, Any], list[dict[str, Any]]]:
    """A client with the Continuity pattern; its first Resume's result and the events replayed by it."""
    connection = await js.connect(
        f"{service.hub_url}?positions=true",
        token,
        listen=LISTEN,
        continuity={"groups": [NA], "position": position},
        **options,
    )
    replayed = []
    while (reported := await connection.next_event())["event"] != "resumed":
        if reported["event"] == "message":
            replayed.append(reported)
    return connection, reported["result"], replayed


async def _read_up_to(service: RunningService, watcher: JsConnection, publisher: EventPublisher) -> None:
    """Until the instance has read everything published so far: a last event, awaited where it lands."""
    marker = recommendation_ready(region="europe")
    await publisher.publish(marker)
    while (await watcher.next_message())["args"][0]["jobId"] != marker["jobId"]:
        pass


async def _last_position(connection: JsConnection, job_id: str) -> str:
    while True:
        message = await connection.next_message()
        event, position = message["args"]
        if event["jobId"] == job_id:
            return str(position)


BOUNDS = {"history_max_entries": 100, "replay_max_events": 5, "resume_wait_seconds": 0.5}


@pytest.mark.parametrize("service", [BOUNDS], indirect=True)
async def test_past_the_replay_cap_or_the_window_nothing_is_replayed_and_the_client_is_told(
    service: RunningService, publisher: EventPublisher, js: NodeDriver, token_factory: TokenFactory
) -> None:
    token = token_factory.dispatcher()
    watcher = await js.connect(service.hub_url, token_factory.dispatcher(regions=("europe",)), listen=LISTEN)
    await watcher.invoke("JoinDispatchGroup", "europe")
    first, result, _ = await _tracking(js, service, token, None)
    assert (result["recovered"], result["reason"]) == (False, "fresh")
    seen = recommendation_ready(region="north-america")
    await publisher.publish(seen)
    position = await _last_position(first, seen["jobId"])
    await first.stop()

    for _ in range(6):  # one more than the replay cap, all in the client's group
        await publisher.publish(recommendation_ready(region="north-america"))
    await _read_up_to(service, watcher, publisher)
    capped, result, replayed = await _tracking(js, service, token, position)
    assert (result["recovered"], result["reason"], result["replayed"], replayed) == (False, "cap", 0, [])
    assert Position.parse(result["position"]).offset > Position.parse(position).offset
    await capped.stop()

    for _ in range(120):  # more entries than the history keeps (HISTORY_MAX_ENTRIES=100), elsewhere
        await publisher.publish(recommendation_ready(region="europe"))
    await _read_up_to(service, watcher, publisher)
    _, result, replayed = await _tracking(js, service, token, position)
    assert (result["recovered"], result["reason"], result["replayed"], replayed) == (False, "window", 0, [])


@pytest.mark.parametrize(
    "service", [{"resume_wait_seconds": 0.5, "stream_attach_timeout_seconds": 1.0}], indirect=True
)
async def test_a_position_from_a_deleted_and_recreated_stream_is_not_recovered(
    service: RunningService,
    publisher: EventPublisher,
    js: NodeDriver,
    token_factory: TokenFactory,
    broker_admin: BrokerAdmin,
) -> None:
    token = token_factory.dispatcher()
    connection, _, _ = await _tracking(js, service, token, None, automaticReconnect=[0, 200, 500, 1000, 1000])
    before = [recommendation_ready(region="north-america") for _ in range(3)]
    for event in before:
        await publisher.publish(event)
    old_position = await _last_position(connection, before[-1]["jobId"])

    await broker_admin.delete(queues=[service.settings.stream_name])  # an operator recreates the log
    # The instance notices (the stream cancels its consumer, the re-attach finds nothing there), forgets
    # its history and closes clients that track positions; they come back and resume.
    await connection.next_event("reconnecting", timeout=30)
    resumed = await connection.next_event("resumed", timeout=30)
    assert resumed["result"]["recovered"] is False
    assert resumed["result"]["reason"] in ("epoch", "ahead", "window", "empty")
    after = recommendation_ready(region="north-america")
    await publisher.publish(after)
    event, new_position = (await connection.next_message(timeout=20))["args"]
    assert event["jobId"] == after["jobId"]
    assert Position.parse(new_position).offset < Position.parse(old_position).offset  # a new epoch


@pytest.mark.parametrize(("transport", "protocol"), TRANSPORTS)
async def test_clients_without_positions_get_exactly_the_event_as_before(
    service: RunningService,
    publisher: EventPublisher,
    js: NodeDriver,
    token_factory: TokenFactory,
    transport: str,
    protocol: str,
) -> None:
    token = token_factory.dispatcher()
    plain = await js.connect(service.hub_url, token, transport=transport, protocol=protocol, listen=LISTEN)
    await plain.invoke("JoinDispatchGroup", "north-america")
    tracking = await js.connect(
        f"{service.hub_url}?positions=true", token, transport=transport, protocol=protocol, listen=LISTEN
    )
    await tracking.invoke("JoinDispatchGroup", "north-america")
    contractor = str(uuid.uuid4())
    events = [
        recommendation_ready(region="north-america"),
        job_assigned(region="north-america", contractor_id=contractor),
    ]
    for event in events:
        await publisher.publish(event)
    for event in events:
        assert (await plain.next_message())["args"] == [event]  # one argument, byte-identical to before
        args = (await tracking.next_message())["args"]
        assert args[0] == event
        assert isinstance(Position.parse(args[1]), Position)


async def test_resume_is_authorized_like_the_joins(
    service: RunningService, js: NodeDriver, token_factory: TokenFactory
) -> None:
    own, other = str(uuid.uuid4()), str(uuid.uuid4())
    connection = await js.connect(
        f"{service.hub_url}?positions=true", token_factory.contractor(own), listen=LISTEN
    )
    for groups in ([f"contractor/{other}"], [NA], [f"contractor/{own}", NA]):
        with pytest.raises(JsClientError, match="Not authorized"):
            await connection.invoke("Resume", groups, None)
    result = await connection.invoke("Resume", [f"contractor/{own.upper()}"], None)
    assert (result["recovered"], result["reason"]) == (False, "fresh")
    assert service.runtime.lifetime.groups_of(connection.connection_id or "") == {f"contractor/{own}"}


@pytest.mark.slow
async def test_a_broker_restart_mid_stream_loses_nothing_for_clients_with_positions(
    private_broker: PrivateBroker,
    private_broker_settings: SettingsFactory,
    token_factory: TokenFactory,
    js: NodeDriver,
) -> None:
    settings = _settings(
        private_broker_settings, token_factory, broker_reconnect_interval_seconds=0.3, resume_wait_seconds=2
    )
    async with running_service(settings, consumer_factory=True) as service:
        consumer = service.runtime.consumer
        assert consumer is not None
        await asyncio.wait_for(consumer.wait_caught_up(), 30)
        connection, _, _ = await _tracking(js, service, token_factory.dispatcher(), None)
        published: list[str] = []
        async with EventPublisher.from_settings(settings, timeout_seconds=5) as publisher:
            for index in range(60):
                if index == 20:
                    await asyncio.to_thread(private_broker.stop)  # mid-stream: a broker restart
                    await asyncio.to_thread(private_broker.start)
                event = recommendation_ready(region="north-america")
                await _publish_until_confirmed(publisher, event)
                published.append(event["jobId"])
        received: list[str] = []
        positions: list[int] = []
        while len(received) < len(published):
            event, position = (await connection.next_message(timeout=60))["args"]
            received.append(event["jobId"])
            positions.append(Position.parse(position).offset)
    assert received == published  # every confirmed event, once, in order
    assert positions == sorted(set(positions))


async def _publish_until_confirmed(publisher: EventPublisher, event: dict[str, Any]) -> None:
    """Retry a publish the broker did not confirm, with the same message id (a producer's retry)."""
    for _ in range(60):
        try:
            await publisher.publish(event, message_id=event["jobId"])
            return
        except PublishError:
            await asyncio.sleep(0.5)  # the broker is restarting: try again shortly
    pytest.fail("the broker did not come back")
